"""Whether a recovery explains what was observed: the overall fit of the aggregates A by P U.

Each user's column is checked against its own counts as it is found; nothing there compares the whole
of A with P U. Counts that cannot produce the aggregates (all zero against non-zero sums) give columns
that pass every per-user check and a fit of 1: no user of such a recovery may be called `unique`.
"""

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.observation import window_of_round


def check_rounds_explained(aggregates: np.ndarray, counts: np.ndarray, window: int) -> None:
    """BenchmarkError, before any work, when a round has a non-zero aggregate but its window counts no participant."""
    empty = counts.sum(axis=0)[window_of_round(aggregates.shape[0], window)] == 0
    nonzero = np.any(aggregates != 0, axis=1)
    rounds = np.flatnonzero(empty & nonzero)
    if len(rounds):
        raise BenchmarkError(
            f"counts record no participant in the window of round {rounds[0]} ({len(rounds)} such round(s)), "
            "but its aggregate is not zero: the counts cannot explain the aggregates"
        )


def check_some_sum(aggregates: np.ndarray, counts: np.ndarray, aggregates_file: str) -> None:
    """BenchmarkError, before any work, when every aggregate is zero while the counts record participants: the sums
    carry nothing to disaggregate (every user's update would be zero and every participant matrix would fit)."""
    if counts.any() and not aggregates.any():
        raise BenchmarkError(f"aggregates file {aggregates_file} is all zero while the counts record participants: "
                             "there is nothing to disaggregate")


def relative_misfit(aggregates: np.ndarray, participants: np.ndarray, updates: np.ndarray) -> float:
    """||A - P U||_F / ||A||_F (0 when A and P U are both zero).

    Both norms are taken of A and A - P U divided by A's largest magnitude: squares of entries below about 1e-162
    underflow to 0, and aggregates of 1e-170 once gave a misfit of 0 for a wrong recovery."""
    difference = aggregates - participants.astype(np.float64) @ updates
    peak = float(np.max(np.abs(aggregates))) if aggregates.size else 0.0
    if peak == 0.0:
        return 0.0 if not np.any(difference) else float("inf")
    return float(np.linalg.norm(difference / peak)) / float(np.linalg.norm(aggregates / peak))
