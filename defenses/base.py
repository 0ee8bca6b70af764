"""The Defense base class: four hooks, each doing nothing until a subclass overrides it."""

from dataclasses import dataclass

import numpy as np

from attacks.inputs import window_of_round


@dataclass(frozen=True)
class Analytics:
    """What device analytics publish: per-user counts per window of `window` rounds, and per-round totals."""

    counts: np.ndarray  # (n, W) int64
    window: int
    totals: np.ndarray | None  # (T,) int64, or None when not published


def window_counts(checked_in: np.ndarray, window: int) -> np.ndarray:
    """(n, ceil(T / window)) participation counts from a (T, n) boolean check-in matrix."""
    n_rounds, n_users = checked_in.shape
    n_windows = -(-n_rounds // window)
    counts = np.zeros((n_windows, n_users), dtype=np.int64)
    np.add.at(counts, window_of_round(n_rounds, window), checked_in.astype(np.int64))
    return counts.T


class Defense:
    """A countermeasure. Override any hook; the defaults leave the protocol untouched.

    Hooks run in protocol order each round: `choose_participants`, then
    `transform_update` for every contributing client, then `transform_aggregate`;
    `transform_analytics` runs once at the end on the whole check-in history.
    Every random choice must come from the `rng` passed in.
    """

    name = "none"

    def public_parameters(self) -> dict:
        """What the server (and so an adaptive attacker) knows about this defense."""
        return {}

    def choose_participants(self, selected: np.ndarray, round_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """From the users the protocol selected (bool, n), return (contributing, checked_in) masks."""
        return selected, selected

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A client's update before it enters secure aggregation."""
        return update

    def transform_aggregate(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The round's sum, as the server receives it."""
        return aggregate

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        """Analytics from the (T, n) check-in matrix; by default exact counts every `window` rounds and totals."""
        return Analytics(window_counts(checked_in, window), window, checked_in.sum(axis=1).astype(np.int64))

    def epsilon(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> float:
        """User-level epsilon of the whole run, or NaN where the defense gives no DP guarantee."""
        return float("nan")
