"""The attacks a task runs, each giving a Recovery: the updates it recovered, named or not.

- static: the disaggregation with the analytics taken at face value;
- adaptive: the same, reading the defense's public parameters (attacks/adaptive.py);
- anonymous: binary vectors of col(A) found without counts (attacks/anonymous.py), plus the
  adaptive attack's columns, attributed to users by likelihood under the published analytics'
  declared mechanism (attacks/attribution.py); every found column's update is recovered,
  named or not. Without per-user counts nothing is named;
- prefix: a server may ignore rounds, so it also runs the named attacks on the first 1/2 and 1/4
  of the rounds (whole analytics windows): more rounds then never leave it weaker than fewer. The
  anonymous attack runs there too where the whole run's count-free search fell short for want of work.
"""

import time
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from attacks.adaptive import public_groups, recover
from attacks.anonymous import (
    ALONE_ITERATIONS, ALONE_WORK_LIMIT, EXACT_RESIDUAL, TARGETED_ITERATIONS, TARGETED_ROUNDS, TARGETED_WORK_LIMIT,
    binary_vectors, complement, drop_composites, long_sweeps_reach, residuals, targeted_reach,
    settled_vectors,
)
from attacks.attribution import assign, independent, log_likelihoods
from attacks.disaggregation import Disaggregation, least_squares
from attacks.geometry import column_space, left_singular, numerical_rank, searched_subspace
from attacks.settings import AttackSettings
from benchmark.observation import Observation

ATTACKS = ("static", "adaptive", "anonymous", "prefix")
PREFIX_SHARES = (2, 4)  # the prefix attack runs on the first 1/2 and 1/4 of the rounds
# Under noise, anonymous candidates lie within the accepted residual / NOISE_GAP and within NOISE_GAP times the
# best candidate's residual (attacks/anonymous.py): true columns stand apart from the other binary vectors.
NOISE_GAP = 30.0


@dataclass(frozen=True)
class Recovery:
    """What one attack recovered.

    `disaggregation` names: each user's column and update (a zero column where it names none).
    `columns` and `updates` are every distinct update recovered, named or not: what inversion
    runs on. Under fixed groups (`groups`, each user's group index) they are group sums.
    `claimed_rounds`: the named columns are claimed for the first this many rounds only (a prefix attempt
    that could not carry them further); None: for every round.
    """

    attack: str  # one of ATTACKS
    disaggregation: Disaggregation
    columns: np.ndarray  # (T, k) uint8
    updates: np.ndarray  # (k, d)
    groups: np.ndarray | None = None
    claimed_rounds: int | None = None

    @property
    def named(self) -> np.ndarray:
        """(n,) whether the attack names a (non-empty) column for each user."""
        return self.disaggregation.participants.any(axis=0)


def needs_noise_mode(observation: Observation, singular: np.ndarray | None = None) -> bool:
    """Sums of fixed updates have rank <= n; a higher numerical rank means drift or noise."""
    if singular is None:
        _, singular = left_singular(observation.aggregates, observation.n_users)
    return numerical_rank(singular, observation.aggregates.shape) > observation.n_users


def named_recovery(attack: str, result: Disaggregation, groups: np.ndarray | None) -> Recovery:
    """A named attack's recovered updates: one per distinct non-empty column, the sum of the named updates of the
    users sharing it (a group's sum when the attack split it evenly among its members)."""
    named = result.participants.any(axis=0)
    if not named.any():
        empty = np.zeros((result.participants.shape[0], 0), dtype=np.uint8)
        return Recovery(attack, result, empty, np.zeros((0, result.updates.shape[1])), groups)
    columns, _, updates = _distinct(result.participants[:, named], result.updates[named])
    return Recovery(attack, result, columns.astype(np.uint8), updates, groups)


