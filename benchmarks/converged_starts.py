"""The count-free search with and without dropping starts that reached a fixed point, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/converged_starts.py [--shapes 100x1200,100x2400] [--seeds 0,1]

For each shape (users x rounds, windows of 10, 30% of users a round, synthetic updates) and seed it runs the long
sweeps (attacks.anonymous.binary_vectors with ALONE_ITERATIONS and ALONE_WORK_LIMIT, as where no counts are published)
twice: every start iterated to the end (attacks.anonymous.CONVERGED = -1, the code before) and starts dropped once
their step moves no entry by CONVERGED. Prints one Markdown row per run: columns found, whether both runs found the
same columns in the same order, and the seconds of each.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import attacks.anonymous as anonymous  # noqa: E402
from attacks.geometry import column_space  # noqa: E402
from benchmark.synthetic import make_instance  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="100x1200,100x2400", help="users x rounds, comma-separated")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    converged = anonymous.CONVERGED
    print("| users | rounds | seed | columns found | same columns | every start to the end s | fixed points dropped s |")
    print("|---:|---:|---:|---:|---|---:|---:|")
    for shape in args.shapes.split(","):
        n_users, n_rounds = (int(part) for part in shape.split("x"))
        for seed in (int(s) for s in args.seeds.split(",")):
            instance = make_instance(n_users, n_rounds, 10, 0.3, seed=seed)
            basis = column_space(instance.aggregates, n_users, False)
            runs = []
            for threshold in (-1.0, converged):
                anonymous.CONVERGED = threshold
                started = time.perf_counter()
                found = anonymous.binary_vectors(basis, iterations=anonymous.ALONE_ITERATIONS,
                                                 work_limit=anonymous.ALONE_WORK_LIMIT).columns
                runs.append((found, time.perf_counter() - started))
            anonymous.CONVERGED = converged
            (before, before_s), (after, after_s) = runs
            same = before.shape == after.shape and np.array_equal(before, after)
            print(f"| {n_users} | {n_rounds} | {seed} | {after.shape[1]} | {'yes' if same else 'NO'} | {before_s:.1f} "
                  f"| {after_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
