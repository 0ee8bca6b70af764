"""How many users of a synthetic instance are identifiable at all: ground truth, not the attack.

    .venv/bin/python benchmarks/identifiability.py [--users 50] [--ratio 1.1] [--participation 0.1] [--seeds 0]
        [--time-limit 10] [--joint-time-limit 30]

Issue 12's instance (d) (n = 1000, T = 1100, windows of 10, 10% a round) leaves the attack without a column.
Whether any attack could name its users is a property of the observations alone, decided here on instances of
the same shape (T = ratio x n) small enough for an integer program:

- alone: user u is `unique` when no binary x != p_u lies in col(A) with u's window counts (the program that asks
  for one, Hamming distance from p_u at least 1, is infeasible), `ambiguous` when one does (the program's point
  is the witness; `swap` counts witnesses that are another user's column: two users with the same counts), and
  `undecided` when HiGHS reaches the time limit first. col(A) = col(P) for exact sums, written x = P w (w free),
  so the program is exact: no tolerance on a subspace.
- jointly: for each user ambiguous alone, whether some whole matrix X != P fits every observation at once: each
  column in col(A) with its user's counts, rows summing to the per-round totals, X_u != p_u. Users unique alone
  keep their column in any such X, so only the ambiguous and undecided users' columns are variables. A user
  whose joint program is infeasible is identified by the totals; one whose program finds an X of P's rank is still
  ambiguous (that X fits every observation and spans col(A)); an X of lower rank is no answer (an answer must span
  col(A), which no linear program can ask), so that user is left `open`.

Prints one Markdown table on stdout; progress on stderr. The programs are HiGHS through scipy.optimize.milp under
wall-clock limits, so `undecided` counts vary with the machine: a measurement, not a score.
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.optimize import Bounds, LinearConstraint, milp  # noqa: E402
from scipy.sparse import csr_matrix, hstack, identity, kron  # noqa: E402

from benchmark.observation import window_sums  # noqa: E402
from benchmark.synthetic import make_instance  # noqa: E402

WINDOW = 10
FEASIBLE, INFEASIBLE = 0, 2  # scipy.optimize.milp statuses


@dataclass
class Verdicts:
    unique: list[int] = field(default_factory=list)
    ambiguous: list[int] = field(default_factory=list)
    swaps: int = 0  # ambiguous users whose witness is another user's column
    undecided: list[int] = field(default_factory=list)


def _windows(n_rounds: int) -> np.ndarray:
    """B (W x T): row k sums window k's rounds."""
    return window_sums(np.eye(n_rounds), WINDOW)


def _other_point(columns: np.ndarray, participants: np.ndarray, movable: list[int], user: int, totals: np.ndarray | None,
                 time_limit: float):
    """milp's answer to: binary X (T x |movable|) with X = P W, each column's window counts its user's, rows summing to
    `totals` (if given), and column `user` at Hamming distance >= 1 from its true column."""
    n_rounds, k = columns.shape[0], len(movable)
    windows = _windows(n_rounds)
    n_binary, n_weights = n_rounds * k, participants.shape[1] * k
    in_span = hstack([identity(n_binary, format="csr"), -kron(identity(k), csr_matrix(participants))])
    counts = (windows @ columns).T.reshape(-1)
    in_windows = hstack([kron(identity(k), csr_matrix(windows)), csr_matrix((windows.shape[0] * k, n_weights))])
    truth = columns[:, movable.index(user)]
    away = np.zeros(n_binary + n_weights)
    away[movable.index(user) * n_rounds:(movable.index(user) + 1) * n_rounds] = 1 - 2 * truth
    constraints = [LinearConstraint(in_span, 0, 0), LinearConstraint(in_windows, counts, counts),
                   LinearConstraint(csr_matrix(away[None, :]), 1 - truth.sum(), np.inf)]
    if totals is not None:
        summed = hstack([kron(csr_matrix(np.ones((1, k))), identity(n_rounds, format="csr")), csr_matrix((n_rounds, n_weights))])
        constraints.append(LinearConstraint(summed, totals, totals))
    bounds = Bounds(np.r_[np.zeros(n_binary), np.full(n_weights, -np.inf)], np.r_[np.ones(n_binary), np.full(n_weights, np.inf)])
    return milp(np.zeros(n_binary + n_weights), constraints=constraints, bounds=bounds,
                integrality=np.r_[np.ones(n_binary), np.zeros(n_weights)], options={"time_limit": time_limit})


