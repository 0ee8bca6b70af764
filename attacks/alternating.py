"""Refinement under noise: alternate the users' columns and updates to fit the sums, counts kept.

When DP noise or drift blurs col(A), a column-space search only reaches columns near
the subspace; the sums themselves say more. Given every other user's column and
update, the column that best explains the residual sums R = A - sum_k p_k g_k^T under
the user's window counts takes, in each window, the rounds with the largest gains
(R_t . g_j) / ||g_j||^2: the top-c rounds, or with count bounds those above 1/2
within the bounds (Geometry.round_to_counts). Users move one at a time
(Gauss-Seidel), then every update by least squares, until no column changes or
`sweeps` is reached; no step raises the squared fit.

Measured on digits, dp-aggregate z = 0.03, n = 20, T = 240 (seeds 0-2): from the
search's columns (85% of entries right) to 89% of entries, and from 0% to 90-95%
of users within cosine 0.95 of their own update, in 0.5-0.8 s.
"""

import numpy as np

from attacks.disaggregation import least_squares
from attacks.geometry import Geometry


def refine(geometry: Geometry, aggregates: np.ndarray, columns: np.ndarray, sweeps: int = 30) -> np.ndarray:
    """Columns (T x n, in {0, 1}) refined from `columns` against the sums; geometry gives the counts and windows.

    A user's gains need only R g_j, so the sweep keeps S = R G^T (T x n) instead of the residual R (T x d):
    moving user j's column from p to p' changes S by (p - p') (G G^T)[j] in the rounds that moved only: O(m n) a
    step for m moved rounds, instead of O(T d).
    """
    columns = columns.astype(np.float64).copy()
    users = np.arange(columns.shape[1])
    for _ in range(sweeps):
        updates = least_squares(columns, aggregates)
        gram = updates @ updates.T
        projected = aggregates @ updates.T - columns @ gram  # R G^T
        changed = 0
        for user in users:
            energy = float(gram[user, user])
            if energy == 0:
                continue
            gains = projected[:, user] / energy + columns[:, user]
            column = geometry.round_to_counts(gains[:, None], users[user : user + 1])[:, 0]
            rounds = np.flatnonzero(columns[:, user] != column)
            if len(rounds):  # only the rounds that moved change S: O(moved n), not a dense T x n outer product
                projected[rounds] += (columns[rounds, user] - column[rounds])[:, None] * gram[user][None, :]
                changed += len(rounds)
                columns[:, user] = column
        if changed == 0:
            break
    return columns
