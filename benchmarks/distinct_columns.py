"""Deduplicating the count-free search's candidates: attacks.anonymous.distinct_columns against np.unique(axis=1).

    .venv/bin/python benchmarks/distinct_columns.py [--repeats 20]

The long count-free sweeps deduplicate their candidates at every check; with np.unique(..., axis=1) that was 52 of
their 88 s at n = 100, T = 1200 (cProfile). Prints one Markdown table: per shape (rounds x columns, a third of them
repeated), milliseconds per call of each and whether both give the same columns in the same order.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from attacks.anonymous import distinct_columns  # noqa: E402

SHAPES = ((300, 100), (1200, 300), (3000, 600), (12000, 300))


def baseline(columns: np.ndarray) -> np.ndarray:
    """What the search did before: np.unique over columns, which compares a structured type of T uint8 fields."""
    nonempty = columns[:, columns.sum(axis=0) > 0]
    return np.unique(nonempty.astype(np.uint8), axis=1).astype(np.float64) if nonempty.shape[1] else nonempty


def milliseconds(function, columns: np.ndarray, repeats: int) -> float:
    function(columns)
    started = time.perf_counter()
    for _ in range(repeats):
        function(columns)
    return (time.perf_counter() - started) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="calls timed per shape and method (default 20)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| rounds | columns | np.unique(axis=1) (ms) | distinct_columns (ms) | speed-up | same output |")
    print("|---:|---:|---:|---:|---:|---|")
    for rounds, count in SHAPES:
        kinds = (rng.random((rounds, 2 * count // 3)) < 0.3).astype(np.float64)
        columns = kinds[:, rng.integers(0, kinds.shape[1], size=count)]
        before, after = milliseconds(baseline, columns, args.repeats), milliseconds(distinct_columns, columns, args.repeats)
        same = np.array_equal(baseline(columns), distinct_columns(columns))
        print(f"| {rounds} | {count} | {before:.2f} | {after:.2f} | {before / after:.1f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
