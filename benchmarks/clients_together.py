"""Wall time of `simulate` when a round's clients train together (vmapped) against one client at a time.

    .venv/bin/python benchmarks/clients_together.py [--users 100] [--rounds 300]

Prints one Markdown table on stdout: per defense whose clients train every round (the model moves under
model-refresh; DP-SGD draws fresh noise), on the Fashion-MNIST LeNet cells of the standard suite (fedsgd:
4 images; fedavg: 8 images, two full-batch epochs), the seconds of `simulate` with clients trained
together (benchmark.simulation.CLIENT_CHUNK of them per vmapped call; DP-SGD through
defenses.base.batched_local_training) and one at a time (chunks of one; DP-SGD through its per-client
opacus hook), and the largest difference between the two runs' aggregates (the same draws: rounding only).
Note the machine's load (`uptime`) beside any figure. A small warm-up runs untimed.
"""

import argparse
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmark import simulation  # noqa: E402
from benchmark.scenario import Scenario  # noqa: E402
from defenses.guard import GuardedDefense  # noqa: E402
from defenses.registry import make_defense  # noqa: E402

DEFENSES = [("model-refresh", {"every": 1, "min_relative_change": 0.001}), ("dp-sgd", {"noise_multiplier": 0.1})]


@contextmanager
def one_at_a_time():
    chunk, together = simulation.CLIENT_CHUNK, simulation.batched_local_training
    simulation.CLIENT_CHUNK, simulation.batched_local_training = 1, lambda defense: None
    try:
        yield
    finally:
        simulation.CLIENT_CHUNK, simulation.batched_local_training = chunk, together


def _timed(scenario: Scenario, name: str, parameters: dict) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    observation, _ = simulation.simulate(scenario, GuardedDefense(make_defense(name, parameters)))
    return time.perf_counter() - started, observation.aggregates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    base = Scenario(name="fm", n_users=args.users, n_rounds=args.rounds, participation=0.3, window=10,
                    dataset="fashion-mnist", model="cnn", samples_per_user=4, learning_rate=1.0)
    cells = {"fedsgd": base, "fedavg": replace(base, samples_per_user=8, local_training="fedavg", local_epochs=2,
                                               batch_size=8, learning_rate=0.1)}
    for name, parameters in DEFENSES:  # warm-up: data, torch, opacus
        simulation.simulate(replace(base, n_rounds=10), make_defense(name, parameters))
    print(f"{args.users} users, {args.rounds} rounds, 30% a round\n")
    print("| defense | cell | together (s) | one at a time (s) | speed-up | max aggregate difference |")
    print("|---|---|---|---|---|---|")
    for name, parameters in DEFENSES:
        for cell, scenario in cells.items():
            together, fast = _timed(scenario, name, parameters)
            with one_at_a_time():
                alone, slow = _timed(scenario, name, parameters)
            print(f"| {name} {parameters} | {cell} | {together:.1f} | {alone:.1f} | {alone / together:.1f}x "
                  f"| {float(np.abs(fast - slow).max()):.1e} |", flush=True)


if __name__ == "__main__":
    main()
