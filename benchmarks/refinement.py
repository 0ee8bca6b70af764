"""Wall time of the refinement under noise (attacks.alternating.refine) against the sweeps it replaced.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/refinement.py [--users 100] [--rounds 1200] [--dim 13426]

Prints one Markdown table on stdout. On a synthetic instance of the standard suite's Fashion-MNIST LeNet
shape (100 users, 1200 rounds, windows of 10, 30% a round, 13426 coordinates) with Gaussian noise on the
sums, both sweeps start from the same perturbed columns. The baseline keeps the residual R = A - P G (T x d)
and moves one user's rank-one term in and out of it, O(T d) a step; the previous refine kept R G^T (T x n) and
updated all of it each step, O(T n); refine updates only the rounds that moved. All must return the same columns.
Note the machine's load (`uptime`) beside any figure.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from attacks.alternating import refine  # noqa: E402
from attacks.disaggregation import least_squares  # noqa: E402
from attacks.geometry import Geometry, column_space  # noqa: E402
from benchmark.synthetic import make_instance  # noqa: E402


def full_residual_refine(geometry: Geometry, aggregates: np.ndarray, columns: np.ndarray, sweeps: int = 30) -> np.ndarray:
    """The baseline: the same Gauss-Seidel sweep on the full residual (T x d)."""
    columns = columns.astype(np.float64).copy()
    users = np.arange(columns.shape[1])
    for _ in range(sweeps):
        updates = least_squares(columns, aggregates)
        residual = aggregates - columns @ updates
        changed = 0
        for user in users:
            update = updates[user]
            energy = float(update @ update)
            if energy == 0:
                continue
            residual += np.outer(columns[:, user], update)
            column = geometry.round_to_counts((residual @ update / energy)[:, None], users[user : user + 1])[:, 0]
            residual -= np.outer(column, update)
            changed += int((column != columns[:, user]).sum())
            columns[:, user] = column
        if changed == 0:
            break
    return columns


def dense_outer_refine(geometry: Geometry, aggregates: np.ndarray, columns: np.ndarray, sweeps: int = 30) -> np.ndarray:
    """The previous refine: S = R G^T kept, but each move updated all T rows of S (a dense outer product)."""
    columns = columns.astype(np.float64).copy()
    users = np.arange(columns.shape[1])
    for _ in range(sweeps):
        updates = least_squares(columns, aggregates)
        gram = updates @ updates.T
        projected = aggregates @ updates.T - columns @ gram
        changed = 0
        for user in users:
            energy = float(gram[user, user])
            if energy == 0:
                continue
            gains = projected[:, user] / energy + columns[:, user]
            column = geometry.round_to_counts(gains[:, None], users[user : user + 1])[:, 0]
            moved = columns[:, user] - column
            if moved.any():
                projected += np.outer(moved, gram[user])
                changed += int(np.count_nonzero(moved))
                columns[:, user] = column
        if changed == 0:
            break
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1200)
    parser.add_argument("--dim", type=int, default=13426)
    parser.add_argument("--noise", type=float, default=3.0, help="std of the noise on each coordinate of the sums")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    instance = make_instance(args.users, args.rounds, 10, 0.3, dim=args.dim, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    noisy = instance.aggregates + args.noise * rng.standard_normal(instance.aggregates.shape)
    geometry = Geometry(column_space(noisy, args.users, True), instance.counts, 10)
    truth = instance.participants.astype(np.float64)
    start = geometry.round_to_counts(truth + 0.8 * rng.standard_normal(truth.shape), np.arange(args.users))
    results = {}
    methods = (("full residual (baseline)", full_residual_refine),
               ("R G^T, dense outer updates (previous)", dense_outer_refine),
               ("refine (R G^T, moved rounds only)", refine))
    for name, method in methods:
        started = time.perf_counter()
        results[name] = (method(geometry, noisy, start), time.perf_counter() - started)
    reference = next(iter(results.values()))[0]
    same = all(np.array_equal(reference, columns) for columns, _ in results.values())
    print(f"n = {args.users}, T = {args.rounds}, d = {args.dim}, noise {args.noise}, load {os.getloadavg()[0]:.1f}\n")
    print("| sweep | seconds | entries right | users exact | same columns |")
    print("|---|---|---|---|---|")
    for name, (columns, seconds) in results.items():
        print(f"| {name} | {seconds:.2f} | {(columns == truth).mean():.4f} | {(columns == truth).all(axis=0).mean():.2f} | {same} |")


if __name__ == "__main__":
    main()
