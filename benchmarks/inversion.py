"""Ceiling PSNR of the inversion (each user's true update as input) and its time per user, one at a time vs batched.

    .venv/bin/python benchmarks/inversion.py [--users 4] [--steps N] [--restarts N] [--previous] [--cases 1,6]
                                             [--threads 1] [--device cpu]

Prints one Markdown table on stdout. Each case gives k users their own samples (drawn with a fixed seed
from the case's data set), computes each user's true update with the benchmark's local training
(benchmark.local_sgd; for fedavg with several batches per epoch, each with its own shuffle, which the
server does not know and replays in sample order), then inverts the k updates twice in the same run:
one user at a time (attacks.inversion.invert, as the pipeline did) and all k together
(attacks.inversion.invert_many, one vmap-batched computation). Reported: the share of labels inferred
right, the mean PSNR over users of the Hungarian-matched reconstructions (what scoring computes) and the
seconds per user of each mode; beside them the baseline labels, read from the bias update's signs alone
(infer_labels, before fit_labels replays full-batch fedavg steps), and the PSNR the inversion reaches with them. Both modes must give the same images; the last column is the largest
difference in PSNR between them. The default InversionSettings unless overridden; `--previous` runs the
defaults before issue 13 (plain Adam on a sigmoid box, 2 restarts) as the baseline. `--threads 1` is
what a suite worker gets. torch's first call is warmed up untimed.
"""

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attacks.inversion import (  # noqa: E402
    InversionSettings, LocalTraining, cosine_inversion_many, infer_labels, invert, invert_many,
)
from benchmark.datasets import load_dataset  # noqa: E402
from benchmark.local_sgd import flatten, local_update, parameters_of  # noqa: E402
from benchmark.metrics import label_accuracy, match_batch, psnr  # noqa: E402
from benchmark.models import build_model, get_flat  # noqa: E402

SEED = 0
PREVIOUS = InversionSettings(restarts=2, signed=False, decay=False, box="sigmoid")  # the defaults before issue 13


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    dataset: str
    samples: int
    training: LocalTraining


# fedavg with one batch per epoch replays exactly; with two, the client's shuffle decides which samples share a step.
FEDAVG_ONE_BATCH = LocalTraining("fedavg", epochs=2, batch_size=4, learning_rate=0.5)
FEDAVG_SHUFFLED = LocalTraining("fedavg", epochs=2, batch_size=2, learning_rate=0.5)
CASES = (
    Case("MLP, digits 8x8, fedsgd, B = 1 (closed form)", "mlp", "digits", 1, LocalTraining()),
    Case("MLP, digits 8x8, fedsgd, B = 4", "mlp", "digits", 4, LocalTraining()),
    Case("MLP, digits 8x8, fedavg, B = 4 (2 epochs, batch 4)", "mlp", "digits", 4, FEDAVG_ONE_BATCH),
    Case("MLP, digits 8x8, fedavg, B = 4 (2 epochs, batch 2, shuffled)", "mlp", "digits", 4, FEDAVG_SHUFFLED),
    Case("LeNet, digits 8x8, fedsgd, B = 4", "cnn", "digits", 4, LocalTraining()),
    Case("LeNet, Fashion-MNIST 28x28, fedsgd, B = 4", "cnn", "fashion-mnist", 4, LocalTraining()),
    Case("LeNet, Fashion-MNIST 28x28, fedavg, B = 4 (2 epochs, batch 4)", "cnn", "fashion-mnist", 4, FEDAVG_ONE_BATCH),
    Case("LeNet, Fashion-MNIST 28x28, fedavg, B = 4 (2 epochs, batch 2, shuffled)", "cnn", "fashion-mnist", 4, FEDAVG_SHUFFLED),
    Case("LeNet, Fashion-MNIST 28x28, fedavg, B = 8 (2 epochs, batch 8, step 0.1: the standard suite's cell)", "cnn",
         "fashion-mnist", 8, LocalTraining("fedavg", epochs=2, batch_size=8, learning_rate=0.1)),
)


