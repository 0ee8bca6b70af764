"""The adaptive attacker: reads a defense's public parameters and adjusts what the disaggregation assumes.

A defense is only as good as the strongest attack that knows how it works. The
non-adaptive attack takes the analytics at face value; the adaptive one knows
- rounded counts (`count_bucket` b): the true count lies in [c, c + b - 1];
- noised counts (`count_noise_scale` b, Laplace): within b ln(1 / (1 - COUNT_CONFIDENCE)) of c;
- padded check-ins (`padding_rate` r): the true count lies in [c - q, c], q a high
  binomial quantile of the padded check-ins, and the per-round totals are inflated;
- noise on updates or sums (`update_noise_std`, `aggregate_noise_std`,
  `example_noise_multiplier`) and a refreshed model (`model_refresh`, unless the server, who moved it, knows
  that no update changed: Observation.updates_drift): no column
  fits exactly, so it truncates to rank n, searches every user's column (the
  projection search runs to its stall, never skipped), keeps each user's
  best-residual candidate, then refines all columns against the sums themselves
  (attacks/alternating.py);
- fixed groups (`groups`, each user's group index, or `group_size` g with user u in
  group u // g): members share one column, so it solves one column per group and
  splits the group's recovered sum evenly (only group sums are identifiable).
"""

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import binom

from attacks.alternating import refine
from attacks.disaggregation import Disaggregation, disaggregate, least_squares
from attacks.geometry import Geometry, Subspace, column_space
from attacks.inputs import totals_agree
from attacks.settings import AttackSettings
from benchmark.observation import Observation, window_lengths

COUNT_CONFIDENCE = 0.99  # each count bound holds with at least this probability
NOISE_KEYS = ("update_noise_std", "aggregate_noise_std", "example_noise_multiplier", "model_refresh")


@dataclass(frozen=True)
class Reading:
    """What the adaptive attacker feeds the disaggregation instead of the raw analytics."""

    counts: np.ndarray  # (n, W) lower bounds of the window sums
    counts_high: np.ndarray | None  # (n, W) upper bounds; None: counts taken as exact
    totals: np.ndarray | None
    settings: AttackSettings
    groups: np.ndarray | None = None  # (n,) each user's group index; None: no fixed groups


def read_defense(
    parameters: dict, counts: np.ndarray, n_rounds: int, window: int, totals: np.ndarray | None, settings: AttackSettings,
    updates_drift: bool = True,
) -> Reading:
    """Count bounds, totals and settings that are valid under the defense the parameters describe."""
    lengths = window_lengths(n_rounds, window)[None, :]
    low, high = counts.astype(np.int64), counts.astype(np.int64)
    if parameters.get("count_bucket", 1) > 1:
        high = high + int(parameters["count_bucket"]) - 1
    if parameters.get("count_noise_scale", 0) > 0:
        spread = int(np.ceil(parameters["count_noise_scale"] * np.log(1.0 / (1.0 - COUNT_CONFIDENCE))))
        low, high = low - spread, high + spread
    if parameters.get("padding_rate", 0) > 0:
        low = low - binom.ppf(COUNT_CONFIDENCE, lengths, parameters["padding_rate"]).astype(np.int64)
        totals = None
    if any(parameters.get(key) for key in NOISE_KEYS if key != "model_refresh" or updates_drift):
        settings = replace(settings, noise=True)
    low, high = np.clip(low, 0, lengths), np.clip(high, 0, lengths)
    exact = np.array_equal(low, high) and np.array_equal(low, counts)
    return Reading(
        counts=low,
        counts_high=None if exact else high,
        totals=totals,
        settings=settings,
        groups=public_groups(parameters, counts.shape[0]),
    )


def public_groups(parameters: dict, n_users: int) -> np.ndarray | None:
    """Each user's group from the public `groups` list, else consecutive ids u // group_size; None without groups."""
    if parameters.get("groups") is not None:
        groups = np.asarray(parameters["groups"], dtype=np.int64)
        return groups if len(groups) == n_users and len(np.unique(groups)) < n_users else None
    size = int(parameters.get("group_size", 1) or 1)
    return np.arange(n_users) // size if size > 1 else None


