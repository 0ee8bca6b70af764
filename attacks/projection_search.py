"""Batched Douglas-Rachford search for binary count-feasible columns inside col(A).

All users advance together as the columns of one matrix, so each iteration is
two dense matrix products shared by every user. The first iterations solve the
convex relaxation (box [0, 1]); the rest use the non-convex projection onto
binary vectors with the right window counts (or counts within their bounds,
when a defense made them inexact). Every candidate is only a
candidate: the caller accepts it when its residual is small enough.

Coupled (exact counts and per-round totals): the searched users' columns must
also sum to `remaining` (the totals minus every other user's column). The
subspace step then projects onto {each column in col(A) with its window sums,
all columns summing to remaining}, one closed form for the whole matrix, and a
column that fits is peeled off at once: remaining shrinks, rounds where it
reaches 0 close for everyone left, and the others go on from where they are.
Measured on make_instance(50, 100, 10, 0.5), the 47 users the first search
left, one run of 20000 iterations: 36 found coupled, 25 uncoupled
(tests/test_disaggregation.py); with the joint stage's restarts, all 50 users
in 7.6 s against 26 in 61 s (benchmarks/disaggregation.py --methods
attack,uncoupled).
"""

import numpy as np

from attacks.geometry import Geometry

# Step size of the relaxed Douglas-Rachford iteration (Elser's RRR: state += beta (P_B(2 P_A - 1) - P_A)); 1 is
# plain Douglas-Rachford. Measured on make_instance(50, 100, 10, 0.5), seeds 0-2, 3000 iterations: 0.5 finds 31
# exact columns where 1 finds 17 (tests/test_disaggregation.py keeps that gain).
RELAXATION = 0.5


def projection_search(
    geometry: Geometry,
    users: np.ndarray,
    tolerance: float,
    iterations: int = 600,
    convex_iterations: int = 100,
    check_every: int = 25,
    patience: int = 20,
    start: np.ndarray | None = None,
    relaxation: float = RELAXATION,
    remaining: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Best rounded column (T x m) and its residual (m) for each user.

    Stops once every user fits within tolerance, or when `patience` checks in a
    row after the convex phase accepted nobody new (the search has stalled).
    `start` (T x m) replaces the uniform starting point (restarts elsewhere find other binary points).
    `remaining` (T,): couple the users through their sum (exact counts only; see the module docstring);
    a column is then accepted only where it fits under what remains. `allowed` (T x m bool): rounds each
    user may take part in (False: known to be 0). `dtype`: the iteration's precision. float64 by default although
    float32 runs the search 1.6x faster under noise at scale (117 -> 73 s at n = 500, T = 6000; every candidate is
    still checked in float64): float32 iterates change with the BLAS thread count (the adaptive attack's
    candidates differed between 1 and 2 threads at n = 100, where float64's agreed; benchmarks/search_step.py),
    and the same inputs must give the same answer on any machine.
    """
    if remaining is not None and not geometry.exact:
        raise ValueError("the coupled search needs exact counts")
    basis = geometry.basis.astype(dtype, copy=False)
    sums = geometry.window_basis
    sums_pinv = np.linalg.pinv(sums).astype(dtype)
    sums = sums.astype(dtype, copy=False)
    low = geometry.counts[users].T.astype(dtype)
    high = geometry.high[users].T.astype(dtype)
    upper = high[geometry.window_index] > 0
    if allowed is not None:
        upper = upper & allowed
    state = (low + high)[geometry.window_index] / (2 * geometry.window) if start is None else start.astype(dtype)
    coupling = _Coupling(basis, sums, sums_pinv, remaining) if remaining is not None else None
    masked = allowed is not None or coupling is not None  # else round_to_counts zeroes the closed rounds itself

    def rounded(values: np.ndarray, open_rounds: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """round_to_counts, taking rounds known to be 0 last."""
        return geometry.round_to_counts(np.where(open_rounds, values, -np.inf) if masked else values, users[columns])

    best = rounded(state, upper, np.arange(len(users)))
    best_residual = geometry.residual(best)
    fits = _accept(best, best_residual, np.arange(len(users)), tolerance, coupling)
    active = np.flatnonzero(~fits)
    state = state[:, active]
    stalled = 0
    for iteration in range(iterations):
        if len(active) == 0 or stalled >= patience:
            break
        coords = basis.T @ state
        window_sums = sums @ coords
        coords -= sums_pinv @ (window_sums - np.clip(window_sums, low[:, active], high[:, active]))
        if coupling is not None:
            coords += coupling.correction(coords)
        on_subspace = basis @ coords
        reflected = 2.0 * on_subspace - state
        open_rounds = upper[:, active] if coupling is None else upper[:, active] & coupling.open_rounds[:, None]
        if iteration < convex_iterations:
            other = np.clip(reflected, 0.0, open_rounds)
        else:
            other = rounded(reflected, open_rounds, active).astype(dtype, copy=False)
        state += relaxation * (other - on_subspace)
        if (iteration + 1) % check_every == 0:
            candidates = rounded(on_subspace, open_rounds, active)
            residual = geometry.residual(candidates)
            better = residual < best_residual[active]
            best[:, active[better]] = candidates[:, better]
            best_residual[active[better]] = residual[better]
            fits = _accept(best, best_residual, active, tolerance, coupling)
            stalled = stalled + 1 if not fits.any() and iteration >= convex_iterations else 0
            active, state = active[~fits], state[:, ~fits]
    return best, best_residual


def _accept(best: np.ndarray, residual: np.ndarray, columns: np.ndarray, tolerance: float, coupling) -> np.ndarray:
    """Which of `columns` are accepted now. Coupled, a fitting column that does not fit under what remains is
    not accepted, and its residual is forgotten (returned residuals at most tolerance mean accepted)."""
    fits = residual[columns] <= tolerance
    if coupling is None or not fits.any():
        return fits
    accepted = coupling.peel(best[:, columns], fits)
    residual[columns[fits & ~accepted]] = np.inf
    return accepted


class _Coupling:
    """The searched users' columns sum to `remaining`: its projection and the peeling of accepted columns."""

    def __init__(self, basis: np.ndarray, sums: np.ndarray, sums_pinv: np.ndarray, remaining: np.ndarray) -> None:
        self.basis = basis
        # directions of col(A)'s coordinates that leave every window sum unchanged
        self.free = np.eye(basis.shape[1]) - sums_pinv @ sums
        self.remaining = np.asarray(remaining, dtype=np.float64).copy()
        self.target = basis.T @ self.remaining

    @property
    def open_rounds(self) -> np.ndarray:
        return self.remaining > 0.5

    def correction(self, coords: np.ndarray) -> np.ndarray:
        """Added to every column's coordinates (r x m, window sums already right): the nearest point whose
        columns sum to `remaining` without changing any window sum."""
        return (self.free @ (self.target - coords.sum(axis=1)))[:, None] / coords.shape[1]

    def peel(self, columns: np.ndarray, fits: np.ndarray) -> np.ndarray:
        """Accept fitting columns in order while they fit under what remains; subtract them; which were accepted."""
        accepted = np.zeros_like(fits)
        for k in np.flatnonzero(fits):
            left = self.remaining - columns[:, k]
            if left.min() >= 0:
                self.remaining = left
                accepted[k] = True
        if accepted.any():
            self.target = self.basis.T @ self.remaining
        return accepted
