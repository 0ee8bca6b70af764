"""attack_success per defense and attack on the settings issue 10 names, seeds side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attack_strength.py [--seeds 0,1,2] [--defenses none,no-analytics]

(One BLAS thread, as in the suite's workers: on a loaded 2-core machine more threads make the
small products here tens of times slower.)

Digits, mlp, fedsgd, one sample per user, n = 20, participation 0.3, window 5, frozen
model, T = 60 unless the case says otherwise. For each (defense, seed) it simulates,
runs every attack (attacks.recovery.run_attacks) and prints each attack's
attack_success, the strongest, the attributed and anonymous shares and the attack's
wall time. `before` is the strongest of the static and adaptive attacks (what rows
reported until issue 10); `after` is the strongest of all. Prints Markdown on stdout.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from attacks.recovery import run_attacks  # noqa: E402
from benchmark.scenario import Scenario  # noqa: E402
from benchmark.scoring import score_recovery  # noqa: E402
from benchmark.simulation import simulate  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402
from defenses.registry import make_defense  # noqa: E402

SETTINGS = load_suite("quick").attack  # the quick suite's work limits and clock safety nets
# (label, defense, parameters, rounds, target from issue 10[, the server's step: Scenario.server_step])
CASES = [
    ("none", "none", {}, 60, 1.0),
    ("no-analytics", "no-analytics", {}, 60, 0.8),
    ("totals-only", "totals-only", {}, 60, 0.8),
    ("noisy-counts s=1", "noisy-counts", {"scale": 1.0}, 60, 0.7),
    ("noisy-counts s=3", "noisy-counts", {"scale": 3.0}, 60, None),
    ("model-refresh 1, honest step", "model-refresh", {"every": 1}, 60, None, "honest"),
    ("model-refresh 1, smallest step", "model-refresh", {"every": 1}, 60, 0.9, "smallest"),
    ("model-refresh 1, min change 0.01", "model-refresh", {"every": 1, "min_relative_change": 0.01}, 60, None, "smallest"),
    ("dp-aggregate z=0.03 T=240", "dp-aggregate", {"noise_multiplier": 0.03, "clip_norm": 1.0}, 240, 0.8),
    ("dp-aggregate z=0.1 T=240", "dp-aggregate", {"noise_multiplier": 0.1, "clip_norm": 1.0}, 240, None),
    ("rounded-counts b=2", "rounded-counts", {"bucket": 2}, 60, None),
    ("participation-padding 0.1", "participation-padding", {"rate": 0.1}, 60, None),
    ("structured-participation 2", "structured-participation", {"group_size": 2}, 60, None),
    ("coarse-analytics 4", "coarse-analytics", {"factor": 4}, 60, None),
    ("ldp-gaussian z=1", "ldp-gaussian", {"noise_multiplier": 1.0}, 60, None),
    ("dp-fedavg z=8 cohort 1000", "dp-fedavg", {"noise_multiplier": 8.0, "noise_cohort": 1000}, 60, None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--defenses", default="", help="comma-separated case labels' defense names; default all")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    wanted = set(filter(None, args.defenses.split(",")))
    print("| case | T | target | before (static/adaptive) | after (all attacks) | strongest | attributed | anonymous | attack s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, name, parameters, rounds, target, *step in CASES:
        if wanted and name not in wanted:
            continue
        before, after, strongest, attributed, anonymous, seconds = [], [], [], [], [], []
        for seed in seeds:
            server = {"server_step": step[0]} if step else {}
            scenario = Scenario(n_users=20, n_rounds=rounds, participation=0.3, window=5, learning_rate=1.0, seed=seed, **server)
            observation, truth = simulate(scenario, make_defense(name, dict(parameters)))
            started = time.perf_counter()
            recoveries = run_attacks(observation, SETTINGS)
            seconds.append(time.perf_counter() - started)
            scores = [score_recovery(recovery, truth) for recovery in recoveries]
            success = [s["attack_success"] for s in scores]
            best = int(np.argmax(success))
            old = [s["attributed_success"] for r, s in zip(recoveries, scores) if r.attack != "anonymous"]
            before.append(max(old, default=0.0))
            after.append(success[best])
            strongest.append(recoveries[best].attack)
            attributed.append(scores[best]["attributed_success"])
            anonymous.append(scores[best]["anonymous_success"])
            print(f"{label} seed {seed}: " + ", ".join(f"{r.attack} {v:.2f}" for r, v in zip(recoveries, success)), file=sys.stderr)
        cell = lambda values: " / ".join(f"{v:.2f}" for v in values)  # noqa: E731
        print(
            f"| {label} | {rounds} | {'' if target is None else f'>= {target}'} | {cell(before)} | {cell(after)} "
            f"| {'/'.join(strongest)} | {cell(attributed)} | {cell(anonymous)} | {max(seconds):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
