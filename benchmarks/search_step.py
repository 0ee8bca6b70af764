"""Two costs of the search under noise, each beside the baseline it replaced, in one run.

    .venv/bin/python benchmarks/search_step.py [--users 1000] [--rounds 12000] [--attack-users 300]
        [--precision-users 500] [--exact-users 1000] [--only-rounding | --only-subspace]

Prints two Markdown tables on stdout. Note the machine's load (`uptime`) beside any figure.

1. Rounding to window counts (attacks.geometry.descending_ranks), the step every search iteration runs on every
   column: a stable argsort along the window axis (the baseline) against one pass of comparisons per round of the
   window, for windows of 5 to 40 rounds on T x users random scores. Both must give the same ranks.
   With few columns (the coupled restarts of the joint stage round a handful to a few dozen at a time) the
   passes' call overhead dominates: a second table times 100 rounds x 1 to 80 columns, ranked by the strided
   argsort, by the passes and by one argsort of contiguous rows with a flat scatter of the ranks
   (descending_ranks' path up to SORT_UP_TO_ENTRIES entries), and descending_ranks picks by size.
2. The search's precision (attacks.projection_search, `dtype`): float32 products against float64 on a synthetic
   instance under noise (users, 12 rounds each per user, 10% a round) and on an exact one at the (c) density
   (users, 1.5 rounds each per user): seconds, columns accepted, exact, median residual (the acceptance is checked
   in float64 either way), and whether the search gives the same columns with one BLAS thread as with the
   machine's (run it on a machine with several cores).
3. The adaptive attack under noise (attacks.adaptive.keep_best): it used to search every open user a second time
   from the same start, which repeats the disaggregation's own search when that accepted nobody; it now refines
   the disaggregation's best candidates. On a synthetic instance (users, 12 rounds each per user, 10% a round,
   Gaussian noise on the sums) the table gives the attack's time and the second search's time, and whether the
   second search's columns equal the candidates the attack reuses.
4. The search's subspace step (attacks.projection_search._SubspaceStep) through col(A)'s complement, where it is
   thinner than col(A) (T - r < r), against through col(A)'s basis (the baseline, still used where the basis is
   the thinner): milliseconds per step on the (c) and (d) shapes (n = 1000, T = 1500 and 1100, 10% a round) for
   500 columns, and the largest difference between the two steps' outputs.
"""

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from attacks.adaptive import keep_best  # noqa: E402
from attacks.disaggregation import disaggregate  # noqa: E402
from attacks import geometry  # noqa: E402
from attacks.geometry import Geometry, column_space, descending_ranks  # noqa: E402
from attacks.projection_search import _Coupling, _SubspaceStep, projection_search  # noqa: E402
from attacks.search_device import arrays_for  # noqa: E402
from attacks.settings import AttackSettings  # noqa: E402
from benchmark.synthetic import make_instance  # noqa: E402


def argsort_ranks(blocks: np.ndarray) -> np.ndarray:
    """The baseline: ranks from a stable argsort of -blocks along the window axis."""
    order = np.argsort(-blocks, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(blocks.shape[1])[None, :, None], axis=1)
    return ranks


def timed(function, repeats: int = 3):
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        value = function()
    return value, (time.perf_counter() - started) / repeats


