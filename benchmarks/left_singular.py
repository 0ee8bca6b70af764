"""The aggregates' left singular vectors: the seeded low-rank sketch against the full decomposition it skips.

    .venv/bin/python benchmarks/left_singular.py [--rounds 1200 2400 4800] [--dim 13426] [--users 100]

Every attack starts from col(A). On standard's designed Fashion-MNIST LeNet cell at 48 rounds per user (100
users, T = 4800, 13426 coordinates) the full decomposition (QR of A^T, then an SVD of T x T) was 168 of a `none`
task's 287 s (cProfile, three calls: the whole run and two prefixes). Sums of n fixed updates have rank n, so
attacks.geometry.left_singular(A, n) sketches A with n + 16 seeded Gaussian directions and keeps the result only
where the sketch's residual proves every other singular value below the numerical-rank threshold; otherwise (noise,
drift) it falls back to the full decomposition. Prints one Markdown table per shape (A = P G with P 30% ones,
G Gaussian rows of random scale; `noisy`: plus N(0, 1e-3^2) per entry, where the sketch must fall back): seconds of
each path with one BLAS thread, the largest difference of the leading singular values (relative to sigma_1) and
of the projections onto col(A) of five true columns, and the numerical ranks.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from attacks.geometry import left_singular, numerical_rank  # noqa: E402


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, nargs="+", default=[1200, 2400, 4800], help="T per row (default 1200 2400 4800)")
    parser.add_argument("--dim", type=int, default=13426, help="coordinates d (default 13426, the LeNet's)")
    parser.add_argument("--users", type=int, default=100, help="users n, the sums' rank (default 100)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| T x d | sums | full (s) | sketch (s) | speed-up | sketch kept | max singular-value difference | "
          "max projection difference | rank full / sketch |")
    print("|---|---|---:|---:|---:|---|---:|---:|---|")
    with threadpool_limits(limits=1):
        for rounds in args.rounds:
            participants = (rng.random((rounds, args.users)) < 0.3).astype(np.float64)
            updates = rng.standard_normal((args.users, args.dim)) * rng.random((args.users, 1))
            exact = participants @ updates
            for kind, aggregates in (("exact", exact), ("noisy", exact + 1e-3 * rng.standard_normal(exact.shape))):
                (left, singular), full = timed(left_singular, aggregates)
                (fast_left, fast_singular), fast = timed(left_singular, aggregates, args.users)
                rank = numerical_rank(singular, aggregates.shape)
                top = min(rank, args.users)
                values = np.abs(singular[:top] - fast_singular[:top]).max() / singular[0]
                columns = participants[:, :5]
                projection = np.abs(left[:, :top] @ (left[:, :top].T @ columns)
                                    - fast_left[:, :top] @ (fast_left[:, :top].T @ columns)).max()
                kept = "yes" if fast_left.shape[1] < left.shape[1] else "no (full)"
                print(f"| {rounds} x {args.dim} | {kind} | {full:.2f} | {fast:.2f} | {full / fast:.1f}x | {kept} | "
                      f"{values:.1e} | {projection:.1e} | {rank} / {numerical_rank(fast_singular, aggregates.shape)} |")


if __name__ == "__main__":
    main()
