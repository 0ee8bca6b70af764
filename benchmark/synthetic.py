"""Synthetic disaggregation instances: Gaussian updates, Bernoulli participation."""

from dataclasses import dataclass

import numpy as np

from benchmark.observation import window_counts


@dataclass(frozen=True)
class Instance:
    """What the server observes (aggregates, counts, totals) and the truth (participants, updates)."""

    aggregates: np.ndarray  # (T, d) float64
    counts: np.ndarray  # (n, W) int64
    totals: np.ndarray  # (T,) int64
    window: int
    participants: np.ndarray  # (T, n) uint8
    updates: np.ndarray  # (n, d) float64


def make_instance(
    n_users: int,
    n_rounds: int,
    window: int,
    participation: float,
    dim: int | None = None,
    seed: int = 0,
) -> Instance:
    """G ~ N(0, 1) of dimension `dim` (default 1.2 n), each user in each round with probability `participation`."""
    rng = np.random.default_rng(seed)
    dim = dim if dim is not None else int(np.ceil(1.2 * n_users))
    participants = (rng.random((n_rounds, n_users)) < participation).astype(np.uint8)
    updates = rng.standard_normal((n_users, dim))
    return Instance(
        aggregates=participants.astype(np.float64) @ updates,
        counts=window_counts(participants.astype(bool), window),
        totals=participants.sum(axis=1).astype(np.int64),
        window=window,
        participants=participants,
        updates=updates,
    )
