"""Which frozen model should a malicious server pick? How far apart users' updates lie, per choice of weights.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/frozen_model.py [--users 100] [--samples 4] [--rounds 1200]
        [--noise 0.01] [--seed 0]

The standard suite's LeNet cells freeze the model at PyTorch's initialisation, and every DP setting scores 0
there. A server chooses the weights it freezes, so a 0 is only as strong as that choice. For each choice below
this computes the users' fedsgd updates on Fashion-MNIST (the suite's label-skewed split, `samples` images
each), clipped to norm 1 as the LDP defenses clip them, and prints:
- singular values 1, 10, 50 and n of the n x d matrix of normalised updates (how many directions tell users
  apart; the attack needs n of them);
- under `ldp-gaussian(z=noise)` (each client adds N(0, noise^2) per coordinate to its clipped update), with a
  random participation matrix P (rounds x n, 30% a round, analytics windows of 10 rounds), the median relative
  distance of the true columns of P to the top-n left singular subspace of A = P G + noise, from all
  coordinates and from those the attack keeps (attacks.geometry.signal_coordinates): 0 = every column lies in
  it; about 0.84 = only the all-ones direction (a column's mean part) is captured;
- how many columns the attack (attacks.disaggregation.disaggregate under noise: search, exchanges) recovers
  exactly, and the median cosine between the true updates and least-squares updates from the *true* P: the
  best any disaggregation could do, since `attack_success` asks for 0.95.
Choices (benchmark.models.design_weights): PyTorch's initialisation; every convolution rescaled so that its
pre-activations have standard deviation `tau` on 500 test images (LSUV-style, the server's public data), the last
layer zeroed; the same with the last convolution's bias shifted so that only a share of its sigmoid units are
active (sparse features); and that last design with the last layer kept, which cells select with
`initial_model = "designed"`. Prints one Markdown table on stdout.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

WINDOW = 10  # analytics window of the suite's cells

from benchmark.datasets import load_dataset  # noqa: E402
from benchmark.models import DESIGN_ACTIVE, DESIGN_PUBLIC_IMAGES, DESIGN_SCALE, build_model, design_weights, flat_gradient  # noqa: E402
from benchmark.observation import window_sums  # noqa: E402
from benchmark.simulation import partition  # noqa: E402
from attacks.disaggregation import disaggregate, least_squares  # noqa: E402
from attacks.geometry import column_space, left_singular, signal_coordinates  # noqa: E402
from attacks.settings import AttackSettings  # noqa: E402

# (label, tau, share of active units in the last convolution, zero the last layer; tau None: PyTorch's initialisation)
CHOICES = [("PyTorch initialisation (`initial_model = \"default\"`)", None, 1.0, False),
           ("LSUV tau=4, last layer zeroed", 4.0, 1.0, True), ("LSUV tau=32, last layer zeroed", 32.0, 1.0, True),
           ("LSUV tau=32, 10% units active, last layer zeroed", 32.0, 0.1, True),
           ("LSUV tau=32, 3% units active, last layer zeroed", 32.0, 0.03, True),
           ("LSUV tau=32, 3% units active (`initial_model = \"designed\"`)", DESIGN_SCALE, DESIGN_ACTIVE, False)]


def normalised_updates(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    rows = []
    for x, y in zip(images, labels):
        rows.append(flat_gradient(model, torch.nn.functional.cross_entropy(model(x), y)).numpy())
    updates = np.array(rows)
    return updates / np.maximum(np.linalg.norm(updates, axis=1), 1.0)[:, None]


def noisy_outcome(updates: np.ndarray, rounds: int, noise: float, rng: np.random.Generator) -> dict:
    """Under ldp noise on a random participation: how near the searched subspace the true columns lie (all coordinates,
    and those the attack keeps), how many columns the attack recovers exactly, and the median cosine of least-squares
    updates from the true participants (what attack_success could reach at best: it needs 0.95)."""
    n, d = updates.shape
    participants = (rng.random((rounds, n)) < 0.3).astype(np.float64)
    aggregates = participants @ updates + noise * np.sqrt(participants.sum(axis=1))[:, None] * rng.standard_normal((rounds, d))
    counts = window_sums(participants, WINDOW).T.astype(np.int64)

    def distance(basis: np.ndarray) -> float:
        outside = participants - basis @ (basis.T @ participants)
        return float(np.median(np.linalg.norm(outside, axis=0) / np.linalg.norm(participants, axis=0)))

    full = left_singular(aggregates)
    result = disaggregate(aggregates, counts, WINDOW, settings=AttackSettings(noise=True))
    oracle = least_squares(participants, aggregates)
    cosine = np.sum(oracle * updates, axis=1) / np.linalg.norm(oracle, axis=1) / np.linalg.norm(updates, axis=1)
    return {
        "all": distance(full[0][:, :n]),
        "kept": distance(column_space(aggregates, n, True)),
        "coordinates": len(signal_coordinates(aggregates, n, full[1])),
        "exact": int((result.participants == participants).all(axis=0).sum()),
        "oracle": float(np.median(cosine)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1200)
    parser.add_argument("--noise", type=float, default=0.01, help="z x clip norm of ldp-gaussian (clip norm 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset("fashion-mnist")
    index = partition(dataset, args.users, args.samples, np.random.default_rng(args.seed))
    images = torch.tensor(dataset.x_train[index], dtype=torch.float64)
    labels = torch.tensor(dataset.y_train[index])
    public = torch.tensor(dataset.x_test[:DESIGN_PUBLIC_IMAGES], dtype=torch.float64)
    print(f"Fashion-MNIST LeNet fedsgd, {args.users} users of {args.samples} images, updates clipped to norm 1; "
          f"ldp noise {args.noise} per coordinate, {args.rounds} rounds, 30% a round\n")
    print("| frozen model | sv 1 | sv 10 | sv 50 | sv n | median distance of true columns to top-n subspace, all coordinates"
          " | the same, coordinates the attack keeps (how many) | columns the attack recovers exactly"
          " | median cosine of updates from the true columns | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, tau, active, zero_last in CHOICES:
        started = time.perf_counter()
        model = build_model("cnn", tuple(images.shape[2:]), dataset.n_classes, args.seed)
        if tau is not None:
            model = design_weights(model, public, tau, active, zero_last)
        updates = normalised_updates(model, images, labels)
        singular = np.linalg.svd(updates, compute_uv=False)
        outcome = noisy_outcome(updates, args.rounds, args.noise, np.random.default_rng([args.seed, 1]))
        picks = [singular[min(k, len(singular)) - 1] for k in (1, 10, 50, args.users)]
        print(f"| {label} | " + " | ".join(f"{value:.3g}" for value in picks)
              + f" | {outcome['all']:.3f} | {outcome['kept']:.3f} ({outcome['coordinates']}) | {outcome['exact']}/{args.users}"
              f" | {outcome['oracle']:.3f} | {time.perf_counter() - started:.1f} |")


if __name__ == "__main__":
    main()
