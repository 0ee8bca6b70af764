"""One HiGHS model shared by every user: the LP relaxation of "binary p in col(A) with these window sums".

Rows are N^T x = 0 (N an orthonormal basis of col(A)'s complement), B x in
[low, high] (window sums) and sum(x) >= 1 when the user took part at all;
columns are the T rounds. Users differ only in row bounds (their counts) and
column bounds (rounds fixed to 0 or 1), so the model is built once and
re-solved user after user from the previous basis (warm-started simplex).
Every limit that decides an answer is a work limit (simplex iterations,
branch-and-bound nodes, HiGHS's limit checks), never a clock: the same inputs
give the same answers on any machine. A clock limit exists only as a safety
net, and it says when it bit.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import highspy
import numpy as np

# An entry within this of 0 or 1 counts as integral.
INTEGRAL = 1e-6
# An integer program's simplex iteration is charged as this many LP iterations on the same model: its cuts,
# presolve and node bookkeeping come on top (measured: 4.5e7 entry-iterations a second in integer programs of
# 10000 and 60000 entries, 1.5e8 to 3.6e8 in LPs of 60000 to 1.3 million entries)
INTEGER_ITERATION_COST = 4
# A maximal L1 distance below this proves that no other binary point exists (each lies at distance >= 1).
UNIQUE_BELOW = 0.999


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """highspy prints a banner from C++ straight to file descriptor 1; keep it out of tables and JSON on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@dataclass(frozen=True)
class Limits:
    """Work limits (they decide answers) and the clock safety net (it only stops runaway solves, and says so)."""

    # per LP solve; HiGHS ignores it in integer programs (measured: 8632 iterations under limits of 1000 and 3000)
    simplex_iterations: int = 20_000
    nodes: int = 200  # branch-and-bound nodes per integer program
    # HiGHS's limit checks per integer program, counted by its interrupt callback: they come at fixed points of
    # its work (each cut round, node and heuristic), so this bounds a root's cuts and heuristics, which neither
    # limit above reaches, the same on any machine
    checks: int = 200
    seconds: float = 60.0  # safety net per solve


@dataclass(frozen=True)
class UserBounds:
    """What one user's program changes in the shared model."""

    low: np.ndarray  # (W,) window sums at least
    high: np.ndarray  # (W,) window sums at most
    lower: np.ndarray  # (T,) rounds fixed to 1 have 1
    upper: np.ndarray  # (T,) rounds fixed to 0 have 0


@dataclass(frozen=True)
class Answer:
    status: str  # "optimal", "infeasible", "limit" (work limit) or "clock" (the safety net bit)
    x: np.ndarray | None
    nodes: int = 0  # branch-and-bound nodes spent (integer programs)
    iterations: int = 0  # simplex iterations spent (an integer program's: all its nodes, cuts and heuristics)
    # iterations x the nonzero entries of the model they ran on (x INTEGER_ITERATION_COST in an integer
    # program): the unit of the joint stage's lp_work, as an iteration's cost grows with the model (8.6 ms on
    # 1100 x 1200 dense rows, about 0.2 ms on 230 x 300)
    work: int = 0


def _highs(limits: Limits) -> highspy.Highs:
    with quiet_stdout():
        model = highspy.Highs()
    for name, value in (
        ("output_flag", False),
        ("threads", 1),
        ("random_seed", 0),
        ("presolve", "off"),
        ("simplex_iteration_limit", int(limits.simplex_iterations)),
        ("mip_max_nodes", int(limits.nodes)),
        ("time_limit", float(max(limits.seconds, 0.0))),
    ):
        model.setOptionValue(name, value)
    return model


def _integer_options(model: highspy.Highs, limits: Limits) -> None:
    """Options of every integer program: presolve, and the check cap through an interrupt callback.

    Strong branching and the sub-MIP heuristics (RINS, RENS) run for seconds between two limit checks (measured
    on an integer program of standard's horizon-3 cells under rounded counts: 15 s of strong branching and 4 to 8
    s per sub-MIP at the root); without them the time between checks stays near 0.1 s, so the check cap bounds
    time as well as work (that program: 45 s to its node limit, 14 s to 200 checks, same answer).
    """
    model.setOptionValue("presolve", "on")  # integer programs gain from it (about 1.5x at n = 50, T = 100)
    model.setOptionValue("mip_pscost_minreliable", 0)  # branch on pseudo-costs alone: no strong branching
    model.setOptionValue("mip_heuristic_run_rins", False)
    model.setOptionValue("mip_heuristic_run_rens", False)
    checks = [0]

    def count(kind, message, data_out, data_in, user_data) -> None:  # noqa: ARG001 - HiGHS's callback signature
        checks[0] += 1
        if checks[0] >= limits.checks:
            data_in.user_interrupt = True

    model.setCallback(count, None)
    model.startCallback(highspy.cb.HighsCallbackType.kCallbackMipInterrupt)


