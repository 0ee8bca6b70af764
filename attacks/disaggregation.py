"""Gradient disaggregation (Lam et al., ICML 2021): recover who took part in which round, then each user's update.

The cheapest exact method the observations allow runs first and every answer
is verified before it is accepted (binary, the user's window counts, inside
col(A)); only what is left goes on to the next, dearer method:

1. linear: when the window sums pin every column down (rank(B U) = rank(A)),
   P = U (B U)^+ C^T, one factorization for all users, and each column is
   proven unique by the linear algebra alone;
2. projection search: batched Douglas-Rachford over all users at once;
3. completion from the per-round totals when one user is left;
4. the per-user integer program with HiGHS, in parallel workers (exact mode only:
   under noise the search's best-residual candidates stand).
Columns found by 2-4 are then certified unique by an LP where it succeeds. A
`found` column is consistent with everything observed but may be another
user's-worth of binary vector than the truth: only `unique` is proven.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from attacks.geometry import Geometry, column_space
from attacks.inputs import check_counts, check_observation
from attacks.settings import AttackSettings
from attacks.integer_program import UserProgram, is_unique, solve_user
from attacks.projection_search import projection_search
from benchmark.errors import BenchmarkError
from benchmark.executor import Executor, run_tasks

# Start-up of a worker pool with cvxpy loaded (measured 1.5-2 s on 2 cores): per-user work projected to take
# less than this runs in this process instead.
INLINE_SECONDS = 2.0
STATUSES = ("unique", "found", "timeout", "infeasible", "unattributed")


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

    def report(self) -> dict:
        """A JSON-ready summary: totals, timings per step and one entry per user."""
        return {
            "users": len(self.status),
            "rounds": int(self.participants.shape[0]),
            "rank": self.rank,
            "wall_seconds": self.wall_seconds,
            "steps": self.steps,
            "totals": {status: self.status.count(status) for status in STATUSES},
            "per_user": [
                {"user": user, "status": status, "seconds": float(seconds), "residual": float(residual)}
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

    def open_users(self) -> np.ndarray:
        return np.array([u for u, s in enumerate(self.status) if s in ("timeout", "infeasible")], dtype=np.int64)

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
    sums = geometry.window_matrix @ geometry.basis
    if geometry.exact and np.linalg.matrix_rank(sums) == geometry.rank:
        coords = np.linalg.lstsq(sums, geometry.counts.T.astype(np.float64), rcond=None)[0]
        columns = geometry.round_to_counts(geometry.basis @ coords, users)
        residual = geometry.residual(columns)
        ok = residual <= settings.accepted_residual
        state.accept(users, columns, residual, "found" if settings.noise else "unique", ok)
    state.charge("linear", users, started)


def _search(geometry: Geometry, state: _Progress, settings: AttackSettings) -> None:
    users = state.open_users()
    if len(users) == 0:
        return
    started = time.perf_counter()
    columns, residual = projection_search(
        geometry, users, settings.accepted_residual, iterations=settings.search_iterations
    )
    ok = (residual <= settings.accepted_residual) & geometry.nonempty(columns, users)
    state.accept(users, columns, residual, "found", ok)
    state.charge("projection_search", users, started)


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


def _program(geometry: Geometry, user: int, settings: AttackSettings, deadline: float | None) -> UserProgram:
    zero, one = geometry.fixed_rounds(user)
    return UserProgram(
        user=int(user),
        complement=geometry.complement,
        window_matrix=geometry.window_matrix,
        counts=geometry.counts[user].astype(np.float64),
        counts_high=None if geometry.exact else geometry.high[user].astype(np.float64),
        zero=zero,
        one=one,
        time_limit=settings.time_limit,
        deadline=deadline,
    )


def _integer_programs(
    geometry: Geometry, state: _Progress, settings: AttackSettings, executor: Executor, progress: bool, deadline: float | None
) -> None:
    users = state.open_users()
    # Under noise the search's best-residual candidates stand: a time-limited program would only make the
    # answer depend on how busy the machine is, and it cannot make noisy sums exact.
    if len(users) == 0 or settings.time_limit <= 0 or settings.noise:
        return
    started = time.perf_counter()
    programs = sorted((_program(geometry, user, settings, deadline) for user in users), key=_free_rounds)
    label = "integer programs" if progress else None
    for answer in run_tasks(solve_user, programs, executor, progress=label, inline_seconds=INLINE_SECONDS):
        state.seconds[answer.user] += answer.seconds
        state.status[answer.user] = answer.status
        if answer.column is None:
            continue
        residual = geometry.residual(answer.column[:, None])
        ok = (residual <= settings.accepted_residual) & geometry.nonempty(answer.column[:, None], np.array([answer.user]))
        state.accept(np.array([answer.user]), answer.column[:, None], residual, "found", ok)
        if not ok[0] and answer.status == "found":
            state.status[answer.user] = "infeasible"
    state.steps["integer_program"] = time.perf_counter() - started


def _certify(job: tuple[np.ndarray, UserProgram, np.ndarray]) -> tuple[int, bool, float]:
    basis, program, column = job
    started = time.perf_counter()
    return program.user, is_unique(basis, program, column), time.perf_counter() - started


def _free_rounds(program: UserProgram) -> int:
    """Smaller programs first: under a budget, solve as many users as possible."""
    return int((~(program.zero | program.one)).sum())


def _certify_found(
    geometry: Geometry, state: _Progress, settings: AttackSettings, executor: Executor, progress: bool, deadline: float | None
) -> None:
    users = [u for u, s in enumerate(state.status) if s == "found"]
    # The certificate's null space assumes exact window sums: with count bounds nothing is proven.
    if settings.noise or not settings.certify or not geometry.exact or not users:
        return
    started = time.perf_counter()
    jobs = [(geometry.basis, _program(geometry, user, settings, deadline), state.columns[:, user].copy()) for user in users]
    label = "certificates" if progress else None
    for user, unique, seconds in run_tasks(_certify, jobs, executor, progress=label, inline_seconds=INLINE_SECONDS):
        state.seconds[user] += seconds
        if unique:
            state.status[user] = "unique"
    state.steps["certificate"] = time.perf_counter() - started


def least_squares(participants: np.ndarray, aggregates: np.ndarray) -> np.ndarray:
    """argmin_G ||P G - A||: normal equations when P has full column rank (far faster at T >> n), else the pseudo-inverse."""
    gram = participants.T @ participants
    try:
        factor = scipy.linalg.cho_factor(gram)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(participants) @ aggregates
    return scipy.linalg.cho_solve(factor, participants.T @ aggregates)


def disaggregate(
    aggregates: np.ndarray,
    counts: np.ndarray,
    window: int,
    totals: np.ndarray | None = None,
    settings: AttackSettings = AttackSettings(),
    executor: Executor = Executor(),
    progress: bool = False,
    counts_high: np.ndarray | None = None,
) -> Disaggregation:
    """Recover the participant matrix (T x n) and the per-user updates (n x d) from what the server observed.

    With `counts_high`, each window sum is only known to lie in [counts, counts_high] (an adaptive
    attacker's reading of rounded, noised or padded counts); totals, the linear stage and certificates
    are then left out.
    """
    if counts_high is None:
        aggregates, counts, totals = check_observation(aggregates, counts, window, totals)
    else:
        aggregates, counts, _ = check_observation(aggregates, counts, window)
        counts_high = check_counts(counts_high, aggregates.shape[0], window)
        totals = None
        if np.any(counts_high < counts):
            raise BenchmarkError("count upper bounds must not be below the counts")
    wall = time.perf_counter()
    n_users = counts.shape[0]
    state = _Progress(aggregates.shape[0], n_users)
    started = time.perf_counter()
    geometry = Geometry(column_space(aggregates, n_users, settings.noise), counts, int(window), counts_high)
    state.charge("subspace", np.arange(n_users), started)
    _linear(geometry, state, settings)
    _search(geometry, state, settings)
    _complete_from_totals(geometry, state, totals, settings)
    deadline = None if settings.budget is None else time.time() + settings.budget
    _integer_programs(geometry, state, settings, executor, progress, deadline)
    _complete_from_totals(geometry, state, totals, settings)
    _certify_found(geometry, state, settings, executor, progress, deadline)
    started = time.perf_counter()
    participants = state.columns.astype(np.uint8)
    updates = least_squares(state.columns, aggregates)
    state.charge("updates", np.arange(n_users), started)
    return Disaggregation(
        participants=participants,
        updates=updates,
        status=tuple(state.status),
        seconds=state.seconds,
        residual=np.where(np.isfinite(state.residual), state.residual, np.nan),
        rank=geometry.rank,
        wall_seconds=time.perf_counter() - wall,
        steps=state.steps,
    )

