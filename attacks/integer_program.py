"""The per-user integer program (the exact fallback) and the LP certificate of uniqueness, solved by HiGHS."""

import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from scipy.linalg import qr
from scipy.optimize import linprog

# Rows of N^T p are allowed this far from 0: N is orthonormal, so this is an absolute fit tolerance.
SUBSPACE_TOLERANCE = 1e-6
# An LP optimum of the distance objective below this proves there is no other binary answer (each lies at >= 1).
UNIQUE_BELOW = 0.999


@dataclass(frozen=True, eq=False)
class UserProgram:
    """Everything one user's program needs, so that it can travel to a worker process."""

    user: int
    complement: np.ndarray  # (T, T - r) orthonormal basis of col(A)'s complement
    window_matrix: np.ndarray  # (W, T)
    counts: np.ndarray  # (W,) window sums (their lower bounds when counts_high is given)
    zero: np.ndarray  # (T,) bool: rounds forced to 0
    one: np.ndarray  # (T,) bool: rounds forced to 1
    time_limit: float
    deadline: float | None = None  # wall-clock time (time.time()) after which no solver starts
    counts_high: np.ndarray | None = None  # (W,) upper bounds of inexact window sums; None: exact

    def seconds_left(self) -> float:
        """This user's solver time: the per-user limit, cut to what the overall budget leaves."""
        if self.deadline is None:
            return self.time_limit
        return max(0.0, min(self.time_limit, self.deadline - time.time()))


@dataclass(frozen=True)
class UserAnswer:
    user: int
    status: str  # "found", "timeout" or "infeasible"
    column: np.ndarray | None
    seconds: float


def _constraints(program: UserProgram, free_values: cp.Expression) -> tuple[list, cp.Expression]:
    free = ~(program.zero | program.one)
    fixed_ones = program.one.astype(np.float64)
    fit = program.complement[free].T @ free_values + program.complement.T @ fixed_ones
    window_sums = program.window_matrix[:, free] @ free_values
    already = program.window_matrix @ fixed_ones
    if program.counts_high is None:
        return [window_sums == program.counts - already], fit
    bounds = [window_sums >= program.counts - already, window_sums <= program.counts_high - already]
    if program.counts_high.sum() > 0:  # the empty column fits every subspace: ask for a participation
        bounds.append(cp.sum(free_values) + fixed_ones.sum() >= 1)
    return bounds, fit


def _assemble(program: UserProgram, free_values: np.ndarray) -> np.ndarray:
    column = program.one.astype(np.float64)
    column[~(program.zero | program.one)] = np.round(free_values)
    return column


@contextmanager
def _quiet_stdout() -> Iterator[None]:
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


def _solve(problem: cp.Problem, time_limit: float) -> str:
    with warnings.catch_warnings(), _quiet_stdout():
        warnings.simplefilter("ignore")
        try:
            problem.solve(solver=cp.HIGHS, time_limit=time_limit)
        except cp.error.SolverError:
            return "timeout"
    return problem.status


def solve_user(program: UserProgram) -> UserAnswer:
    """Find a binary column with the user's counts inside col(A)."""
    start = time.perf_counter()
    limit = program.seconds_left()
    if limit <= 0:
        return UserAnswer(program.user, "timeout", None, 0.0)
    n_free = int((~(program.zero | program.one)).sum())
    if n_free == 0:
        return UserAnswer(program.user, "found", _assemble(program, np.zeros(0)), time.perf_counter() - start)
    values = cp.Variable(n_free, boolean=True)
    constraints, fit = _constraints(program, values)
    problem = cp.Problem(cp.Minimize(0), constraints + [cp.abs(fit) <= SUBSPACE_TOLERANCE])
    status = _solve(problem, limit)
    seconds = time.perf_counter() - start
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return UserAnswer(program.user, "infeasible", None, seconds)
    if values.value is None or status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE, cp.USER_LIMIT):
        return UserAnswer(program.user, "timeout", None, seconds)
    # At the time limit HiGHS may still hand back its incumbent: a candidate the caller verifies, not a proof.
    found = "timeout" if status == cp.USER_LIMIT else "found"
    return UserAnswer(program.user, found, _assemble(program, values.value), seconds)


def null_space(matrix: np.ndarray) -> np.ndarray:
    """Orthonormal basis of {x : matrix x = 0}, by a rank-revealing (pivoted) QR of the transpose: cheaper than an SVD."""
    q, r, _ = qr(matrix.T, mode="full", pivoting=True)
    diagonal = np.abs(np.diag(r))
    rank = int(np.sum(diagonal > diagonal[0] * 1e-9)) if len(diagonal) and diagonal[0] > 0 else 0
    return q[:, rank:]


def is_unique(basis: np.ndarray, program: UserProgram, column: np.ndarray) -> bool:
    """True when an LP proves `column` is the only count-feasible binary vector in col(A).

    Every other answer is `column + U w` with w in the null space Q of the
    constraints (zero on fixed rounds, zero window sums), so the LP maximises
    the L1 distance to `column` over y with 0 <= column + U Q y <= 1 on the free
    rounds: a small LP in dim(Q) variables. Any other binary answer lies at
    distance >= 1, so an optimum below 1 rules them all out. A time-out or a
    solver failure proves nothing.
    """
    limit = program.seconds_left()
    if limit <= 0:
        return False
    free = ~(program.zero | program.one)
    pinned = np.vstack([basis[~free], program.window_matrix @ basis])
    null = null_space(pinned)
    if null.shape[1] == 0:
        return True
    moves = basis[free] @ null
    target = column[free]
    gain = (1.0 - 2.0 * target) @ moves
    result = linprog(
        -gain,
        A_ub=np.vstack([moves, -moves]),
        b_ub=np.concatenate([1.0 - target, target]),
        bounds=(None, None),
        method="highs",
        options={"time_limit": limit},
    )
    return result.status == 0 and -result.fun < UNIQUE_BELOW
