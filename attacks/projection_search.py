"""Batched Douglas-Rachford search for binary count-feasible columns inside col(A).

All users advance together as the columns of one matrix, so each iteration is
two dense matrix products shared by every user. The first iterations solve the
convex relaxation (box [0, 1]); the rest use the non-convex projection onto
binary vectors with the right window counts (or counts within their bounds,
when a defense made them inexact). Every candidate is only a
candidate: the caller accepts it when its residual is small enough.
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
) -> tuple[np.ndarray, np.ndarray]:
    """Best rounded column (T x m) and its residual (m) for each user.

    Stops once every user fits within tolerance, or when `patience` checks in a
    row after the convex phase accepted nobody new (the search has stalled).
    `start` (T x m) replaces the uniform starting point (restarts elsewhere find other binary points).
    """
    basis = geometry.basis
    sums = geometry.window_basis
    sums_pinv = np.linalg.pinv(sums)
    low = geometry.counts[users].T.astype(np.float64)
    high = geometry.high[users].T.astype(np.float64)
    upper = (high[geometry.window_index] > 0).astype(np.float64)
    state = (low + high)[geometry.window_index] / (2 * geometry.window) if start is None else start.astype(np.float64)
    best = geometry.round_to_counts(state, users)
    best_residual = geometry.residual(best)
    active = np.flatnonzero(best_residual > tolerance)
    state = state[:, active]
    stalled = 0
    for iteration in range(iterations):
        if len(active) == 0 or stalled >= patience:
            break
        coords = basis.T @ state
        window_sums = sums @ coords
        coords -= sums_pinv @ (window_sums - np.clip(window_sums, low[:, active], high[:, active]))
        on_subspace = basis @ coords
        reflected = 2.0 * on_subspace - state
        if iteration < convex_iterations:
            other = np.clip(reflected, 0.0, upper[:, active])
        else:
            other = geometry.round_to_counts(reflected, users[active])
        state += relaxation * (other - on_subspace)
        if (iteration + 1) % check_every == 0:
            candidates = geometry.round_to_counts(on_subspace, users[active])
            residual = geometry.residual(candidates)
            better = residual < best_residual[active]
            best[:, active[better]] = candidates[:, better]
            best_residual[active[better]] = residual[better]
            keep = best_residual[active] > tolerance
            stalled = stalled + 1 if keep.all() and iteration >= convex_iterations else 0
            active, state = active[keep], state[:, keep]
    return best, best_residual