def rounding_table(users: int, rounds: int, seed: int) -> None:
    scores = np.random.default_rng(seed).random((rounds, users))
    scores[:, : users // 10] = np.round(scores[:, : users // 10], 1)  # ties, broken by position
    print(f"Rounding {rounds} rounds x {users} columns to counts, per call\n")
    print("| window | argsort s (baseline) | comparisons s | speed-up | same ranks |")
    print("|---|---|---|---|---|")
    for window in (5, 10, 20, 40):
        blocks = scores[: rounds // window * window].reshape(rounds // window, window, users)
        baseline, base_seconds = timed(lambda: argsort_ranks(blocks))
        ranks, seconds = timed(lambda: descending_ranks(blocks))
        print(f"| {window} | {base_seconds:.3f} | {seconds:.3f} | {base_seconds / seconds:.1f}x | {np.array_equal(baseline, ranks)} |")
    print("\nFew columns: 100 rounds, windows of 10, per call in microseconds\n")
    print("| columns | strided argsort us | comparisons us | contiguous rows us | descending_ranks us (picks by size) | same ranks |")
    print("|---|---|---|---|---|---|")
    for columns in (1, 10, 20, 50, 80):
        blocks = scores[:100, :columns].reshape(10, 10, columns)
        baseline, base_seconds = timed(lambda: argsort_ranks(blocks), repeats=2000)
        compared, compare_seconds = timed(lambda: comparison_ranks(blocks), repeats=2000)
        rows, rows_seconds = timed(lambda: geometry._sorted_ranks(blocks), repeats=2000)
        ranks, seconds = timed(lambda: descending_ranks(blocks), repeats=2000)
        same = all(np.array_equal(baseline, other) for other in (ranks, compared, rows))
        print(f"| {columns} | {base_seconds * 1e6:.0f} | {compare_seconds * 1e6:.0f} | {rows_seconds * 1e6:.0f} | "
              f"{seconds * 1e6:.0f} | {same} |")


def comparison_ranks(blocks: np.ndarray) -> np.ndarray:
    """descending_ranks' passes of comparisons, whatever the size."""
    saved, geometry.SORT_UP_TO_ENTRIES = geometry.SORT_UP_TO_ENTRIES, 0
    try:
        return descending_ranks(blocks)
    finally:
        geometry.SORT_UP_TO_ENTRIES = saved


def precision_table(noise_users: int, exact_users: int, noise: float, seed: int) -> None:
    print("\nThe search in float64 against float32\n")
    print("| instance | dtype | seconds | accepted | exact columns | median residual | same columns with 1 BLAS thread |")
    print("|---|---|---|---|---|---|---|")
    for users, rounds, participation, sigma in ((noise_users, 12 * noise_users, 0.1, noise), (exact_users, 3 * exact_users // 2, 0.1, 0.0)):
        instance = make_instance(users, rounds, 10, participation, seed=seed)
        aggregates = instance.aggregates + sigma * np.random.default_rng([seed, 1]).standard_normal(instance.aggregates.shape)
        geometry = Geometry(column_space(aggregates, users, sigma > 0), instance.counts, 10)
        tolerance = AttackSettings(noise=sigma > 0).accepted_residual
        label = f"n={users}, T={rounds}, " + (f"noise {sigma:g}" if sigma else "exact")
        for dtype in (np.float64, np.float32):
            started = time.perf_counter()
            columns, residual = projection_search(geometry, np.arange(users), tolerance, dtype=dtype)
            seconds = time.perf_counter() - started
            exact = int((columns == instance.participants).all(axis=0).sum())
            with threadpool_limits(limits=1):  # what a suite worker runs: do the answers depend on the thread count?
                one_thread, _ = projection_search(geometry, np.arange(users), tolerance, dtype=dtype)
            print(f"| {label} | {np.dtype(dtype).name} | {seconds:.1f} | {int((residual <= tolerance).sum())} | {exact} | "
                  f"{np.median(residual):.3f} | {np.array_equal(columns, one_thread)} |")


def keep_best_table(users: int, noise: float, seed: int) -> None:
    rounds, window = 12 * users, 10
    instance = make_instance(users, rounds, window, 0.1, seed=seed)
    noisy = instance.aggregates + noise * np.random.default_rng([seed, 1]).standard_normal(instance.aggregates.shape)
    settings = AttackSettings(noise=True, adaptive=True)
    started = time.perf_counter()  # what attacks.adaptive.recover runs for an adaptive attack under noise
    searched = disaggregate(noisy, instance.counts, window, instance.totals, settings)
    result = keep_best(searched, noisy, instance.counts, window, None)
    attack_seconds = time.perf_counter() - started
    open_users = np.flatnonzero([status not in ("unique", "found") for status in searched.status])
    geometry = Geometry(column_space(noisy, users, True), instance.counts, window)
    started = time.perf_counter()
    columns, _ = projection_search(geometry, open_users, 0.0, iterations=settings.search_iterations)
    second_seconds = time.perf_counter() - started
    same = np.array_equal(columns.astype(np.uint8), searched.candidates[:, open_users])
    print(f"\nAdaptive attack under noise: {users} users, {rounds} rounds, noise {noise} on the sums\n")
    print("| attack s (now) | second search s (the baseline ran it too) | baseline s | same candidates |")
    print("|---|---|---|---|")
    print(f"| {attack_seconds:.1f} | {second_seconds:.1f} | {attack_seconds + second_seconds:.1f} | {same} |")


def subspace_table(users: int, columns: int, seed: int) -> None:
    print(f"\nThe subspace step, {columns} columns (coupled: through the per-round totals too)\n")
    print("| instance | T - r | basis ms (baseline) | complement ms | speed-up | largest difference (coupled) |")
    print("|---|---|---|---|---|---|")
    for rounds in (3 * users // 2, 11 * users // 10):
        instance = make_instance(users, rounds, 10, 0.1, seed=seed)
        geometry = Geometry(column_space(instance.aggregates, users, False), instance.counts, 10)
        ops = arrays_for(geometry, "cpu", np.float64)
        thin = _SubspaceStep(geometry, ops)
        wide = _SubspaceStep(geometry, ops)  # the basis branch, forced
        wide.thin, wide.sums, wide.pinv = False, geometry.window_basis, np.linalg.pinv(geometry.window_basis)
        state = np.random.default_rng(seed).random((rounds, columns))
        low = geometry.counts[:columns].T.astype(np.float64)
        target = _Coupling(geometry.basis, instance.participants[:, :columns].sum(axis=1).astype(np.float64)).target
        differences = [np.abs(thin(state, low, low, t) - wide(state, low, low, t)).max() for t in (None, target)]
        _, base_seconds = timed(lambda: wide(state, low, low, None), repeats=10)
        _, seconds = timed(lambda: thin(state, low, low, None), repeats=10)
        print(f"| n={users}, T={rounds} | {rounds - geometry.rank} | {base_seconds * 1e3:.1f} | {seconds * 1e3:.1f} | "
              f"{base_seconds / seconds:.1f}x | {differences[0]:.1e} ({differences[1]:.1e}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="columns of the rounding table")
    parser.add_argument("--rounds", type=int, default=12000)
    parser.add_argument("--attack-users", type=int, default=300, help="users of the adaptive attack's instance")
    parser.add_argument("--noise", type=float, default=3.0, help="std of the noise on each coordinate of the sums")
    parser.add_argument("--precision-users", type=int, default=500, help="users of the precision table's noisy instance")
    parser.add_argument("--exact-users", type=int, default=1000, help="users of the precision table's exact instance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-subspace", action="store_true", help="print the subspace step's table alone")
    parser.add_argument("--only-rounding", action="store_true", help="print the rounding tables alone")
    args = parser.parse_args()
    print(f"load {os.getloadavg()[0]:.1f}\n")
    if args.only_rounding:
        rounding_table(args.users, args.rounds, args.seed)
        return
    if args.only_subspace:
        subspace_table(args.exact_users, 500, args.seed)
        return
    rounding_table(args.users, args.rounds, args.seed)
    precision_table(args.precision_users, args.exact_users, args.noise, args.seed)
    keep_best_table(args.attack_users, args.noise, args.seed)
    subspace_table(args.exact_users, 500, args.seed)


if __name__ == "__main__":
    main()