def _distinct(participants: np.ndarray, updates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct columns, each user's index among them, each distinct column's summed update)."""
    columns, which = np.unique(participants, axis=1, return_inverse=True)
    which = np.ravel(which)
    sums = np.zeros((columns.shape[1], updates.shape[1]))
    np.add.at(sums, which, updates)
    return columns, which, sums


def anonymous_recovery(
    observation: Observation,
    settings: AttackSettings,
    noise: bool,
    adaptive: Disaggregation | None,
    left: np.ndarray | None = None,
    singular: np.ndarray | None = None,
) -> Recovery:
    """Count-free candidates (plus the adaptive attack's columns), named by likelihood where counts are published.

    `left`, `singular`: A's left singular vectors and values, when the caller has them already.
    """
    aggregates = observation.aggregates
    groups = public_groups(observation.defense_parameters, observation.n_users)
    basis = _count_free_basis(observation, noise, None if left is None or singular is None else (left, singular))
    search = partial(binary_vectors, basis, settings.accepted_residual / NOISE_GAP, gap=NOISE_GAP) if noise else \
        partial(binary_vectors, basis)
    found = search().columns
    if adaptive is not None:
        found = np.hstack([found, adaptive.participants[:, adaptive.participants.any(axis=0)].astype(np.float64)])
    # Where the short sweeps and the named attack leave col(A) without a full set of columns, the long sweeps run,
    # counts or no counts: the attacker can always ignore counts it cannot use. They ran only without counts
    # before, and noisy-counts(scale=1) scored 0.24 to 0.75 where no-analytics, publishing less, gave 0.87 to 0.92.
    if _short_of_columns(basis, found, noise) and long_sweeps_reach(basis):
        found = np.hstack([found, search(iterations=ALONE_ITERATIONS, work_limit=ALONE_WORK_LIMIT).columns])
    kept = _independent_columns(basis, found, noise)
    if not noise:
        kept = _targeted(basis, kept)
    if not noise and observation.totals is not None and groups is None:
        kept = _peeled(basis, kept, observation.totals)
    participants = np.zeros((aggregates.shape[0], observation.n_users), dtype=np.uint8)
    status = ["unattributed"] * observation.n_users
    if observation.counts is not None and kept.shape[1]:
        scores = log_likelihoods(kept, observation.counts, observation.window, observation.defense_parameters)
        if groups is None:
            owner = assign(scores)
        else:  # a group's members share one column: assign it to the group, by the members' summed evidence
            _, group = np.unique(groups, return_inverse=True)
            group_scores = np.zeros((group.max() + 1, kept.shape[1]))
            np.add.at(group_scores, group, scores)
            owner = assign(group_scores)[group]
        for user in np.flatnonzero(owner >= 0):
            participants[:, user] = kept[:, owner[user]]
            status[user] = "found"
    updates = least_squares(kept, aggregates) if kept.shape[1] else np.zeros((0, aggregates.shape[1]))
    named = np.zeros((observation.n_users, aggregates.shape[1]))
    if observation.counts is not None and kept.shape[1]:
        hit = owner >= 0
        sizes = np.ones(observation.n_users) if groups is None else np.bincount(group)[group]
        named[hit] = updates[owner[hit]] / sizes[hit, None]
    result = Disaggregation(
        participants=participants,
        updates=named,
        status=tuple(status),
        seconds=np.zeros(observation.n_users),
        residual=np.full(observation.n_users, np.nan),
        rank=kept.shape[1],
        wall_seconds=0.0,
    )
    return Recovery("anonymous", result, kept.astype(np.uint8), updates, groups)


def _count_free_basis(observation: Observation, noise: bool, subspace: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """col(A)'s basis as the count-free search sees it: one dimension per user, or per public group."""
    groups = public_groups(observation.defense_parameters, observation.n_users)
    distinct_users = observation.n_users if groups is None else len(np.unique(groups))
    if subspace is None:
        subspace = searched_subspace(observation.aggregates, distinct_users, noise)
    return column_space(observation.aggregates, distinct_users, noise, subspace)


def _independent_columns(basis: np.ndarray, found: np.ndarray, noise: bool) -> np.ndarray:
    """The distinct candidates, sums of found columns dropped, that each raise the rank, at most col(A)'s dimensions."""
    found = np.unique(found.astype(np.uint8), axis=1).astype(np.float64) if found.shape[1] else found
    found = drop_composites(found)
    fit = residuals(basis, found)
    if not noise:  # exact sums: a column outside col(A) (a wrong named column) is no candidate
        found, fit = found[:, fit <= EXACT_RESIDUAL], fit[fit <= EXACT_RESIDUAL]
    # Smallest support first when exact (a sum of columns comes after its parts), best fit first under noise.
    order = np.lexsort((found.sum(axis=0), fit)) if noise else np.argsort(found.sum(axis=0), kind="stable")
    return found[:, independent(found, order)[: basis.shape[1]]] if found.shape[1] else found


def _targeted(basis: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """`kept` (exact sums) with the binary vectors sweeps find from starts orthogonal to it, round after round."""
    for _ in range(TARGETED_ROUNDS):
        missing = basis.shape[1] - kept.shape[1]
        if kept.shape[1] == 0 or missing == 0 or not targeted_reach(basis, missing):
            return kept
        found = binary_vectors(basis, iterations=TARGETED_ITERATIONS, work_limit=TARGETED_WORK_LIMIT,
                               starts=complement(basis, kept)).columns
        grown = _independent_columns(basis, np.hstack([kept, found]), noise=False)
        if grown.shape[1] <= kept.shape[1]:
            return kept
        kept = grown
    return kept


def _peeled(basis: np.ndarray, kept: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """`kept` (exact sums, smallest support first) with the columns the totals lead to (settled_vectors), until they
    lead to no more."""
    while 0 < kept.shape[1] < basis.shape[1]:
        grown = _independent_columns(basis, np.hstack([kept, settled_vectors(basis, kept, totals)]), noise=False)
        if grown.shape[1] <= kept.shape[1]:
            return kept
        kept = grown
    return kept


def _short_of_columns(basis: np.ndarray, columns: np.ndarray, noise: bool) -> bool:
    """Whether fewer distinct binary columns than col(A)'s dimensions are in hand (exact sums: those inside col(A))."""
    if columns.shape[1]:
        columns = np.unique(columns.astype(np.uint8), axis=1).astype(np.float64)
        if not noise:
            columns = columns[:, residuals(basis, columns) <= EXACT_RESIDUAL]
    return columns.shape[1] < basis.shape[1]


def extended(result: Disaggregation, aggregates: np.ndarray) -> Disaggregation:
    """A disaggregation of the first rounds carried to all of `aggregates`' rounds by its updates.

    Where it names every user, each later round's participants are the least-squares weights of that round's sum
    on the distinct recovered updates, rounded to {0, 1} (exact for exact sums, as d >> n makes the weights
    unique); where it does not, the unnamed users' share of the sums is unknown and later rounds stay 0.
    """
    first = result.participants
    later = np.zeros((aggregates.shape[0] - first.shape[0], first.shape[1]), dtype=np.uint8)
    if first.any(axis=0).all():
        _, which, sums = _distinct(first, result.updates)
        weights = aggregates[first.shape[0]:] @ np.linalg.pinv(sums)
        later = np.clip(np.rint(weights), 0, 1).astype(np.uint8)[:, which]
    return replace(result, participants=np.vstack([first, later]))


def prefix_recoveries(observation: Observation, settings: AttackSettings, count_free: bool = False) -> list[Recovery]:
    """The named attacks (static, and adaptive where the defense publishes parameters) on the first 1/s of the
    rounds, s in PREFIX_SHARES, cut at whole analytics windows and kept where that leaves more rounds than users;
    each an attempt named `prefix`, its updates the prefix's, its columns carried to every round (extended) where
    it names every user and claimed for the prefix's rounds only where it does not.

    Without per-user counts the count-free search is the only attack, and its fixed work buys fewer sweeps as the
    rounds grow (no-analytics, 100 users: 0.896, 0.730 and 0 of them at 1200, 2400 and 4800 rounds), so there the
    prefix attempts are the anonymous attack on the first rounds. Where counts are published, `count_free` (the
    full run fell short of col(A) where its long sweeps could not afford two starts per dimension; the first half's
    afford twice as many) adds the anonymous attack beside the named ones: a server can ignore counts it cannot
    use as well as rounds. Before the targeted sweeps, no-analytics lost 0.896 of the designed cell's users at 1200
    rounds, 0.730 at 2400 (1.04 starts per dimension) and 0.896 through the prefix; with them, at 4800 rounds (100
    synthetic users, seed 0) the full run still finds no column, and the prefixes recover every user."""
    window, n_rounds = observation.window, observation.aggregates.shape[0]
    lengths = sorted({n_rounds // share // window * window for share in PREFIX_SHARES}, reverse=True)
    groups = public_groups(observation.defense_parameters, observation.n_users)
    attempts = []
    for length in (n for n in lengths if observation.n_users < n < n_rounds):
        first = observation.first_rounds(length)
        left, singular = left_singular(first.aggregates, observation.n_users)
        noise = settings.noise or needs_noise_mode(first, singular)
        if noise:
            left, singular = searched_subspace(first.aggregates, observation.n_users, True, (left, singular))
        if first.counts is None:
            attempts.append(_anonymous_attempt(observation, first, replace(settings, noise=noise), None, left, singular))
            continue
        static = recover(first, replace(settings, noise=noise, adaptive=False), (left, singular))
        results = [(static, None)]
        if first.defense_parameters:
            results.append((recover(first, replace(settings, noise=noise, adaptive=True), (left, singular), static), groups))
        for result, named_groups in results:
            attempt = named_recovery("prefix", extended(result, observation.aggregates), named_groups)
            claimed = None if result.participants.any(axis=0).all() else length
            attempts.append(replace(attempt, claimed_rounds=claimed))
        if count_free:
            attempts.append(_anonymous_attempt(observation, first, replace(settings, noise=noise), results[-1][0], left,
                                               singular))
    return attempts


def _anonymous_attempt(observation: Observation, first: Observation, settings: AttackSettings,
                       named: Disaggregation | None, left: np.ndarray, singular: np.ndarray) -> Recovery:
    """The anonymous attack on the first rounds (`first`), beside the prefix's named columns, as a `prefix` attempt:
    its columns 0 on the later rounds, its names carried to them (extended) where it names every user."""
    anonymous = anonymous_recovery(first, settings, settings.noise, named, left, singular)
    carried = extended(anonymous.disaggregation, observation.aggregates)
    claimed = None if carried.participants.any(axis=0).all() else first.aggregates.shape[0]  # without counts: nobody named
    return replace(anonymous, attack="prefix", columns=_padded(anonymous.columns, observation.aggregates.shape[0]),
                   disaggregation=carried, claimed_rounds=claimed)


def _padded(columns: np.ndarray, n_rounds: int) -> np.ndarray:
    """A prefix's columns with the later rounds, which it says nothing of, as 0."""
    return np.vstack([columns, np.zeros((n_rounds - columns.shape[0], columns.shape[1]), dtype=columns.dtype)])


def run_attacks(observation: Observation, settings: AttackSettings) -> list[Recovery]:
    """Every attack on one observation: static; adaptive when the defense publishes parameters; anonymous; prefix
    (of the named attacks where counts are published, and of the anonymous one where none are or where the count-free
    search fell short at a horizon long enough to starve its long sweeps).

    One singular value decomposition of the aggregates serves the first three (at 100 users and 1200 rounds of
    LeNet updates it is seconds, and there were four); under noise, one more of the coordinates that carry signal."""
    left, singular = left_singular(observation.aggregates, observation.n_users)
    noise = settings.noise or needs_noise_mode(observation, singular)
    if noise:  # under noise the attacks search the subspace of the coordinates that carry signal
        left, singular = searched_subspace(observation.aggregates, observation.n_users, True, (left, singular))
    given, settings = settings, replace(settings, noise=noise)
    groups = public_groups(observation.defense_parameters, observation.n_users)
    recoveries = []
    static = None
    if observation.counts is not None:
        static = recover(observation, replace(settings, adaptive=False), (left, singular))
        recoveries.append(named_recovery("static", static, None))
    adaptive = None
    if observation.defense_parameters and observation.counts is not None:
        adaptive = recover(observation, replace(settings, adaptive=True), (left, singular), static)
        recoveries.append(named_recovery("adaptive", adaptive, groups))
    started = time.perf_counter()
    anonymous = anonymous_recovery(observation, settings, noise, adaptive if adaptive is not None else static, left, singular)
    seconds = time.perf_counter() - started
    recoveries.append(replace(anonymous, disaggregation=replace(anonymous.disaggregation, wall_seconds=seconds)))
    basis = _count_free_basis(observation, noise, (left, singular))
    short = _short_of_columns(basis, anonymous.columns.astype(np.float64), noise)
    if observation.counts is not None or short:  # the prefix decides its own noise mode
        starved = not long_sweeps_reach(basis, starts=PREFIX_SHARES[0])  # the first half's afford twice the starts
        recoveries.extend(prefix_recoveries(observation, given, count_free=short and starved))
    return recoveries
