"""Gradient disaggregation (Lam et al., ICML 2021): recover who took part in which round, then each user's update.

The cheapest exact method the observations allow runs first and every answer
is verified before it is accepted (binary, the user's window counts, inside
col(A)); only what is left goes on to the next, dearer method:

1. linear: when the window sums pin every column down (rank(B U) = rank(A)),
   P = U (B U)^+ C^T, one factorization for all users, and each column is
   proven unique by the linear algebra alone; with exact counts, a user whose
   counts lie outside col(B U) is proven `infeasible` (no column in col(A) has
   them: rounded or noised counts taken at face value) and searched no further;
2. projection search: batched Douglas-Rachford over all users at once, each
   candidate then moved by in-window exchanges while they bring it nearer col(A)
   (attacks/polish.py);
3. lattice (attacks/lattice.py, exact counts, few rounds): LLL of the lattice
   Z^T & col(A) and, per user left, of its counts' Kannan embedding: a 0/1 row
   is the user's column;
4. the joint stage (attacks/joint.py, exact mode): all users share one LP model,
   the per-round totals and every column already proven. Propagation (counts,
   totals minus proven columns) fixes rounds; warm-started LPs steered by the
   search's guesses, then branch and bound under a node limit, find columns; an
   LP certificate proves a column `unique`, and a second binary point makes the
   user `ambiguous`. Each proven column is peeled off the totals, which fixes
   more rounds for everyone left.
Work limits (simplex iterations, nodes), not the clock, decide every answer;
the clock (`time_limit` per solve, `budget` overall) is a safety net that the
report names when it bites. A `found` column fits everything observed but was
neither proven unique nor shown ambiguous within the work limits.
"""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from attacks.fit import relative_misfit
from attacks.geometry import Geometry, Subspace, column_space
from attacks.inputs import check_counts, check_observation
from attacks.settings import AttackSettings
from attacks.polish import swap_descent
from attacks.projection_search import NOISE_PROGRESS_CHECKS, projection_search
from benchmark.errors import BenchmarkError

if TYPE_CHECKING:
    from attacks.joint import JointOutcome

# Aggregates with at most this many entries are attacked with one BLAS thread (measured: the quickstart shape
# took 2.4x the wall time and twice the CPU with two threads on a busy 2-core machine).
SMALL_ENTRIES = 1_000_000
STATUSES = ("unique", "ambiguous", "found", "timeout", "infeasible", "unattributed")


@dataclass(frozen=True)
class Disaggregation:
    participants: np.ndarray  # (T, n) uint8
    updates: np.ndarray  # (n, d) float64
    status: tuple[str, ...]  # one of STATUSES per user
    seconds: np.ndarray  # (n,) seconds spent on each user
    residual: np.ndarray  # (n,) relative distance of each column to col(A)
    rank: int
    wall_seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    alternatives: np.ndarray | None = None  # (n,) distinct binary columns found per user (2 or more: ambiguous)
    events: dict[str, int] = field(default_factory=dict)  # how columns were proven, found or ruled out
    clock_limited: bool = False  # the clock safety net (time_limit or budget) stopped some work: answers may vary
    # (n,) equalities per free round of each user's LP after fixing by counts (Donoho-Tanner: above about 1/2
    # the LP polytope tends to be the single binary point, so the LP settles the user); inf when nothing is free
    equalities_per_free_round: np.ndarray | None = None
    relative_misfit: float = float("nan")  # ||A - P U|| / ||A||: how well the whole recovery explains the sums
    misses_totals: bool = False  # every user has a column, yet they do not add up to the per-round totals
    # the joint stage's propagation showed that no binary columns meet the counts and the totals together
    contradiction: bool = False
    # (T, n) uint8: the search's best rounded column for each user it searched, accepted or not (zeros elsewhere);
    # under noise the adaptive attack refines these rather than searching again
    candidates: np.ndarray | None = None
    # (n,) bool: whether the sums determine the user's update given the columns (its column is no combination of the
    # others': a user who never took part, or two who always took part together, are not); None: not computed
    identifiable: np.ndarray | None = None

    def report(self) -> dict:
        """A JSON-ready summary: totals, timings per step and one entry per user."""
        return {
            "users": len(self.status),
            "rounds": int(self.participants.shape[0]),
            "rank": self.rank,
            "wall_seconds": self.wall_seconds,
            "steps": self.steps,
            "totals": {status: self.status.count(status) for status in STATUSES},
            "unidentifiable_updates": int((~self.identifiable).sum()) if self.identifiable is not None else None,
            "events": self.events,
            "clock_limited": self.clock_limited,
            "relative_misfit": self.relative_misfit,
            "per_user": [
                {
                    "user": user, "status": status, "seconds": float(seconds), "residual": float(residual),
                    "alternatives": int(self.alternatives[user]) if self.alternatives is not None else 0,
                    "update_identifiable": bool(self.identifiable[user]) if self.identifiable is not None else None,
                    "equalities_per_free_round": (
                        float(self.equalities_per_free_round[user]) if self.equalities_per_free_round is not None else None
                    ),
                }
                for user, (status, seconds, residual) in enumerate(zip(self.status, self.seconds, self.residual))
            ],
        }


