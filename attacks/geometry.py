"""What every user's search shares: the subspace col(A), the window structure, the per-window top-c projection."""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from benchmark.observation import window_lengths, window_of_round


@dataclass(frozen=True, eq=False)
class Geometry:
    """An orthonormal basis of the aggregates' column space plus the analytics windows.

    Every participant column p_j lies in col(A) (exactly when updates are fixed,
    approximately under drift or noise) and its window sums lie in
    [counts, counts_high]: equal to the counts unless a defense made them
    inexact (rounded, noised or padded counts) and the attacker knows it.
    """

    basis: np.ndarray  # (T, r) orthonormal
    counts: np.ndarray  # (n, W) int64: each window sum's lower bound (the exact count when counts_high is None)
    window: int
    counts_high: np.ndarray | None = None  # (n, W) int64 upper bounds; None: the counts are exact

    @property
    def exact(self) -> bool:
        return self.counts_high is None

    @property
    def high(self) -> np.ndarray:
        return self.counts if self.counts_high is None else self.counts_high

    @property
    def n_rounds(self) -> int:
        return self.basis.shape[0]

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    @cached_property
    def window_index(self) -> np.ndarray:
        return window_of_round(self.n_rounds, self.window)

    @cached_property
    def window_matrix(self) -> np.ndarray:
        """B (W x T): row w sums the rounds of window w."""
        lengths = window_lengths(self.n_rounds, self.window)
        matrix = np.zeros((len(lengths), self.n_rounds))
        matrix[self.window_index, np.arange(self.n_rounds)] = 1.0
        return matrix

    @cached_property
    def complement(self) -> np.ndarray:
        """An orthonormal basis (T x (T - r)) of the orthogonal complement of col(A)."""
        q, _ = np.linalg.qr(self.basis, mode="complete")
        return q[:, self.rank :]

    @cached_property
    def window_basis(self) -> np.ndarray:
        """B U (W x r): the window sums of the basis, shared by every user's certificate."""
        return self.window_sums(self.basis)

    def window_sums(self, matrix: np.ndarray) -> np.ndarray:
        """B @ matrix without the dense product: sums of each window's rows (W x m)."""
        starts = np.arange(0, self.n_rounds, self.window)
        return np.add.reduceat(matrix, starts, axis=0)

    def fixed_rounds(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """Masks of rounds forced to 0 (window count at most 0) and to 1 (count at least the window length)."""
        lengths = window_lengths(self.n_rounds, self.window)[self.window_index]
        return self.high[user][self.window_index] == 0, self.counts[user][self.window_index] == lengths

    def nonempty(self, columns: np.ndarray, users: np.ndarray) -> np.ndarray:
        """Whether each column has a participation, unless its user's counts allow none at all.

        With count bounds the empty column always fits (it lies in every subspace); it is no answer.
        """
        return (columns.sum(axis=0) > 0) | (self.high[users].sum(axis=1) == 0)

    def residual(self, columns: np.ndarray) -> np.ndarray:
        """Relative distance of each column (T x m) to col(A): 0 for a perfect fit."""
        outside = columns - self.basis @ (self.basis.T @ columns)
        return np.linalg.norm(outside, axis=0) / np.maximum(np.linalg.norm(columns, axis=0), 1.0)

    def round_to_counts(self, scores: np.ndarray, users: np.ndarray) -> np.ndarray:
        """Nearest binary columns with the users' window counts: in each window, the top-c rounds get 1.

        With inexact counts, c is the number of scores above 1/2, clipped to the window's bounds.
        """
        blocks = self.window_blocks(scores, -np.inf)
        ranks = descending_ranks(blocks)
        wanted = self.counts[users].T
        if not self.exact:
            above = (blocks > 0.5).sum(axis=1)
            wanted = np.clip(above, wanted, self.high[users].T)
        binary = ranks < wanted[:, None, :]
        return binary.reshape(-1, binary.shape[2])[: self.n_rounds].astype(np.float64)

    def window_blocks(self, values: np.ndarray, fill: float) -> np.ndarray:
        """(W, window, ...) `values` (T, ...) cut into windows, the last one padded with `fill`."""
        n_windows = -(-self.n_rounds // self.window)
        if n_windows * self.window == self.n_rounds:  # whole windows: a view, nothing to pad
            return values.reshape(n_windows, self.window, *values.shape[1:])
        padded = np.full((n_windows * self.window, *values.shape[1:]), fill, dtype=values.dtype)
        padded[: self.n_rounds] = values
        return padded.reshape(n_windows, self.window, *values.shape[1:])


# Up to this window length, ranking by pairwise comparisons beats a sort along the window axis (a strided axis):
# 3.9x at 5 rounds, 2.5x at 10, 1.3x at 20, even at 40 (T = 12000, 1000 columns; benchmarks/search_step.py).
COMPARE_UP_TO = 24
# ... but few columns are ranked faster by one argsort over contiguous rows and a flat scatter of the ranks: each
# comparison pass costs a few microseconds of call overhead whatever the size, and the coupled restarts of the
# joint stage round a handful to a few dozen columns thousands of times (benchmarks/search_step.py, second table).
SORT_UP_TO_ENTRIES = 8_000


def descending_ranks(blocks: np.ndarray) -> np.ndarray:
    """(W, w, m) each entry's rank within its window (axis 1), largest first, ties by position: what a stable
    argsort of -blocks gives, computed by w passes of comparisons for short windows."""
    length = blocks.shape[1]
    if blocks.size <= SORT_UP_TO_ENTRIES:
        return _sorted_ranks(blocks)
    if length > COMPARE_UP_TO:
        order = np.argsort(-blocks, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(length)[None, :, None], axis=1)
        return ranks
    ranks = np.zeros(blocks.shape, dtype=np.int16)
    for j in range(length):
        other = blocks[:, j : j + 1, :]
        ranks += other > blocks
        ranks[:, j + 1 :, :] += other == blocks[:, j + 1 :, :]
    return ranks


def _sorted_ranks(blocks: np.ndarray) -> np.ndarray:
    """descending_ranks by one stable argsort of each (window, column) as a contiguous row of -blocks."""
    n_windows, length, columns = blocks.shape
    rows = np.negative(blocks.transpose(0, 2, 1)).reshape(-1, length)  # a contiguous copy, one row per window-column
    order = rows.argsort(axis=1, kind="stable")
    order += np.arange(0, rows.size, length)[:, None]  # flat positions
    ranks = np.empty(rows.size, dtype=np.intp)
    ranks[order.ravel()] = np.arange(rows.size) % length
    return ranks.reshape(n_windows, columns, length).transpose(0, 2, 1)


# A singular value counts towards the numerical rank above this share of sigma_1 * max(T, d): below it, rounding.
RANK_TOLERANCE = 1e-10
# The low-rank path sketches A with rank_bound + this many random directions ...
LOW_RANK_OVERSAMPLING = 16
# ... from this seed: its answer does not depend on the draw beyond rounding, as the sketch's residual is checked.
LOW_RANK_SEED = 0
# ... and is tried where the sketch is at most this share of A's smaller side (else the full decomposition is as fast).
LOW_RANK_SHARE = 0.25


def left_singular(aggregates: np.ndarray, rank_bound: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and values of A (T x d); for d > T via a QR of A^T first, much faster when d >> T.

    `rank_bound`: the rank A has when it is what the attack expects (sums of n fixed updates: n). The leading
    directions then come from a seeded sketch of rank_bound + LOW_RANK_OVERSAMPLING directions where it captures A
    whole (benchmarks/left_singular.py): only that many vectors, the values past them 0 (every one of A's lies below
    the numerical-rank threshold there, which the sketch's residual proves); otherwise (noise, drift), and without
    `rank_bound`, every vector of the full decomposition.
    """
    if rank_bound is not None:
        sketched = _low_rank_left_singular(aggregates, rank_bound + LOW_RANK_OVERSAMPLING)
        if sketched is not None:
            return sketched
    if aggregates.shape[1] > aggregates.shape[0]:
        triangular = np.linalg.qr(aggregates.T, mode="r")
        left, singular, _ = np.linalg.svd(triangular.T, full_matrices=False)
        return left, singular
    left, singular, _ = np.linalg.svd(aggregates, full_matrices=False)
    return left, singular


def _low_rank_left_singular(aggregates: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """left_singular from a range sketch A Omega (Omega: d x width, Gaussian) where the sketch captures all of A up to
    the numerical-rank threshold; None where it does not (noise, drift, more directions than `width`) or where the
    sketch would not be much cheaper than the full decomposition."""
    rounds, dimension = aggregates.shape
    if width > LOW_RANK_SHARE * min(rounds, dimension):
        return None
    test = np.random.default_rng(LOW_RANK_SEED).standard_normal((dimension, width))
    basis, _ = np.linalg.qr(aggregates @ test)
    projected = basis.T @ aggregates  # (width, d): A = basis @ projected + residual
    rows = max(1, 2**22 // dimension)  # the residual in slices of ~32 MB, not a second copy of A
    outside = sum(float(np.sum((aggregates[i : i + rows] - basis[i : i + rows] @ projected) ** 2))
                  for i in range(0, rounds, rows))
    left, singular, _ = np.linalg.svd(projected, full_matrices=False)
    if not len(singular) or singular[0] <= 0 or np.sqrt(outside) > 0.5 * rank_threshold(singular[0], aggregates.shape):
        return None
    values = np.zeros(min(rounds, dimension))
    values[: len(singular)] = singular
    return basis @ left, values


def rank_threshold(largest: float, shape: tuple[int, int], tolerance: float = RANK_TOLERANCE) -> float:
    """The singular value below which a direction of a matrix of this shape and sigma_1 counts as rounding."""
    return largest * max(shape) * tolerance


def numerical_rank(singular: np.ndarray, shape: tuple[int, int], tolerance: float = RANK_TOLERANCE) -> int:
    """Singular values above rank_threshold; `tolerance` above RANK_TOLERANCE for matrices of lower precision."""
    if len(singular) == 0 or singular[0] <= 0:
        return 0
    return int(np.sum(singular > rank_threshold(singular[0], shape, tolerance)))


Subspace = tuple[np.ndarray, np.ndarray]  # left_singular(A): computed once per observation, shared by every attack


# Under noise, a coordinate of the sums counts as carrying signal when its variance over rounds exceeds the noise's
# by this many standard errors of a variance estimate (sqrt(2 / (T - 1)) relative, Gaussian rounds).
SIGNAL_STANDARD_ERRORS = 3.0


def noise_variance(aggregates: np.ndarray, n_users: int, singular: np.ndarray) -> float:
    """Per-entry noise variance of the sums, from their energy outside the top-n singular directions.

    Noise of variance s^2 per entry leaves about s^2 (T - n)(d - n) there (measured within 2% of the truth on
    Gaussian updates, 100 users, 1200 rounds, 1200 to 5000 coordinates)."""
    rounds, dimension = aggregates.shape
    if rounds <= n_users or dimension <= n_users:
        return 0.0
    outside = float(np.sum(aggregates * aggregates) - np.sum(singular[:n_users] ** 2))
    return max(outside, 0.0) / ((rounds - n_users) * (dimension - n_users))


def signal_coordinates(aggregates: np.ndarray, n_users: int, singular: np.ndarray) -> np.ndarray:
    """Coordinates whose variance over rounds stands out from the noise's (all, if fewer than 2n do: the top n
    directions of a few more than n coordinates take in their noise whole).

    Under noise added per coordinate (DP on updates or sums), every coordinate's variance over rounds is the
    noise's plus the users' signal there; where updates concentrate on few coordinates (a frozen model with sparse
    features), most carry noise alone, which adds to the top-n subspace and no signal: a frozen LeNet the server
    designed (benchmarks/frozen_model.py), 100 users, 1200 rounds, ldp-gaussian(z=0.01): the true columns' median
    distance to the subspace 0.281 with all 13426 coordinates, 0.199 with the 1156 kept. Where every coordinate
    carries signal (Gaussian updates), all are kept. `singular`: A's singular values (for the noise level).
    """
    rounds = aggregates.shape[0]
    threshold = noise_variance(aggregates, n_users, singular) * (1.0 + SIGNAL_STANDARD_ERRORS * np.sqrt(2.0 / max(rounds - 1, 1)))
    kept = np.flatnonzero(aggregates.var(axis=0) > threshold)
    return kept if len(kept) >= 2 * n_users else np.arange(aggregates.shape[1])


def searched_subspace(aggregates: np.ndarray, n_users: int, noise: bool, full: Subspace | None = None) -> Subspace:
    """left_singular of the sums, restricted under noise to the coordinates that carry signal. `full`:
    left_singular(aggregates), where the caller has it."""
    full = left_singular(aggregates, n_users) if full is None else full
    if not noise:
        return full
    kept = signal_coordinates(aggregates, n_users, full[1])
    return full if len(kept) == aggregates.shape[1] else left_singular(aggregates[:, kept])


def column_space(aggregates: np.ndarray, n_users: int, noise: bool, subspace: Subspace | None = None) -> np.ndarray:
    """Orthonormal basis of col(A): its numerical rank when exact, the top n directions under noise.

    `subspace`: searched_subspace(aggregates, n_users, noise), where the caller has it already (it is the costliest step at
    scale)."""
    left, singular = searched_subspace(aggregates, n_users, noise) if subspace is None else subspace
    rank = min(n_users, len(singular)) if noise else min(numerical_rank(singular, aggregates.shape), n_users)
    return left[:, :rank]
