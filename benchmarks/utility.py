"""Wall time and accuracy of one utility-track training run per defense, batched and one client at a time.

    .venv/bin/python benchmarks/utility.py [--suite standard] [--seeds 1] [--threads 2] [--rounds N] [--baseline]

Prints one Markdown table on stdout. For every defense of the suite whose hooks change training
(and `none`), it trains the suite's [utility] task once per seed with the cohort batched over
torch.func's vmap (benchmark.utility.train) and reports seconds and test accuracy (mean, and the 95%
t-interval half-width over seeds when there are several). `--baseline` adds, for `none`, the same
task trained one client at a time: the batching's speed-up, side by side. `--rounds` shortens the
task (for a quick look; the figures then are not the suite's). Note the machine's load (`uptime`)
beside any figure: other processes on the same cores inflate every time here. A one-round
warm-up (data loading, torch's first calls) runs untimed.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from benchmark.suite import load_suite  # noqa: E402
from benchmark.utility import resolve, train, trains_like_undefended  # noqa: E402
from defenses.guard import GuardedDefense  # noqa: E402
from defenses.registry import make_defense  # noqa: E402


def _interval(values: list[float]) -> str:
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.4f}"
    half = stats.t.ppf(0.975, len(values) - 1) * float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return f"{mean:.4f} ± {half:.4f} (min {min(values):.4f}, max {max(values):.4f})"


def _measure(task, spec, seeds, threads, one_at_a_time=False) -> tuple[list[float], list[float]]:
    seconds, accuracies = [], []
    for seed in seeds:
        defense = GuardedDefense(make_defense(spec.name, dict(spec.parameters)))
        started = time.perf_counter()
        accuracies.append(train(task, defense, seed, threads=threads, one_at_a_time=one_at_a_time))
        seconds.append(time.perf_counter() - started)
    return seconds, accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="standard")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=0, help="override the task's n_rounds (0: the suite's)")
    parser.add_argument("--baseline", action="store_true", help="also train `none` one client at a time")
    parser.add_argument("--only", default="", help="semicolon-separated defense labels to keep")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    if suite.utility is None:
        sys.exit(f"suite {args.suite} declares no [utility] task")
    task = resolve(suite.utility)
    if args.rounds:
        task = replace(task, n_rounds=args.rounds)
    seeds = list(range(args.seeds))
    specs, seen = [], set()
    for spec in suite.defenses:
        identity = json.dumps([spec.name, spec.parameters], default=str)
        trains = not trains_like_undefended(make_defense(spec.name, dict(spec.parameters)))
        if identity not in seen and (spec.name == "none" or trains) and (not args.only or spec.display in args.only.split(";")):
            seen.add(identity)
            specs.append(spec)
    train(replace(task, n_rounds=1), GuardedDefense(make_defense("none", {})), 0, threads=args.threads)  # warm-up, untimed
    load = os.getloadavg()[0]
    print(f"task: {task}\nthreads: {args.threads}, seeds: {seeds}, load average at start: {load:.2f}\n")
    print("| defense | training | seconds per run | test accuracy |")
    print("|---|---|---|---|")
    for spec in specs:
        seconds, accuracies = _measure(task, spec, seeds, args.threads)
        print(f"| {spec.display} | cohort batched (vmap) | {np.mean(seconds):.1f} | {_interval(accuracies)} |", flush=True)
        if args.baseline and spec.name == "none":
            seconds, accuracies = _measure(task, spec, seeds, args.threads, one_at_a_time=True)
            print(f"| {spec.display} | one client at a time | {np.mean(seconds):.1f} | {_interval(accuracies)} |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
