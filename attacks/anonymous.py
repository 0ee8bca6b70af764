"""Anonymous disaggregation: binary vectors of col(A) found without any participation counts.

Without analytics nothing names a column, but the columns of P are still, typically,
the only binary vectors of col(A) (a sum of two users' columns is binary only when
they never share a round). A count-free Douglas-Rachford search finds them: one
start per round t (the projection of e_t onto col(A), round t pinned to 1), all
starts advancing together as the columns of one matrix, alternating the projection
onto col(A) with the rounding to {0, 1}. Seeded restarts perturb the starts until
`patience` restarts in a row find nothing new. The work is bounded by iteration
and restart counts, never by the clock, so the answer is the same on every machine.

Measured (n = 20, T = 60, participation 0.3, d = 200, 2 cores): 19-20 of the 20
true columns in 0.1-0.2 s, with at most two spurious binary vectors, which are
sums of found columns and are dropped. At n = 100, T = 1200, participation 0.3
(the standard suite's longest horizon; benchmark.synthetic, seed 0) the relaxed step
(RELAXATION = 0.5) finds 10 of the 100 columns in 1.6 s where plain Douglas-Rachford
found none. Those searches were too short, not hopeless: the same instance gives 42, 64, 87 and 91 columns
with sweeps of 3000 (work 1e11), 1000 (1e11), 3000 (3e11) and 5000 iterations (5e11; 30 s on 2 cores). Where the
short sweeps and the named attack leave col(A) without a full set of columns (always, where no counts are
published: this search is then the only attack) the long ones run too (ALONE; attacks/recovery.py); at T = 600
they find 13 of 100, at T = 300 none.

Starts from every round find the columns most rounds lead to, again and again: of the 200 to 400 anchored starts the
long sweeps afford at T = 1200, none led to the last 8 columns. Targeted sweeps start in the part of col(A) that no
found column spans (the projection of e_t onto it, round t pinned to 1) and iterate in all of col(A), so each start
leads away from what is in hand; a round of them (1000 iterations, work 5e10) repeats, beside every column found so
far, until it finds nothing new. Measured (seed 0, one core): T = 1200, 91 columns -> 95 -> 100 in 7.5 s; T = 2400,
71 -> 84 -> 91 -> 98 -> 100 in 21.5 s; T = 600, 13 -> 14 (there too few columns are in hand to exclude anything).
"""

from dataclasses import dataclass

import numpy as np

from attacks.geometry import numerical_rank
from attacks.projection_search import RELAXATION


# A start whose step moved no entry by this much sits at a fixed point (its projection binary to within it): the
# sweep drops it, as every later iteration would return the same vector (n = 100, T = 1200: 15 of a long sweep's 17
# starts get there, most by iteration 1500 of 5000).
CONVERGED = 1e-9
EXACT_RESIDUAL = 1e-6  # relative distance to col(A) below which a binary vector lies in it (exact sums)
# Floating-point operations the whole search may spend (about 10 s on one core): at n = 20, T = 60 every round
# anchors a start in every restart; at paper scale (n = 1000, T = 1500) a seeded sample of a few rounds does.
WORK_LIMIT = 2e10
# Where the search is the only attack (no counts published): longer sweeps and more work (module docstring).
ALONE_ITERATIONS = 5000
ALONE_WORK_LIMIT = 5e11
# Targeted sweeps (module docstring): iterations and work of one round of them, and how many rounds at most (two to four
# were needed at n = 100, T = 1200 and 2400).
TARGETED_ITERATIONS = 1000
TARGETED_WORK_LIMIT = 5e10
TARGETED_ROUNDS = 8


@dataclass(frozen=True)
class Candidates:
    """Distinct binary vectors found in col(A), smallest support first."""

    columns: np.ndarray  # (T, k) float64 in {0, 1}
    residual: np.ndarray  # (k,) relative distance of each to col(A)