def _status(model: highspy.Highs, x: np.ndarray | None) -> str:
    status = model.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return "infeasible"
    if status == highspy.HighsModelStatus.kTimeLimit:
        return "clock"
    if status == highspy.HighsModelStatus.kOptimal and x is not None:
        return "optimal"
    return "limit"


def _iterations(model: highspy.Highs) -> int:
    return max(int(model.getInfo().simplex_iteration_count), 0)


def integral(x: np.ndarray) -> bool:
    return bool(np.all(np.minimum(np.abs(x), np.abs(1.0 - x)) <= INTEGRAL))


class SharedProgram:
    """The LP {N^T x = 0, low <= B x <= high, sum x >= 1, lower <= x <= upper}, warm-started from user to user."""

    def __init__(self, complement: np.ndarray, window_matrix: np.ndarray, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.n_rounds = window_matrix.shape[1]
        rows = np.vstack([complement.T, window_matrix, np.ones((1, self.n_rounds))])
        self.model = _highs(limits)
        lp = highspy.HighsLp()
        lp.num_col_ = self.n_rounds
        lp.num_row_ = rows.shape[0]
        lp.col_cost_ = np.zeros(self.n_rounds)
        lp.col_lower_ = np.zeros(self.n_rounds)
        lp.col_upper_ = np.ones(self.n_rounds)
        lp.row_lower_ = np.zeros(rows.shape[0])
        lp.row_upper_ = np.zeros(rows.shape[0])
        lp.row_upper_[-1] = highspy.kHighsInf
        nonzero = rows != 0
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32)
        lp.a_matrix_.index_ = np.nonzero(nonzero)[1].astype(np.int32)
        lp.a_matrix_.value_ = rows[nonzero]
        self.model.passModel(lp)
        self.entries = int(nonzero.sum())
        self._cols = np.arange(self.n_rounds, dtype=np.int32)
        self._user_rows = np.arange(complement.shape[1], rows.shape[0], dtype=np.int32)

    def cap_iterations(self, iterations: int) -> None:
        """The next LP solves stop after this many simplex iterations (at most the shared per-solve limit)."""
        cap = max(1, min(iterations, self.limits.simplex_iterations))
        self.model.setOptionValue("simplex_iteration_limit", int(cap))

    def _set(self, model: highspy.Highs, bounds: UserBounds, cost: np.ndarray) -> None:
        model.changeColsBounds(self.n_rounds, self._cols, bounds.lower.astype(np.float64), bounds.upper.astype(np.float64))
        takes_part = float(min(1.0, bounds.high.sum()))
        low = np.append(bounds.low.astype(np.float64), takes_part)
        high = np.append(bounds.high.astype(np.float64), highspy.kHighsInf)
        model.changeRowsBounds(len(low), self._user_rows, low, high)
        model.changeColsCost(self.n_rounds, self._cols, cost.astype(np.float64))

    def relax(self, bounds: UserBounds, cost: np.ndarray) -> Answer:
        """Minimise cost.x over the LP relaxation (warm-started from the last solve)."""
        self._set(self.model, bounds, cost)
        # HiGHS measures time_limit against the model's run time summed over every solve: without this, once the
        # solves together passed it, every later solve returned at once with the clock status
        self.model.setOptionValue("time_limit", self.model.getRunTime() + float(max(self.limits.seconds, 0.0)))
        with quiet_stdout():
            self.model.run()
        x = np.asarray(self.model.getSolution().col_value)
        status = _status(self.model, x)
        iterations = _iterations(self.model)
        return Answer(status, x if status == "optimal" else None, iterations=iterations, work=iterations * self.entries)

    def farthest(self, bounds: UserBounds, point: np.ndarray) -> tuple[Answer, float]:
        """The LP point farthest (in L1) from binary `point`, and that distance: below 1 proves `point` the only binary one."""
        answer = self.relax(bounds, 2.0 * point - 1.0)  # min (2p - 1).x = sum(p) - distance(x, p)
        if answer.status != "optimal":
            return answer, np.nan
        return answer, float(np.abs(answer.x - point).sum())

    def binary(self, bounds: UserBounds, cost: np.ndarray, exclude: tuple[np.ndarray, ...] = (), nodes: int | None = None) -> Answer:
        """A binary point by branch and bound, at L1 distance >= 1 from each of `exclude`.

        "optimal": a point; "infeasible": none exists (a proof); "limit" (nodes or checks)/"clock": a limit came
        first, and a point may still come back (a candidate for the caller to verify, not a proof). `nodes`: a tighter
        node limit than the shared one.
        """
        mip = _highs(self.limits)
        _integer_options(mip, self.limits)
        if nodes is not None:
            mip.setOptionValue("mip_max_nodes", int(min(nodes, self.limits.nodes)))
        mip.passModel(self.model.getLp())
        self._set(mip, bounds, cost)
        mip.changeColsIntegrality(self.n_rounds, self._cols, np.full(self.n_rounds, highspy.HighsVarType.kInteger))
        for point in exclude:
            # distance(x, point) = sum (1 - 2 point) x + sum point >= 1
            mip.addRow(1.0 - point.sum(), highspy.kHighsInf, self.n_rounds, self._cols, 1.0 - 2.0 * point)
        with quiet_stdout():
            mip.run()
        solution = mip.getSolution()
        x = np.round(np.asarray(solution.col_value)) if solution.value_valid else None
        iterations = _iterations(mip)
        entries = self.entries + len(exclude) * self.n_rounds
        return Answer(_status(mip, x), x, int(mip.getInfo().mip_node_count), iterations,
                      INTEGER_ITERATION_COST * iterations * entries)


