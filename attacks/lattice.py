"""The lattice stage: participant columns by integer-lattice reduction, where there are few rounds.

Every participant column is an integer point of col(A), so all of them lie in the lattice
Lambda = Z^T & col(A) (rank n), where they are the 0/1 points with their users' window counts. The
per-user integer programs of Lam et al. are market-split-like (dense real equalities over binary
variables): branch and bound stalls on them while lattice reduction does not (Aardal, Hurkens and
Lenstra, 1998-2000). This stage, exact counts only:

1. Lambda, once: LLL of [2^10 I_T | round(1e9 N)], N an orthonormal basis of col(A)'s complement; the
   reduced rows with N^T x = 0 (to 1e-6) are a basis of Lambda. Its cost grows like T^3.3 (0.2 s at
   T = 100, 3 s at T = 200, 11-16 s at T = 300 on one core), hence MAX_ROUNDS;
2. once: Lambda split into Lambda0 (window sums 0) and rows whose window sums V are a basis of the lattice
   of all points' window sums, so counts c in it give a lattice point x_c = (c V^+) rows with those sums
   (windows nobody took part in, or more windows than users, leave V with fewer rows than windows);
3. per user: Kannan's embedding of x_c + Lambda0 (its zero-count and full windows as weighted
   equations): after LLL, a row (x, +-1, 0) with x binary is a column with the user's counts in col(A),
   checked like every candidate (binary, counts, residual);
4. users left: Lambda0's basis is mixed by a seeded random unimodular matrix and reduced again, and a
   different reduced basis finds other users; ATTEMPTS times in all.

Measured on make_instance(n, 2n, 10, 0.5, seed=1), every user handed to the stage: n = 100, 53 users after
step 3 and 100 of 100 after 5 attempts, 10.7 s on a busy core (3 s of it step 1); n = 80 (seed 2) 80 of 80
in 2.4 s. At the density of standard's cells (q = 0.3, seed 1): n = 100, T = 150 (a horizon-3 cell's prefix
attempt), the search 0 of 100, this stage 69 (20 s); T = 200, the search 12, this stage the other 88 (14 s). LLL (python-flint, FLINT's exact-arithmetic fallbacks) is deterministic: the same inputs give the
same answer on any machine, and the seeded mixing is part of the input.
"""

import numpy as np

from attacks.geometry import Geometry

# Lambda's reductions took 12 s at T = 250 (n = 125, both cores busy with other work); beyond, the stage is skipped
MAX_ROUNDS = 250
ATTEMPTS = 8  # reductions of Lambda0 (the first, then re-randomised ones) while users are left
# ... and until this many in a row find nobody: at n = 100, T = 200 (seed 1) the attempts found 53, 30, 6, 6 and 5
# users (an earlier version of the mixing: 53, 19, 15, 5, 6, 0, 1, 1); where the lattice cannot separate the
# users (too few rounds for their density) two barren attempts end the stage
BARREN_ATTEMPTS = 2
MIXING_SEED = 20211  # the stream of the unimodular mixings, one purpose
KERNEL_SCALE = 1e9  # weight of col(A)'s complement in step 1 (1e6 lost rows of Lambda at T = 300)
IDENTITY_SCALE = 1 << 10  # weight of the identity in step 1, far above the rounding of KERNEL_SCALE * N
SPLIT_SCALE = 1 << 20  # weight of the window sums in step 2
FIXED_SCALE = 64  # weight of a user's zero-count and full windows in step 3


def _lll(matrix: np.ndarray) -> np.ndarray:
    import flint

    return np.array(flint.fmpz_mat(matrix.tolist()).lll().tolist(), dtype=np.int64)


