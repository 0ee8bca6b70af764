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
from attacks.search_device import arrays_for

# Step size of the relaxed Douglas-Rachford iteration (Elser's RRR: state += beta (P_B(2 P_A - 1) - P_A)); 1 is
# plain Douglas-Rachford. Measured on make_instance(50, 100, 10, 0.5), seeds 0-2, 3000 iterations: 0.5 finds 31
# exact columns where 1 finds 17 (tests/test_disaggregation.py keeps that gain).
RELAXATION = 0.5
# Under noise (no column fits exactly) the searches stop after this many checks past the convex phase in which no
# user's best residual fell. On standard's synthetic-1000 cell under ldp-gaussian(z=1) (seed 0) the best residuals
# stood at 0.813 (tolerance 0.35) from check 2 to check 9, 40 s a check on one core, when I stopped it (the true
# columns lay farther from col(A), 0.95, than those candidates); on make_instance(200, 2400, 10, 0.1) with
# Gaussian noise of std 0.5 to 5 on the sums, no best residual fell after check 2 of 24. Where searches do
# improve, they improve at almost every check: in 12 noise-mode tasks of standard's 100-user cells (DP defenses,
# horizon 12, 2026-12-02) the longest run of checks without a lower residual before a later one was 4
# (dp-sgd(z=0.01), designed cell, seed 1, the 300-round prefix: lower at checks 1 to 11 and 16), and the
# full-length searches that improved nothing after check 1 return the same candidates when stopped here.
NOISE_PROGRESS_CHECKS = 8


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
    device: str = "cpu",
    progress_patience: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best rounded column (T x m) and its residual (m) for each user.

    Stops once every user fits within tolerance, or when `patience` checks in a
    row after the convex phase accepted nobody new (the search has stalled), or,
    with `progress_patience`, when that many checks in a row after the convex phase
    lowered no user's best residual (its candidates stopped improving; see
    NOISE_PROGRESS_CHECKS).
    `start` (T x m) replaces the uniform starting point (restarts elsewhere find other binary points).
    `remaining` (T,): couple the users through their sum (exact counts only; see the module docstring);
    a column is then accepted only where it fits under what remains. `allowed` (T x m bool): rounds each
    user may take part in (False: known to be 0). `dtype`: the iteration's precision. float64 by default although
    float32 runs the search 1.6x faster under noise at scale (117 -> 73 s at n = 500, T = 6000; every candidate is
    still checked in float64): float32 iterates change with the BLAS thread count (the adaptive attack's
    candidates differed between 1 and 2 threads at n = 100, where float64's agreed; benchmarks/search_step.py),
    and the same inputs must give the same answer on any machine. `device`: "cpu" (numpy, the reference) or a
    torch device such as "cuda" for the iterations (attacks/search_device.py).
    """
    if remaining is not None and not geometry.exact:
        raise ValueError("the coupled search needs exact counts")
    ops = arrays_for(geometry, device, dtype)
    step = _SubspaceStep(geometry, ops)
    low = geometry.counts[users].T.astype(dtype)
    high = geometry.high[users].T.astype(dtype)
    upper = high[geometry.window_index] > 0
    if allowed is not None:
        upper = upper & allowed
    state = (low + high)[geometry.window_index] / (2 * geometry.window) if start is None else start.astype(dtype)
    coupling = _Coupling(geometry.basis, remaining) if remaining is not None else None
    masked = allowed is not None or coupling is not None  # else round_to_counts zeroes the closed rounds itself

    best = ops.numpy(ops.round(ops.asarray(state), ops.asarray(upper) if masked else None, users, np.float64))
    best_residual = geometry.residual(best)
    fits = _accept(best, best_residual, np.arange(len(users)), tolerance, coupling)
    active = np.flatnonzero(~fits)
    state, low, high, upper = (ops.asarray(a) for a in (state[:, active], low, high, upper))
    stalled = still = 0
    bounds = None  # the active users' bounds, rebuilt only when a check changes who is active or what remains
    for iteration in range(iterations):
        if len(active) == 0 or stalled >= patience or (progress_patience is not None and still >= progress_patience):
            break
        if bounds is None:
            bounds = _ActiveBounds(ops, active, users, low, high, upper, coupling)
        on_subspace = step(state, bounds.low, bounds.high, bounds.target)
        reflected = 2.0 * on_subspace - state
        if iteration < convex_iterations:
            other = ops.box(reflected, bounds.open_rounds)
        else:
            other = ops.round(reflected, bounds.open_rounds if masked else None, bounds.users, dtype)
        state += relaxation * (other - on_subspace)
        if (iteration + 1) % check_every == 0:
            candidates = ops.round(on_subspace, bounds.open_rounds if masked else None, bounds.users, dtype)
            residual = ops.residual(candidates)
            better = residual < best_residual[active]
            best[:, active[better]] = ops.numpy(candidates[:, ops.asarray(np.flatnonzero(better))])
            best_residual[active[better]] = residual[better]
            fits = _accept(best, best_residual, active, tolerance, coupling)
            stalled = stalled + 1 if not fits.any() and iteration >= convex_iterations else 0
            still = still + 1 if not better.any() and iteration >= convex_iterations else 0
            if fits.any():
                active, state, bounds = active[~fits], state[:, ops.asarray(np.flatnonzero(~fits))], None
    return best, best_residual


class _ActiveBounds:
    """What the iterations of the users still searched share until the next accepted column: their window-count
    bounds, the rounds open to them (their own, and where the coupling leaves anything) and the coupling target."""

    def __init__(self, ops, active: np.ndarray, users: np.ndarray, low, high, upper, coupling) -> None:
        columns = ops.asarray(active)
        self.users = users[active]
        self.low, self.high = low[:, columns], high[:, columns]
        self.open_rounds = upper[:, columns]
        self.target = None
        if coupling is not None:
            self.open_rounds = self.open_rounds & ops.asarray(coupling.open_rounds)[:, None]
            self.target = ops.asarray(coupling.target)


def _accept(best: np.ndarray, residual: np.ndarray, columns: np.ndarray, tolerance: float, coupling) -> np.ndarray:
    """Which of `columns` are accepted now. Coupled, a fitting column that does not fit under what remains is
    not accepted, and its residual is forgotten (returned residuals at most tolerance mean accepted)."""
    fits = residual[columns] <= tolerance
    if coupling is None or not fits.any():
        return fits
    accepted = coupling.peel(best[:, columns], fits)
    residual[columns[fits & ~accepted]] = np.inf
    return accepted


class _SubspaceStep:
    """Projects iterates (T x m) onto {x in col(A) : window sums within [low, high]}, each column's nearest such
    point where the bounds are met (the minimum-norm change of its window sums inside col(A) otherwise); with a
    coupling target (U^T remaining), also onto columns that sum to `remaining`, without changing any window sum.

    Through col(A)'s basis (r coordinates per column) or, where its orthogonal complement is thinner (T - r < r),
    in round space through the complement: two products with T x (T - r) instead of T x r. 500 columns, n = 1000,
    10% a round: 25.7 -> 17.1 ms a step at T = 1500, 18.9 -> 5.3 ms at T = 1100, outputs equal to 6e-15
    (benchmarks/search_step.py --only-subspace). Its matrices live on the backend `ops` (attacks/search_device.py).
    """

    def __init__(self, geometry: Geometry, ops) -> None:
        sums = geometry.window_basis  # B U (W x r)
        pinv = np.linalg.pinv(sums)
        self.ops, self.thin = ops, geometry.n_rounds - geometry.rank < geometry.rank
        self.basis = ops.asarray(geometry.basis)
        self.free = ops.asarray(np.eye(geometry.rank) - pinv @ sums)  # coordinates that keep every window sum
        if self.thin:
            self.complement = ops.asarray(geometry.complement)
            self.lift = ops.asarray(geometry.basis @ pinv)  # U (BU)^+ (T x W): window-sum changes inside col(A)
        else:
            self.sums, self.pinv = ops.asarray(sums), ops.asarray(pinv)

    def __call__(self, state, low, high, target=None):
        ops = self.ops
        if self.thin:
            inside = state - self.complement @ (self.complement.T @ state)
            window_sums = ops.window_sums(inside)
            inside -= self.lift @ (window_sums - ops.clip(window_sums, low, high))
            if target is not None:
                total = self.basis.T @ inside.sum(axis=1)
                inside += (self.basis @ (self.free @ (target - total)))[:, None] / inside.shape[1]
            return inside
        coords = self.basis.T @ state
        window_sums = self.sums @ coords
        coords -= self.pinv @ (window_sums - ops.clip(window_sums, low, high))
        if target is not None:
            coords += (self.free @ (target - coords.sum(axis=1)))[:, None] / coords.shape[1]
        return self.basis @ coords


class _Coupling:
    """The searched users' columns sum to `remaining`: its target coordinates and the peeling of accepted columns."""

    def __init__(self, basis: np.ndarray, remaining: np.ndarray) -> None:
        self.basis = basis
        self.remaining = np.asarray(remaining, dtype=np.float64).copy()
        self.target = basis.T @ self.remaining

    @property
    def open_rounds(self) -> np.ndarray:
        return self.remaining > 0.5

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