def null_space(matrix: np.ndarray) -> np.ndarray:
    """Orthonormal basis of {x : matrix x = 0}: an SVD when small (numpy only), else a pivoted QR (cheaper)."""
    if matrix.shape[0] == 0:
        return np.eye(matrix.shape[1])
    if matrix.shape[1] <= 300:
        _, singular, vt = np.linalg.svd(matrix, full_matrices=True)
        rank = int(np.sum(singular > singular[0] * 1e-9)) if len(singular) and singular[0] > 0 else 0
        return vt[rank:].T
    from scipy.linalg import qr

    q, r, _ = qr(matrix.T, mode="full", pivoting=True)
    diagonal = np.abs(np.diag(r))
    rank = int(np.sum(diagonal > diagonal[0] * 1e-9)) if len(diagonal) and diagonal[0] > 0 else 0
    return q[:, rank:]


def only_point(basis: np.ndarray, window_basis: np.ndarray, free: np.ndarray, column: np.ndarray,
               limits: Limits) -> tuple[str, int]:
    """Whether binary `column` is the only point of its user's LP polytope (Stiemke's alternative).

    Moves that keep the window sums and stay in col(A) and on the fixed rounds are
    d = U_free Q y (Q: null space of the pinned rows). `column` is the polytope's
    only point iff no nonzero move is feasible, i.e. no y with S d >= 0, S d != 0
    (S = diag(1 - 2 column): up from 0, down from 1); by Stiemke's theorem iff some
    lambda > 0 has (S U_free Q)^T lambda = 0. That is a small LP (dim Q rows,
    free-round columns) instead of one over all T rounds. Returns "unique" (proof),
    "not" (some move exists: maybe another binary point) or "limit", and the work
    spent (simplex iterations x the LP's entries, as Answer.work).
    """
    pinned = np.vstack([basis[~free], window_basis])  # window_basis = B U
    null = null_space(pinned)
    if null.shape[1] == 0:
        return "unique", 0
    moves = (1.0 - 2.0 * column[free])[:, None] * (basis[free] @ null)  # (f, k)
    scale = np.abs(moves).max()
    if scale == 0:
        return "unique", 0
    # Cheap first: project the all-ones vector onto null(moves^T); strictly positive means lambda is found.
    q, _ = np.linalg.qr(moves)
    ones = np.ones(moves.shape[0])
    projected = ones - q @ (q.T @ ones)
    if projected.min() > 1e-6 and np.abs(moves.T @ projected).max() <= 1e-9 * scale * moves.shape[0]:
        return "unique", 0
    model = _highs(limits)
    lp = highspy.HighsLp()
    f, k = moves.shape
    lp.num_col_ = f
    lp.num_row_ = k
    lp.col_cost_ = np.zeros(f)
    lp.col_lower_ = np.ones(f)
    lp.col_upper_ = np.full(f, highspy.kHighsInf)
    lp.row_lower_ = np.zeros(k)
    lp.row_upper_ = np.zeros(k)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    rows = moves.T / scale
    lp.a_matrix_.start_ = (np.arange(k + 1) * f).astype(np.int32)
    lp.a_matrix_.index_ = np.tile(np.arange(f, dtype=np.int32), k)
    lp.a_matrix_.value_ = rows.ravel()
    model.passModel(lp)
    with quiet_stdout():
        model.run()
    status = model.getModelStatus()
    spent = _iterations(model) * f * k
    if status == highspy.HighsModelStatus.kOptimal:
        return "unique", spent
    if status == highspy.HighsModelStatus.kInfeasible:
        return "not", spent
    return "limit", spent