def alone(participants: np.ndarray, time_limit: float) -> Verdicts:
    verdicts = Verdicts()
    for user in range(participants.shape[1]):
        answer = _other_point(participants[:, [user]], participants, [user], user, None, time_limit)
        if answer.status == FEASIBLE:
            witness = np.rint(answer.x[: participants.shape[0]])
            verdicts.ambiguous.append(user)
            verdicts.swaps += int(any(np.array_equal(witness, column) for column in participants.T))
        else:
            (verdicts.unique if answer.status == INFEASIBLE else verdicts.undecided).append(user)
    return verdicts


def jointly(participants: np.ndarray, verdicts: Verdicts, time_limit: float) -> dict[str, int]:
    """Of the users ambiguous alone: identified by the totals (infeasible), still ambiguous (a witness X of P's
    rank: it fits every observation and spans col(A)), open (the witness found spans less: no proof either way)
    and undecided (time limit)."""
    movable = sorted(verdicts.ambiguous + verdicts.undecided)
    fixed = [u for u in range(participants.shape[1]) if u not in movable]
    totals = participants.sum(axis=1) - participants[:, fixed].sum(axis=1)
    rank = np.linalg.matrix_rank(participants)
    tally = dict.fromkeys(("identified", "ambiguous", "open", "undecided"), 0)
    for user in verdicts.ambiguous:
        answer = _other_point(participants[:, movable], participants, movable, user, totals, time_limit)
        if answer.status == FEASIBLE:
            other = np.rint(answer.x[: participants.shape[0] * len(movable)]).reshape(len(movable), -1).T
            spans = np.linalg.matrix_rank(np.hstack([other, participants[:, fixed]])) == rank
            tally["ambiguous" if spans else "open"] += 1
        else:
            tally["identified" if answer.status == INFEASIBLE else "undecided"] += 1
    return tally


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="50", help="comma-separated user counts n (default 50)")
    parser.add_argument("--ratio", default="1.1", help="comma-separated T / n (default 1.1, instance (d)'s)")
    parser.add_argument("--participation", type=float, default=0.1)
    parser.add_argument("--seeds", default="0", help="comma-separated instance seeds")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per user's program alone")
    parser.add_argument("--joint-time-limit", type=float, default=30.0, help="seconds per joint program; 0: skip them")
    args = parser.parse_args(argv)
    print("| n | T | seed | rank P | unique alone | ambiguous alone (swaps) | undecided alone | identified by the totals "
          "| still ambiguous | open | joint undecided | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n_users in (int(n) for n in args.users.split(",")):
        for ratio in (float(r) for r in args.ratio.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                n_rounds = int(round(ratio * n_users))
                started = time.perf_counter()
                participants = make_instance(n_users, n_rounds, WINDOW, args.participation, seed=seed).participants
                participants = participants.astype(np.float64)
                verdicts = alone(participants, args.time_limit)
                print(f"n={n_users} T={n_rounds} seed={seed}: alone {len(verdicts.unique)} unique, "
                      f"{len(verdicts.ambiguous)} ambiguous, {len(verdicts.undecided)} undecided", file=sys.stderr, flush=True)
                joint = jointly(participants, verdicts, args.joint_time_limit) if args.joint_time_limit > 0 and \
                    verdicts.ambiguous else None
                joint = joint or dict.fromkeys(("identified", "ambiguous", "open", "undecided"), "—")
                rank = np.linalg.matrix_rank(participants)
                print(f"| {n_users} | {n_rounds} | {seed} | {rank} | {len(verdicts.unique)} | {len(verdicts.ambiguous)} "
                      f"({verdicts.swaps}) | {len(verdicts.undecided)} | {joint['identified']} | {joint['ambiguous']} | {joint['open']} "
                      f"| {joint['undecided']} "
                      f"| {time.perf_counter() - started:.1f} |", flush=True)


if __name__ == "__main__":
    main()
