"""Wall time of `simulate` for the defenses that leave training alone: their own run vs the shared one.

    .venv/bin/python benchmarks/shared_simulation.py [--users 100] [--rounds 1200]

Prints one Markdown table on stdout. On a Fashion-MNIST LeNet (fedsgd) scenario it times, per
analytics-only defense, `simulate` as a fresh process would run it (no shared run: the baseline),
then, with the memo (benchmark.simulation._shared_run), the first call (which runs the undefended
federation and keeps it) and each later call (the kept run, copied, and the defense's analytics).
The arrays are checked bit-identical to the baseline's. Note the machine's load (`uptime`) beside
any figure: other processes on the same cores inflate every time here. A small warm-up runs untimed.
"""

import argparse
import hashlib
import os
import sys
import time
from collections import OrderedDict
from dataclasses import fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmark import simulation  # noqa: E402
from benchmark.scenario import Scenario  # noqa: E402
from defenses.guard import GuardedDefense  # noqa: E402
from defenses.registry import make_defense  # noqa: E402

DEFENSES = [("noisy-counts", {"scale": 1.0}), ("rounded-counts", {"bucket": 2}), ("coarse-analytics", {"factor": 3}),
            ("totals-only", {}), ("no-analytics", {}), ("none", {})]


def _timed(scenario: Scenario, name: str, parameters: dict) -> tuple[float, str]:
    """(seconds, a digest of every field simulate returned)."""
    started = time.perf_counter()
    observation, truth = simulation.simulate(scenario, GuardedDefense(make_defense(name, parameters)))
    seconds = time.perf_counter() - started
    digest = hashlib.sha256()
    for value in (getattr(record, f.name) for record in (observation, truth) for f in fields(record)):
        digest.update(value.tobytes() + str((value.dtype, value.shape)).encode() if isinstance(value, np.ndarray)
                      else repr(value).encode())
    return seconds, digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1200)
    args = parser.parse_args()
    scenario = Scenario(name="fm", n_users=args.users, n_rounds=args.rounds, participation=0.3, window=10,
                        dataset="fashion-mnist", model="cnn", samples_per_user=4, local_training="fedsgd",
                        learning_rate=1.0)
    simulation.simulate(replace(scenario, n_rounds=10), make_defense("none", {}))  # warm-up: data, torch
    simulation._shared.clear()

    original = simulation._leaves_training_alone
    simulation._leaves_training_alone = lambda defense: False
    baseline = {name: _timed(scenario, name, parameters) for name, parameters in DEFENSES}
    simulation._leaves_training_alone = original

    simulation._shared = OrderedDict()
    print(f"{args.users} users x {args.rounds} rounds, Fashion-MNIST LeNet fedsgd; load {os.getloadavg()[0]:.2f}\n")
    print("| defense | own run (s) | with the shared run (s) | identical |")
    print("|---|---|---|---|")
    for index, (name, parameters) in enumerate(DEFENSES):
        seconds, digest = _timed(scenario, name, parameters)
        label = f"{name} ({'first: fills the memo' if index == 0 else 'memoized'})"
        print(f"| {label} | {baseline[name][0]:.2f} | {seconds:.2f} | {digest == baseline[name][1]} |")


if __name__ == "__main__":
    main()
