"""The count-free attack with and without its targeted sweeps, side by side, where no analytics are published.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/targeted_sweeps.py [--shapes 100x1200,100x2400] [--seeds 0,1]

For each shape (users x rounds, 30% of users a round, synthetic Gaussian updates, `no-analytics`) and seed it runs
every attack (attacks.recovery.run_attacks) twice: with the targeted sweeps off (attacks.recovery.TARGETED_ROUNDS
= 0, the attack before them) and on. Prints one Markdown row per run: the anonymous attack's true columns among
those it kept and its attack_success, the best attempt's attack_success (prefix attempts included), and the
seconds all attacks took. One BLAS thread, as in the suite's workers.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import attacks.recovery  # noqa: E402
from attacks.recovery import run_attacks  # noqa: E402
from attacks.settings import AttackSettings  # noqa: E402
from benchmark.scenario import Scenario  # noqa: E402
from benchmark.scoring import score_recovery  # noqa: E402
from benchmark.simulation import simulate  # noqa: E402
from defenses.analytics import NoAnalytics  # noqa: E402


def true_columns(columns: np.ndarray, participants: np.ndarray) -> int:
    """How many of `columns` (T x k) are some user's participation column."""
    truth = {column.tobytes() for column in participants.T.astype(np.uint8)}
    return sum(column.astype(np.uint8).tobytes() in truth for column in columns.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="100x1200,100x2400", help="users x rounds, comma-separated")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    targeted_rounds = attacks.recovery.TARGETED_ROUNDS
    print("| users | rounds | seed | targeted sweeps | anonymous: true columns kept | anonymous success | best success "
          "| attack s |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        n_users, n_rounds = (int(part) for part in shape.split("x"))
        for seed in (int(s) for s in args.seeds.split(",")):
            scenario = Scenario(n_users=n_users, n_rounds=n_rounds, window=10, participation=0.3,
                                update_kind="synthetic", seed=seed)
            observation, truth = simulate(scenario, NoAnalytics())
            for label, rounds in (("off (before)", 0), ("on", targeted_rounds)):
                attacks.recovery.TARGETED_ROUNDS = rounds
                started = time.perf_counter()
                recoveries = run_attacks(observation, AttackSettings(time_limit=1.0))
                seconds = time.perf_counter() - started
                anonymous = recoveries[0]
                kept = true_columns(anonymous.columns, truth.participants)
                success = [score_recovery(recovery, truth)["attack_success"] for recovery in recoveries]
                print(f"| {n_users} | {n_rounds} | {seed} | {label} | {kept} of {anonymous.columns.shape[1]} "
                      f"| {success[0]:.3f} | {max(success):.3f} | {seconds:.1f} |", flush=True)
    attacks.recovery.TARGETED_ROUNDS = targeted_rounds


if __name__ == "__main__":
    main()