def true_updates(case: Case, users: int) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(model, weights (k, d), updates (k, d), images (k, B, C, H, W), labels (k, B)) of k users at the initial model."""
    data = load_dataset(case.dataset)
    rng = np.random.default_rng(SEED)
    pick = np.stack([rng.choice(len(data.y_train), case.samples, replace=False) for _ in range(users)])
    images, labels = np.asarray(data.x_train[pick], dtype=np.float64), np.asarray(data.y_train[pick])
    model = build_model(case.model, images.shape[2:], data.n_classes, SEED)
    start, training = parameters_of(model), case.training
    updates = []
    for x, y in zip(images, labels):
        shuffles = [torch.from_numpy(rng.permutation(case.samples)) for _ in range(training.epochs)]
        updates.append(flatten(local_update(model, start, torch.from_numpy(x), torch.from_numpy(y), training, shuffles)))
    weights = np.repeat(get_flat(model).numpy()[None], users, axis=0)
    return model, weights, torch.stack(updates).numpy(), images, labels


def measure(case: Case, users: int, settings: InversionSettings, device: str) -> dict[str, float]:
    model, weights, updates, images, labels = true_updates(case, users)
    shape, seeds = images.shape[2:], np.arange(users) + SEED
    started = time.perf_counter()
    alone = [invert(model, weights[i], updates[i], case.samples, shape, int(seeds[i]), case.training, settings, device)
             for i in range(users)]
    one_at_a_time = (time.perf_counter() - started) / users
    started = time.perf_counter()
    together, inferred = invert_many(model, weights, updates, case.samples, shape, seeds, case.training, settings, device)
    batched = (time.perf_counter() - started) / users
    quality = np.array([psnr(*match_batch(together[i], images[i])).mean() for i in range(users)])
    quality_alone = np.array([psnr(*match_batch(alone[i][0], images[i])).mean() for i in range(users)])
    # the baseline labels: the bias update's signs alone (attacks.inversion.infer_labels, before fit_labels)
    signs = np.stack([infer_labels(model, update, case.samples) for update in updates])
    signs_psnr = float("nan")
    if not np.array_equal(signs, inferred):  # fit_labels moved some label: invert again with the signs' labels
        images_by_signs = cosine_inversion_many(
            model, torch.as_tensor(weights), torch.as_tensor(updates), torch.as_tensor(signs), shape, [int(s) for s in seeds],
            case.training, settings)
        signs_psnr = float(np.mean([psnr(*match_batch(images_by_signs[i].numpy(), images[i])).mean() for i in range(users)]))
    return {
        "signs_labels": float(np.mean([label_accuracy(signs[i], labels[i]) for i in range(users)])),
        "signs_psnr": signs_psnr,
        "labels": float(np.mean([label_accuracy(inferred[i], labels[i]) for i in range(users)])),
        "psnr": float(quality.mean()),
        "psnr_min": float(quality.min()),
        "one_at_a_time": one_at_a_time,
        "batched": batched,
        "difference": float(np.abs(quality - quality_alone).max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = InversionSettings()
    parser.add_argument("--users", type=int, default=4, help="users per case, inverted together (default 4)")
    parser.add_argument("--steps", type=int, help=f"Adam steps per restart (default {defaults.steps})")
    parser.add_argument("--restarts", type=int, help=f"restarts (default {defaults.restarts}; {PREVIOUS.restarts} with --previous)")
    parser.add_argument("--previous", action="store_true", help="start from the defaults before issue 13 (the baseline)")
    parser.add_argument("--cases", default="", help="comma-separated case numbers (1-based) to run; default all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as in a suite worker)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = PREVIOUS if args.previous else defaults
    settings = replace(settings, steps=args.steps or settings.steps, restarts=args.restarts or settings.restarts)
    chosen = [CASES[int(i) - 1] for i in args.cases.split(",")] if args.cases else list(CASES)
    measure(CASES[1], 2, replace(settings, steps=5), args.device)  # warm-up: torch's first autograd call
    print(f"{args.users} users per case, true updates (the ceiling); {settings}; {args.threads} thread(s), device {args.device}.\n")
    print("| case | labels right | PSNR mean (min) dB | labels right, signs only | PSNR, signs' labels | "
          "s/user one at a time | s/user batched | max PSNR diff |")
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case in chosen:
        m = measure(case, args.users, settings, args.device)
        baseline = "same labels" if np.isnan(m["signs_psnr"]) else f"{m['signs_psnr']:.1f}"
        print(f"| {case.name} | {m['labels']:.2f} | {m['psnr']:.1f} ({m['psnr_min']:.1f}) | {m['signs_labels']:.2f} | {baseline} | "
              f"{m['one_at_a_time']:.3g} | {m['batched']:.3g} | {m['difference']:.1g} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
