"""Checks on what the server observed, so that a bad file gives one clear line, not a traceback."""

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.observation import MAX_MAGNITUDE, window_lengths, window_sums


def totals_agree(totals: np.ndarray, counts: np.ndarray, window: int) -> bool:
    """Whether per-round totals, summed over each window, equal the users' summed counts there."""
    per_window = window_sums(np.asarray(totals, dtype=np.int64), window)
    return len(per_window) == counts.shape[1] and bool(np.array_equal(per_window, counts.sum(axis=0)))


def check_counts(counts: np.ndarray, n_rounds: int, window: int) -> np.ndarray:
    """Validate per-user window counts for `n_rounds` rounds; int64 (n x W)."""
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise BenchmarkError(f"counts must be a non-empty 2-D array (users x windows), got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.integer):
        raise BenchmarkError(f"counts must be an integer array, got dtype {counts.dtype}")
    lengths = window_lengths(n_rounds, int(window))
    if counts.shape[1] != len(lengths):
        raise BenchmarkError(
            f"counts have {counts.shape[1]} windows but {n_rounds} rounds with window {window} make {len(lengths)}"
        )
    if counts.min() < 0:
        raise BenchmarkError("counts contain a negative participation count")
    over = counts > lengths[None, :]
    if over.any():
        user, win = np.argwhere(over)[0]
        raise BenchmarkError(
            f"user {user} has count {counts[user, win]} in window {win}, which has only {lengths[win]} rounds"
        )
    return counts.astype(np.int64)


def check_observation(
    aggregates: np.ndarray,
    counts: np.ndarray,
    window: int,
    totals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and convert to (float64 T x d, int64 n x W, int64 T or None)."""
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise BenchmarkError(f"window must be a positive integer, got {window!r}")
    if aggregates.ndim != 2 or aggregates.shape[0] == 0 or aggregates.shape[1] == 0:
        raise BenchmarkError(f"aggregates must be a non-empty 2-D array (rounds x dimension), got shape {aggregates.shape}")
    if not np.issubdtype(aggregates.dtype, np.floating) and not np.issubdtype(aggregates.dtype, np.integer):
        raise BenchmarkError(f"aggregates must be numeric, got dtype {aggregates.dtype}")
    if not np.all(np.isfinite(aggregates)):
        raise BenchmarkError("aggregates contain NaN or infinite values")
    largest = float(np.abs(aggregates).max())
    if largest > MAX_MAGNITUDE:
        raise BenchmarkError(
            f"aggregates reach {largest:.3g} in magnitude, beyond {MAX_MAGNITUDE:.0e}: products of them would overflow; rescale them"
        )
    n_rounds = aggregates.shape[0]
    counts = check_counts(counts, n_rounds, window)
    if totals is not None:
        if totals.ndim != 1 or totals.shape[0] != n_rounds:
            raise BenchmarkError(f"totals must have one entry per round ({n_rounds}), got shape {totals.shape}")
        if not np.issubdtype(totals.dtype, np.integer):
            raise BenchmarkError(f"totals must be an integer array, got dtype {totals.dtype}")
        if totals.min() < 0 or totals.max() > counts.shape[0]:
            raise BenchmarkError(f"totals must lie between 0 and the number of users ({counts.shape[0]})")
        if not totals_agree(totals, counts, int(window)):
            raise BenchmarkError("totals disagree with counts: their sums over a window differ")
        totals = totals.astype(np.int64)
    return aggregates.astype(np.float64), counts, totals
