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


def relative_misfit(aggregates: np.ndarray, participants: np.ndarray, updates: np.ndarray) -> float:
    """||A - P U||_F / ||A||_F (0 when A and P U are both zero)."""
    scale = float(np.linalg.norm(aggregates))
    error = float(np.linalg.norm(aggregates - participants.astype(np.float64) @ updates))
    if scale == 0.0:
        return 0.0 if error == 0.0 else float("inf")
    return error / scale