def keep_best(
    result: Disaggregation, aggregates: np.ndarray, counts: np.ndarray, window: int,
    counts_high: np.ndarray | None, subspace: Subspace | None = None,
) -> Disaggregation:
    """Under noise: every user the stages left open gets its best-residual candidate from the disaggregation's search
    (run to its stall, as a search accepting nobody would), then every column is refined against the sums
    (alternating columns and updates, counts kept)."""
    open_users = np.array([u for u, s in enumerate(result.status) if s not in ("unique", "found")], dtype=np.int64)
    geometry = Geometry(column_space(aggregates, counts.shape[0], True, subspace), counts, int(window), counts_high)
    participants = result.participants.copy()
    status, best = list(result.status), result.residual.copy()
    if len(open_users):
        columns = result.candidates[:, open_users].astype(np.float64)
        ok = geometry.nonempty(columns, open_users)
        participants[:, open_users[ok]] = columns[:, ok].astype(np.uint8)
        for user, found, value in zip(open_users, ok, geometry.residual(columns)):
            if found:
                status[user], best[user] = "found", value
    participants = refine(geometry, aggregates, participants).astype(np.uint8)
    best = np.where(participants.any(axis=0), geometry.residual(participants.astype(np.float64)), best)
    return replace(
        result, participants=participants, updates=least_squares(participants.astype(np.float64), aggregates),
        status=tuple(status), residual=best,
    )


def unattributed(n_rounds: int, n_users: int, dimension: int) -> Disaggregation:
    """Without per-user counts nothing ties a recovered column to a user: the attack attributes nothing."""
    return Disaggregation(
        participants=np.zeros((n_rounds, n_users), dtype=np.uint8),
        updates=np.zeros((n_users, dimension)),
        status=("unattributed",) * n_users,
        seconds=np.zeros(n_users),
        residual=np.full(n_users, np.nan),
        rank=0,
        wall_seconds=0.0,
    )


def _inputs(observation: Observation, settings: AttackSettings) -> tuple:
    """(counts, counts_high, totals, settings, groups) the disaggregation gets: the raw analytics, or the defense's
    reading of them when `settings.adaptive`."""
    counts, counts_high, totals, groups = observation.counts, None, observation.totals, None
    if settings.adaptive:
        reading = read_defense(observation.defense_parameters, counts, len(observation.aggregates), observation.window,
                               totals, settings, observation.updates_drift)
        counts, counts_high, totals, settings = reading.counts, reading.counts_high, reading.totals, reading.settings
        groups = reading.groups
    # A defense can publish totals that contradict the counts (rounded or noised counts): then they are no help.
    if totals is not None and not totals_agree(totals, counts, observation.window):
        totals = None
    return counts, counts_high, totals, settings, groups


def _same_inputs(one: tuple, other: tuple) -> bool:
    """Whether two _inputs give the disaggregation the same counts, bounds, totals and settings (adaptive aside)."""
    return all(np.array_equal(a, b) for a, b in zip(one[:3], other[:3])) \
        and replace(one[3], adaptive=False) == replace(other[3], adaptive=False)


def recover(observation: Observation, settings: AttackSettings, subspace: Subspace | None = None,
            plain: Disaggregation | None = None) -> Disaggregation:
    """The disaggregation step on one observation, reading the defense's public parameters when `settings.adaptive`;
    `subspace`: left_singular of its aggregates, where the caller has it. `plain`: the static attack's
    disaggregation of the same observation (these settings, not adaptive), reused where the reading leaves every
    input as it was (a DP defense's noise, already assumed): the adaptive attack then only refines it."""
    aggregates, window = observation.aggregates, observation.window
    n_rounds, n_users = aggregates.shape[0], observation.n_users
    if observation.counts is None:
        return unattributed(n_rounds, n_users, aggregates.shape[1])
    given = settings
    counts, counts_high, totals, settings, groups = inputs = _inputs(observation, settings)
    if groups is None:
        if plain is not None and _same_inputs(inputs, _inputs(observation, replace(given, adaptive=False))):
            result = plain
        else:
            result = disaggregate(aggregates, counts, window, totals, settings, counts_high=counts_high, subspace=subspace)
        if settings.adaptive and settings.noise:
            result = keep_best(result, aggregates, counts, window, counts_high, subspace)
        return result
    _, leaders, group = np.unique(groups, return_index=True, return_inverse=True)
    sizes = np.bincount(group)
    high = None if counts_high is None else counts_high[leaders]
    result = disaggregate(aggregates, counts[leaders], window, None, settings, counts_high=high, subspace=subspace)
    if settings.noise:
        result = keep_best(result, aggregates, counts[leaders], window, high, subspace)
    return replace(
        result,
        participants=result.participants[:, group],
        updates=result.updates[group] / sizes[group, None],
        status=tuple(result.status[k] for k in group),
        seconds=result.seconds[group] / sizes[group],
        residual=result.residual[group],
    )