class _Progress:
    """Mutable per-user state while the stages run."""

    def __init__(self, n_rounds: int, n_users: int) -> None:
        self.columns = np.zeros((n_rounds, n_users))
        self.status = ["timeout"] * n_users
        self.seconds = np.zeros(n_users)
        self.residual = np.full(n_users, np.inf)
        self.steps: dict[str, float] = {}
        self.guess = np.zeros((n_rounds, n_users))  # the search's best rounded column, right or not
        self.events: dict[str, int] = {}  # stages before the joint one: how columns were found

    def open_users(self) -> np.ndarray:
        return np.array([u for u, s in enumerate(self.status) if s == "timeout"], dtype=np.int64)

    def accept(self, users: np.ndarray, columns: np.ndarray, residual: np.ndarray, status: str, ok: np.ndarray) -> None:
        self.columns[:, users[ok]] = columns[:, ok]
        self.residual[users] = np.minimum(self.residual[users], residual)
        self.residual[users[ok]] = residual[ok]
        for user in users[ok]:
            self.status[user] = status

    def charge(self, step: str, users: np.ndarray, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.steps[step] = self.steps.get(step, 0.0) + elapsed
        if len(users):
            self.seconds[users] += elapsed / len(users)


def _linear(geometry: Geometry, state: _Progress, settings: AttackSettings) -> None:
    started = time.perf_counter()
    users = np.arange(geometry.counts.shape[0])
    sums = geometry.window_basis
    if geometry.exact and np.linalg.matrix_rank(sums) == geometry.rank:
        counts = geometry.counts.T.astype(np.float64)
        coords = np.linalg.lstsq(sums, counts, rcond=None)[0]
        solvable = users
        if not settings.noise:  # with more windows than rank, counts outside col(B U) prove that no column fits
            misfit = np.linalg.norm(sums @ coords - counts, axis=0) / np.maximum(np.linalg.norm(counts, axis=0), 1.0)
            consistent = misfit <= settings.accepted_residual
            for user in users[~consistent]:
                state.status[user] = "infeasible"
            solvable = users[consistent]
        if len(solvable):
            scores = geometry.basis @ coords[:, solvable]
            columns, residual = _polished(geometry, geometry.round_to_counts(scores, solvable), settings)
            ok = residual <= settings.accepted_residual
            state.accept(solvable, columns, residual, "found" if settings.noise else "unique", ok)
    state.charge("linear", users, started)


# Work of swap descent under noise (attacks/polish.py: columns x T x rank per pass): the polish of a 100-user cell
# at 1200 rounds ends by itself long before (at most 70 passes, 8.4e8, in 12 noise-mode tasks of standard's
# 100-user cells; 1000 passes there are 1.2e10), while on the synthetic-1000 cell (1.2e10 a pass, 2.4 s on one
# core) under ldp-gaussian(z=1) it was still lowering residuals by 0.001 a pass after 60 passes (0.80 -> 0.76
# against the tolerance 0.35, no round nearer the true columns) and would have run on towards its 1000: this caps
# it at about 20 passes there.
NOISE_POLISH_WORK = 2.4e11


def _polished(geometry: Geometry, columns: np.ndarray, settings: AttackSettings) -> tuple[np.ndarray, np.ndarray]:
    """Candidate columns after in-window exchanges (attacks/polish.py), and their residuals. With exact sums a column
    that already fits is left alone (no exchange can improve it); under noise every one is polished, within
    NOISE_POLISH_WORK."""
    if settings.noise:
        columns = swap_descent(geometry, columns, work_limit=NOISE_POLISH_WORK)
        return columns, geometry.residual(columns)
    residual = geometry.residual(columns)
    loose = residual > settings.accepted_residual
    if loose.any():
        columns = columns.copy()
        columns[:, loose] = swap_descent(geometry, columns[:, loose])
        residual[loose] = geometry.residual(columns[:, loose])
    return columns, residual


def _search(geometry: Geometry, state: _Progress, settings: AttackSettings) -> None:
    users = state.open_users()
    if len(users) == 0:
        return
    started = time.perf_counter()
    columns, _ = projection_search(geometry, users, settings.accepted_residual, iterations=settings.search_iterations,
                                   device=settings.device,
                                   progress_patience=NOISE_PROGRESS_CHECKS if settings.noise else None)
    columns, residual = _polished(geometry, columns, settings)
    ok = (residual <= settings.accepted_residual) & geometry.nonempty(columns, users)
    state.guess[:, users] = columns
    state.accept(users, columns, residual, "found", ok)
    state.charge("projection_search", users, started)


def _lattice(geometry: Geometry, state: _Progress, settings: AttackSettings) -> None:
    users = state.open_users()
    if not settings.lattice or settings.noise or len(users) == 0:
        return
    from attacks.lattice import lattice_columns

    started = time.perf_counter()
    found = lattice_columns(geometry, users, settings.accepted_residual)
    if found:
        solved = np.array(sorted(found), dtype=np.int64)
        columns = np.stack([found[int(u)] for u in solved], axis=1)
        state.accept(solved, columns, geometry.residual(columns), "found", np.ones(len(solved), dtype=bool))
        state.events["found by lattice reduction"] = len(solved)
    state.charge("lattice", users, started)


def _complete_from_totals(geometry: Geometry, state: _Progress, totals: np.ndarray | None, settings: AttackSettings) -> None:
    users = state.open_users()
    if totals is None or len(users) != 1:
        return
    started = time.perf_counter()
    column = (totals - state.columns.sum(axis=1))[:, None]
    binary = np.all((column == 0) | (column == 1))
    sums = geometry.window_matrix @ column[:, 0]
    counts_match = np.all((sums >= geometry.counts[users[0]]) & (sums <= geometry.high[users[0]]))
    residual = geometry.residual(column)
    ok = np.array([binary and counts_match]) & (residual <= settings.accepted_residual)
    state.accept(users, column, residual, "found", ok)
    state.charge("totals", users, started)


def _joint(geometry: Geometry, state: _Progress, totals: np.ndarray | None, settings: AttackSettings,
           progress: bool) -> "JointOutcome | None":
    """The joint stage (exact mode only: under noise the search's best-residual candidates stand); None where it
    does not run. Imported here: it loads HiGHS, which an instance the earlier stages settle never needs."""
    if settings.noise or not any(s != "unique" for s in state.status):
        return None
    from attacks.joint import run_joint

    started = time.perf_counter()
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else None
    outcome = run_joint(geometry, state, totals, settings, log)
    state.steps["joint"] = time.perf_counter() - started
    return outcome


def _separate_exchangeable(geometry: Geometry, state: _Progress, totals: np.ndarray | None, settings: AttackSettings,
                           alternatives: np.ndarray) -> None:
    """Users whose counts (and bounds) are identical are exchangeable: any column that fits one fits the others, and
    every stage, run user by user, hands them the same column. With exact counts and the per-round totals, the one
    column such a group lacks is what the totals leave once every other column is taken: where it is binary, meets
    the group's counts and lies in col(A), one of the duplicates takes it. Which member holds which of the group's
    columns the observations cannot tell, so every member is `ambiguous` (at least as many alternatives as members).
    Measured on 10 users over 40 rounds with two such users: one column written twice and the other lost (misfit
    0.24); now both columns, misfit 0."""
    if totals is None or not geometry.exact or settings.noise:
        return
    bounds = np.hstack([geometry.counts, geometry.high])
    _, group_of = np.unique(bounds, axis=0, return_inverse=True)
    for group in np.unique(group_of):
        members = np.flatnonzero(group_of == group)
        if len(members) < 2 or any(state.status[m] not in ("unique", "found", "ambiguous") for m in members):
            continue
        columns = state.columns[:, members]
        distinct = np.unique(columns, axis=1)
        if distinct.shape[1] != len(members) - 1:  # all distinct already, or more than one column lacking
            continue
        others = np.setdiff1d(np.arange(len(state.status)), members)
        lacking = totals - state.columns[:, others].sum(axis=1) - distinct.sum(axis=1)
        if not np.all((lacking == 0) | (lacking == 1)) or any(np.array_equal(lacking, column) for column in distinct.T):
            continue  # not a column, or the same again (members that share their rounds, as fixed groups do)
        sums = geometry.window_matrix @ lacking
        user = members[0]
        fits = np.all((sums >= geometry.counts[user]) & (sums <= geometry.high[user]))
        residual = geometry.residual(lacking[:, None])[0]
        if not fits or residual > settings.accepted_residual:
            continue
        duplicate = next(m for k, m in enumerate(members) if any(np.array_equal(columns[:, k], columns[:, j]) for j in range(k)))
        state.columns[:, duplicate] = lacking
        state.residual[duplicate] = residual
        for member in members:
            state.status[member] = "ambiguous"
            alternatives[member] = max(alternatives[member], len(members))


def _equalities_per_free_round(geometry: Geometry) -> np.ndarray:
    """Rows of N^T (T - r) plus windows with free rounds, over free rounds, per user: an upper bound of the true ratio."""
    lengths = np.bincount(geometry.window_index)
    partial = (geometry.high > 0) & (geometry.counts < lengths[None, :])  # (n, W) windows whose rounds stay free
    free = (partial * lengths[None, :]).sum(axis=1)
    equalities = np.minimum((geometry.n_rounds - geometry.rank) + partial.sum(axis=1), free)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(free > 0, equalities / np.maximum(free, 1), np.inf)


def _full_column_rank(gram: np.ndarray) -> bool:
    """Whether P has full column rank, from its Gram matrix P^T P (a Cholesky factor with no vanishing pivot)."""
    try:
        factor = np.diag(np.linalg.cholesky(gram))  # raises unless P has full column rank
    except np.linalg.LinAlgError:
        return False
    return bool(factor.min() > 1e-8 * max(factor.max(), 1.0))


def identifiable_updates(participants: np.ndarray) -> np.ndarray:
    """(n,) whether each user's update is determined by P G = A: true unless its column is a combination of the
    other columns (P's null space reaches its coordinate), where least squares gives it an arbitrary share."""
    columns = participants.astype(np.float64)
    gram = columns.T @ columns
    if _full_column_rank(gram):
        return np.ones(columns.shape[1], dtype=bool)
    values, vectors = np.linalg.eigh(gram)
    null = vectors[:, values <= 1e-9 * max(values.max(initial=0.0), 1.0)]
    return np.linalg.norm(null, axis=1) <= 1e-6


def least_squares(participants: np.ndarray, aggregates: np.ndarray) -> np.ndarray:
    """argmin_G ||P G - A||: normal equations when P has full column rank (far faster at T >> n), else the pseudo-inverse."""
    gram = participants.T @ participants
    if _full_column_rank(gram):
        try:
            return np.linalg.solve(gram, participants.T @ aggregates)
        except np.linalg.LinAlgError:  # a pivot just above the threshold can still leave the solve singular
            pass
    return np.linalg.pinv(participants) @ aggregates


def disaggregate(
    aggregates: np.ndarray,
    counts: np.ndarray,
    window: int,
    totals: np.ndarray | None = None,
    settings: AttackSettings = AttackSettings(),
    progress: bool = False,
    counts_high: np.ndarray | None = None,
    subspace: Subspace | None = None,
) -> Disaggregation:
    """Recover the participant matrix (T x n) and the per-user updates (n x d) from what the server observed.

    With `counts_high`, each window sum is only known to lie in [counts, counts_high] (an adaptive
    attacker's reading of rounded, noised or padded counts); totals, the linear stage and certificates
    are then left out. `subspace`: left_singular(aggregates), where the caller computed it already.
    Every stage runs in this process: the joint stage's order (each proven column tightens the next user's program) is part of
    the answer, and its work limits keep that answer the same on any machine.
    """
    if counts_high is None:
        aggregates, counts, totals = check_observation(aggregates, counts, window, totals)
    else:
        aggregates, counts, _ = check_observation(aggregates, counts, window)
        counts_high = check_counts(counts_high, aggregates.shape[0], window)
        totals = None
        if np.any(counts_high < counts):
            raise BenchmarkError("count upper bounds must not be below the counts")
    with blas_threads_for(aggregates):
        return _disaggregate(aggregates, counts, window, totals, settings, progress, counts_high, subspace)


@contextmanager
def blas_threads_for(aggregates: np.ndarray) -> Iterator[None]:
    """One BLAS thread for aggregates of at most SMALL_ENTRIES entries (small products: waking BLAS threads costs
    more than it saves), the default above; a caller that decomposes the sums for disaggregate does it under this
    too, so the decomposition is the one the attack would have made."""
    if aggregates.size > SMALL_ENTRIES:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _disaggregate(aggregates, counts, window, totals, settings, progress, counts_high, subspace) -> Disaggregation:
    wall = time.perf_counter()
    n_users = counts.shape[0]
    state = _Progress(aggregates.shape[0], n_users)
    started = time.perf_counter()
    geometry = Geometry(column_space(aggregates, n_users, settings.noise, subspace), counts, int(window), counts_high)
    state.charge("subspace", np.arange(n_users), started)
    _linear(geometry, state, settings)
    _search(geometry, state, settings)
    _lattice(geometry, state, settings)
    _complete_from_totals(geometry, state, totals, settings)
    outcome = _joint(geometry, state, totals, settings, progress)
    ran = outcome is not None and outcome.alternatives is not None
    alternatives = outcome.alternatives if ran else np.zeros(n_users, dtype=np.int64)
    _separate_exchangeable(geometry, state, totals, settings, alternatives)
    started = time.perf_counter()
    participants = state.columns.astype(np.uint8)
    updates = least_squares(state.columns, aggregates)
    state.charge("updates", np.arange(n_users), started)
    misfit = relative_misfit(aggregates, participants, updates)
    # Every column can pass its own checks while the whole P U misses A (counts that cannot produce the sums), or
    # while the columns do not add up to the per-round totals: then nothing is proven unique. While some user has
    # no column, neither says anything of the others.
    complete = not any(s in ("timeout", "infeasible") for s in state.status)
    misses_totals = complete and totals is not None and not np.array_equal(participants.sum(axis=1, dtype=np.int64), totals)
    contradiction = outcome is not None and outcome.contradiction
    # With the totals, every certificate leans on the other users' columns and on the totals themselves: a user whose
    # observations admit no column at all (infeasible) shows they contradict each other, and then proves nothing.
    inconsistent = (misfit > settings.accepted_residual and complete) or misses_totals or contradiction or \
        (totals is not None and "infeasible" in state.status)
    status = tuple("found" if s == "unique" and inconsistent else s for s in state.status)
    return Disaggregation(
        participants=participants,
        updates=updates,
        status=status,
        seconds=state.seconds,
        residual=np.where(np.isfinite(state.residual), state.residual, np.nan),
        rank=geometry.rank,
        wall_seconds=time.perf_counter() - wall,
        steps=state.steps,
        alternatives=alternatives,
        events={**state.events, **(outcome.events if outcome is not None else {})},
        clock_limited=outcome is not None and outcome.clock_limited,
        equalities_per_free_round=_equalities_per_free_round(geometry),
        relative_misfit=misfit,
        misses_totals=misses_totals,
        contradiction=contradiction,
        candidates=state.guess.astype(np.uint8),
        identifiable=identifiable_updates(participants),
    )

