"""One round of secure aggregation under a defense: the hooks in protocol order, shared by the attack
scenario (benchmark.simulation) and the utility track (benchmark.utility). Numpy only."""

from collections.abc import Iterable

import numpy as np

from defenses.base import Defense

# The random stream each hook draws from: one per purpose, so that, say, padding decisions and padding
# masks never share one (`participation-padding` with and without masks picks the same participants).
HOOK_STREAMS = (
    "defense_participants", "defense_training", "defense_updates", "defense_uploads", "defense_aggregates", "defense_steps",
)


def streams(entropy: int | list[int], names: Iterable[str]) -> dict[str, np.random.Generator]:
    """One independent random stream per purpose, spawned from `entropy` (a seed, or a seed and a salt)."""
    names = tuple(names)
    return {name: np.random.default_rng(child) for name, child in zip(names, np.random.SeedSequence(entropy).spawn(len(names)))}


def secure_aggregate(
    defense: Defense, updates: Iterable[np.ndarray], padded: int, dim: int, rngs: dict[str, np.random.Generator]
) -> tuple[np.ndarray, int]:
    """(the round's sum as the server receives it, coordinates uploaded by padded devices).

    Each contributing client's update goes through `transform_update`; the `padded` devices counted
    without contributing upload `padded_uploads`; the sum goes through `transform_aggregate`.
    """
    aggregate = np.zeros(dim)
    for update in updates:
        aggregate = aggregate + np.asarray(defense.transform_update(update, rngs["defense_updates"]), dtype=np.float64)
    uploads = defense.padded_uploads(padded, dim, rngs["defense_uploads"]) if padded else None
    coordinates = 0
    if uploads is not None:
        aggregate = aggregate + np.asarray(uploads, dtype=np.float64).sum(axis=0)
        coordinates = uploads.size
    return np.asarray(defense.transform_aggregate(aggregate, rngs["defense_aggregates"]), dtype=np.float64), coordinates


def server_divisor(contributors: int, cohort: float, padding_rate: float) -> float:
    """What the server divides a round's sum by: the round's contributors, whom it counts; under padding, which it
    cannot tell from them (a masked padded device uploads like any other under secure aggregation), the cohort
    its sampling targets (public, as in DP-FedAvg's fixed denominator). Dividing by the true contributors had made
    masked padding cost nothing; a per-round estimate from the check-ins, (m - r n) / (1 - r), diverged on small
    cohorts (rate 0.5, 10 of 60 clients a round: accuracy 0.10)."""
    return float(contributors) if padding_rate <= 0 else max(float(cohort), 1.0)