class _Lattice:
    """Lambda0's basis and the rows that give each count vector its lattice point (not `ready` when the reductions
    did not give a basis of Lambda, or its window sums have dependent rows)."""

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry
        self.zero_sums = np.zeros((0, geometry.n_rounds), dtype=np.int64)
        self.offsets = np.zeros((0, geometry.n_rounds), dtype=np.int64)
        self.inverse = np.zeros((0, 0))
        self.sums = np.zeros((0, 0), dtype=np.int64)
        basis = self._points()
        if basis is None:
            return
        windows = geometry.window_matrix.astype(np.int64)
        split = _lll(np.hstack([basis, (basis @ windows.T) * SPLIT_SCALE]))
        zero = np.all(split[:, geometry.n_rounds :] == 0, axis=1)
        sums = split[~zero, : geometry.n_rounds] @ windows.T  # a basis of the window sums' lattice (rows)
        if len(sums) == 0 or np.linalg.matrix_rank(sums.astype(np.float64)) < len(sums):
            return
        self.zero_sums, self.offsets = split[zero, : geometry.n_rounds], split[~zero, : geometry.n_rounds]
        self.sums, self.inverse = sums, np.linalg.pinv(sums.astype(np.float64))

    def _points(self) -> np.ndarray | None:
        """A basis of Lambda (rank rows), None when the reduction did not give one."""
        geometry, rounds = self.geometry, self.geometry.n_rounds
        complement = geometry.complement
        reduced = _lll(np.hstack([np.eye(rounds, dtype=np.int64) * IDENTITY_SCALE,
                                  np.rint(KERNEL_SCALE * complement).astype(np.int64)]))
        points = reduced[:, :rounds] // IDENTITY_SCALE
        inside = np.abs(complement.T @ points.T).max(axis=0) <= 1e-6 if complement.shape[1] else np.ones(rounds, bool)
        basis = points[inside & points.any(axis=1)]
        return basis if len(basis) == geometry.rank else None

    @property
    def ready(self) -> bool:
        return len(self.offsets) > 0

    def point(self, counts: np.ndarray) -> np.ndarray | None:
        """A point of Lambda with these window sums (None: no point of Lambda has them)."""
        coefficients = np.rint(counts @ self.inverse).astype(np.int64)
        return coefficients @ self.offsets if np.array_equal(coefficients @ self.sums, counts) else None

    def column(self, user: int) -> np.ndarray | None:
        """Step 3 for one user: a binary point of x_c + Lambda0 off its zero-count and full windows, or None."""
        geometry = self.geometry
        counts = geometry.counts[user]
        offset = self.point(counts)
        if offset is None:
            return None
        zero, one = geometry.fixed_rounds(user)  # rounds of empty and of full windows
        fixed = np.flatnonzero(zero | one)
        target = one[fixed].astype(np.int64)
        rows, rounds = self.zero_sums.shape
        embedded = np.zeros((rows + 1, rounds + 1 + len(fixed)), dtype=np.int64)
        embedded[:rows, :rounds] = self.zero_sums
        embedded[:rows, rounds + 1 :] = FIXED_SCALE * self.zero_sums[:, fixed]
        embedded[rows, :rounds] = offset
        embedded[rows, rounds] = 1
        embedded[rows, rounds + 1 :] = FIXED_SCALE * (offset[fixed] - target)
        for row in _lll(embedded):
            if abs(row[rounds]) == 1 and not row[rounds + 1 :].any():
                candidate = row[:rounds] * row[rounds]
                if np.all((candidate == 0) | (candidate == 1)):
                    return candidate.astype(np.float64)
        return None

    def remix(self, rng: np.random.Generator) -> None:
        """Step 4: another reduced basis of Lambda0, through a random unimodular mixing."""
        rows = len(self.zero_sums)
        if rows < 2:
            return
        mixing = np.eye(rows, dtype=np.int64)
        for _ in range(3 * rows):
            a, b = rng.choice(rows, 2, replace=False)
            mixing[a] += rng.choice((-1, 1)) * mixing[b]
        self.zero_sums = _lll(mixing @ self.zero_sums)


def lattice_columns(geometry: Geometry, users: np.ndarray, tolerance: float) -> dict[int, np.ndarray]:
    """Columns for `users` (exact counts, at most MAX_ROUNDS rounds), each binary with the user's counts and within
    `tolerance` of col(A); users the stage cannot settle are left out."""
    if not geometry.exact or geometry.n_rounds > MAX_ROUNDS or len(users) == 0:
        return {}
    lattice = _Lattice(geometry)
    if not lattice.ready:
        return {}
    rng = np.random.default_rng(MIXING_SEED)
    found: dict[int, np.ndarray] = {}
    left = [int(u) for u in users]
    barren = 0  # attempts in a row that found nobody
    for attempt in range(ATTEMPTS):
        if not left or barren >= BARREN_ATTEMPTS:
            break
        if attempt:
            lattice.remix(rng)
        before = len(left)
        for user in list(left):
            column = lattice.column(user)
            if column is None:
                continue
            sums = geometry.window_sums(column[:, None])[:, 0]
            if np.array_equal(sums, geometry.counts[user]) and geometry.residual(column[:, None])[0] <= tolerance:
                found[user] = column
                left.remove(user)
        barren = barren + 1 if len(left) == before else 0
    return found