def residuals(basis: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Relative distance of each column (T x m) to span(basis)."""
    outside = columns - basis @ (basis.T @ columns)
    return np.linalg.norm(outside, axis=0) / np.maximum(np.linalg.norm(columns, axis=0), 1.0)


def _sweep(
    basis: np.ndarray, rng: np.random.Generator, iterations: int, jitter: float, check_every: int, max_anchors: int,
    tolerance: float, starts: np.ndarray,
) -> np.ndarray:
    """One Douglas-Rachford sweep from (at most `max_anchors`, a seeded sample of) the rounds' starts; returns the
    distinct rounded iterates checked that lie within `tolerance` of span(basis) (T x m): keeping every iterate
    instead held T x anchors x iterations / check_every values (3.7 GB at 4 users, 600 rounds, long sweeps)."""
    n_rounds = basis.shape[0]
    scale = np.einsum("ij,ij->i", starts, starts)
    anchors = np.flatnonzero(scale > 1e-9)  # a round outside every user's column (empty sum) anchors nothing
    if len(anchors) > max_anchors:
        anchors = np.sort(rng.choice(anchors, size=max_anchors, replace=False))
    state = starts @ starts[anchors].T / scale[anchors][None, :]
    state = state + jitter * rng.standard_normal(state.shape)
    columns = np.arange(len(anchors))
    seen = np.zeros((n_rounds, 0))
    for iteration in range(iterations):
        if state.shape[1] == 0:
            break
        on_subspace = basis @ (basis.T @ state)
        rounded = (2.0 * on_subspace - state > 0.5).astype(np.float64)
        rounded[anchors, columns] = 1.0
        step = rounded - on_subspace
        state += RELAXATION * step
        if (iteration + 1) % check_every == 0:
            checked = (on_subspace > 0.5).astype(np.float64)
            fitting = checked[:, residuals(basis, checked) <= tolerance]
            if fitting.shape[1]:
                seen = distinct_columns(np.hstack([seen, fitting]))
            moving = np.abs(step).max(axis=0) >= CONVERGED
            if not moving.all():  # fixed points: their checked vector is in `seen` and stays what it is
                state, anchors = state[:, moving], anchors[moving]
                columns = np.arange(len(anchors))
    return seen


def distinct_columns(columns: np.ndarray) -> np.ndarray:
    """The distinct non-empty binary columns, in np.unique(..., axis=1)'s lexicographic order. Each column's bytes are
    compared as one value: np.unique(axis=1) compares a structured type of T fields, 15.8 against 0.63 ms for 300
    columns of 1200 rounds, and the long sweeps call this at every check (52 of 88 s of them at n = 100, T = 1200)."""
    nonempty = columns[:, columns.sum(axis=0) > 0]
    if nonempty.shape[1] == 0:
        return nonempty
    rows = np.ascontiguousarray(nonempty.astype(np.uint8).T)
    as_bytes = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    return np.unique(as_bytes).view(np.uint8).reshape(-1, rows.shape[1]).T.astype(np.float64)


def drop_composites(columns: np.ndarray) -> np.ndarray:
    """Drop every column that is the sum of other found columns whose supports lie inside its own."""
    keep = np.ones(columns.shape[1], dtype=bool)
    inside = (columns.T @ (1.0 - columns)) == 0  # inside[a, b]: support of a within support of b
    np.fill_diagonal(inside, False)
    for k in range(columns.shape[1]):
        parts = np.flatnonzero(inside[:, k])
        if len(parts) > 1 and np.array_equal(columns[:, parts].sum(axis=1), columns[:, k]):
            keep[k] = False
    return columns[:, keep]


# An iteration costs its two products, 4 r operations per entry of the T x anchors state, plus elementwise passes
# over the state, which dominate where col(A) has few dimensions: counted as this many operations per entry at least
# (at 4 users and 600 rounds, counting the products alone, the long sweeps took 66 s).
ELEMENTWISE_FLOOR = 64


def anchor_work(basis: np.ndarray, iterations: int) -> float:
    """Operations of one anchored start over a sweep of `iterations`."""
    return float(iterations) * basis.shape[0] * max(4 * basis.shape[1], ELEMENTWISE_FLOOR)


def long_sweeps_reach(basis: np.ndarray, starts: float = 1.0) -> bool:
    """Whether the long sweeps' work affords at least `starts` anchored starts per dimension of col(A): at n = 100,
    T = 1200 it affords 208 (and found 91 columns); at n = 1000, T = 12000 two, which could find two columns
    in a minute, so they are not run there."""
    return ALONE_WORK_LIMIT / anchor_work(basis, ALONE_ITERATIONS) >= starts * basis.shape[1]


def targeted_reach(basis: np.ndarray, missing: int) -> bool:
    """Whether a round of targeted sweeps affords a start for each of `missing` dimensions: at n = 100 it affords 104
    at T = 1200 and 26 at T = 4800; at n = 1000, T = 12000 one."""
    return TARGETED_WORK_LIMIT / anchor_work(basis, TARGETED_ITERATIONS) >= missing


def complement(basis: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the part of span(basis) orthogonal to `columns` (T x k, inside it)."""
    left, singular, _ = np.linalg.svd(basis.T @ columns, full_matrices=True)
    return basis @ left[:, numerical_rank(singular, (basis.shape[1], columns.shape[1])):]


def settled_vectors(basis: np.ndarray, columns: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Binary vectors of col(A) (exact sums) found with the per-round totals, beside `columns` (T x k, in hand).

    Totals are every user's columns summed (padded check-ins only add to them), so a round whose total the columns in
    hand already reach holds none of the missing users: the missing columns lie in the part of col(A) that is 0 on
    those rounds, of far fewer dimensions, where the search finds them. Empty where that part is all of col(A), or
    where the columns in hand exceed a total (one of them is no single user's). Measured on `totals-only`, 100 users
    with synthetic updates, 1200 rounds (30% a round): the count-free search finds 92 columns; the 60 rounds they
    settle leave a 40-dimensional part, where the search finds the other 8 in 10 s.
    """
    rest = totals - columns.sum(axis=1)
    settled = rest == 0
    if rest.min(initial=0) < 0 or not settled.any():
        return np.zeros((basis.shape[0], 0))
    _, singular, right = np.linalg.svd(basis[settled], full_matrices=True)
    rank = numerical_rank(singular, (int(settled.sum()), basis.shape[1]))
    if rank == 0:
        return np.zeros((basis.shape[0], 0))
    part, _ = np.linalg.qr(basis @ right[rank:].T)
    found = binary_vectors(part).columns
    if found.shape[1] < part.shape[1] and long_sweeps_reach(part):
        found = distinct_columns(np.hstack([found, binary_vectors(part, iterations=ALONE_ITERATIONS,
                                                                  work_limit=ALONE_WORK_LIMIT).columns]))
    return found


def binary_vectors(
    basis: np.ndarray,
    tolerance: float = EXACT_RESIDUAL,
    seed: int = 0,
    iterations: int = 200,
    max_restarts: int = 12,
    patience: int = 3,
    jitter: float = 0.05,
    check_every: int = 10,
    gap: float | None = None,
    work_limit: float = WORK_LIMIT,
    starts: np.ndarray | None = None,
) -> Candidates:
    """Binary vectors within `tolerance` of span(basis) (T x r orthonormal: col(A), or its top n directions under
    noise), found without counts.

    Under noise (`gap`), true columns sit far closer to the subspace than any other binary vector (measured
    at a tiny drift: 1e-4 to 8e-4 against 0.14 and up), so only candidates within `gap` times the best
    residual are kept, at most 2 r of them. `work_limit`: floating-point operations for all sweeps together,
    which bounds how many rounds anchor a start.
    """
    rng = np.random.default_rng(seed)
    max_anchors = max(1, int(work_limit / max_restarts / anchor_work(basis, iterations)))
    found, fit = np.zeros((basis.shape[0], 0)), np.zeros(0)
    limit = 2 * basis.shape[1]
    quiet = 0
    for _ in range(max_restarts):
        if quiet >= patience or basis.shape[1] == 0:
            break
        tried = _sweep(basis, rng, iterations, jitter, check_every, max_anchors, tolerance,
                       basis if starts is None else starts)
        before = {column.tobytes() for column in found.astype(np.uint8).T}
        merged = distinct_columns(np.hstack([found, tried]))
        residual = residuals(basis, merged)
        order = np.argsort(residual, kind="stable")
        order = order[residual[order] <= tolerance][:limit]
        found, fit = merged[:, order], residual[order]
        quiet = quiet + 1 if {column.tobytes() for column in found.astype(np.uint8).T} == before else 0
    if gap is not None and len(fit):
        found = found[:, fit <= gap * max(fit[0], EXACT_RESIDUAL)]
    found = drop_composites(found)
    found = found[:, np.argsort(found.sum(axis=0), kind="stable")]
    return Candidates(found, residuals(basis, found))
