"""Wall time of one inversion (labels, then inputs) per attack case, on this machine.

    .venv/bin/python benchmarks/inversion.py [--steps 300] [--restarts 2] [--threads 1] [--device cpu]

Prints one Markdown table on stdout. Each case builds one client update from known inputs
(digits for the MLP, a CIFAR-sized random image for the LeNet CNN), inverts it once with the
benchmark's own code (attacks.inversion.invert, the default InversionSettings unless overridden)
and reports the seconds and the PSNR of the Hungarian-matched reconstruction (on random CNN inputs,
which a TV prior cannot favour, the PSNR says little). `--threads 1` is what each suite worker gets
(one BLAS/OpenMP thread); torch's first call is warmed up untimed.
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attacks.inversion import InversionSettings, LocalTraining, analytic_inversion, cosine_inversion, infer_labels  # noqa: E402
from benchmark.datasets import load_dataset  # noqa: E402
from benchmark.metrics import match_batch, psnr  # noqa: E402
from benchmark.models import build_model  # noqa: E402
from benchmark.scenario import Scenario  # noqa: E402
from benchmark.simulation import local_update  # noqa: E402

SEED = 0
CIFAR_SHAPE = (3, 32, 32)
DIGIT_SHAPE = (1, 8, 8)


@dataclass(frozen=True)
class Case:
    name: str
    method: str  # "analytic" (closed form) or "cosine" (cosine matching, forced even where the closed form applies)
    model: str
    samples: int
    training: LocalTraining

    @property
    def local_steps(self) -> int:
        if self.training.kind == "fedsgd":
            return 1
        return self.training.epochs * -(-self.samples // self.training.batch_size)


# One batch per epoch: the replay is exact. Two batches: the client's shuffle (unknown to the server)
# decides which samples share a step, and the replay in sample order no longer matches it.
FEDAVG_ONE_BATCH = LocalTraining("fedavg", epochs=2, batch_size=4, learning_rate=0.5)
FEDAVG = LocalTraining("fedavg", epochs=2, batch_size=2, learning_rate=0.5)
CASES = (
    Case("analytic, MLP, 1 sample", "analytic", "mlp", 1, LocalTraining("fedsgd")),
    Case("cosine fedsgd, MLP, B = 1", "cosine", "mlp", 1, LocalTraining("fedsgd")),
    Case("cosine fedsgd, MLP, B = 2", "cosine", "mlp", 2, LocalTraining("fedsgd")),
    Case("cosine fedsgd, MLP, B = 4", "cosine", "mlp", 4, LocalTraining("fedsgd")),
    Case("cosine fedavg, MLP, B = 4 (2 epochs, batch 4)", "cosine", "mlp", 4, FEDAVG_ONE_BATCH),
    Case("cosine fedavg, MLP, B = 4 (2 epochs, batch 2, shuffled)", "cosine", "mlp", 4, FEDAVG),
    Case("cosine fedsgd, LeNet CNN, B = 1, 3x32x32", "cosine", "cnn", 1, LocalTraining("fedsgd")),
    Case("cosine fedavg, LeNet CNN, B = 4, 3x32x32 (2 epochs, batch 2, shuffled)", "cosine", "cnn", 4, FEDAVG),
)


def _inputs(case: Case, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    if case.model == "cnn":
        return rng.random((case.samples, *CIFAR_SHAPE)), rng.integers(0, 10, case.samples), CIFAR_SHAPE
    digits = load_dataset("digits")
    pick = rng.choice(len(digits.y_train), case.samples, replace=False)
    return np.array(digits.x_train[pick], dtype=np.float64), np.array(digits.y_train[pick]), DIGIT_SHAPE


def _update(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, training: LocalTraining) -> np.ndarray:
    scenario = Scenario(
        local_training=training.kind, local_epochs=training.epochs, batch_size=training.batch_size,
        learning_rate=training.learning_rate, samples_per_user=len(y),
    )
    return local_update(model, torch.from_numpy(x), torch.from_numpy(y), scenario, np.random.default_rng(SEED))


def time_case(case: Case, settings: InversionSettings, device: str) -> tuple[float, float]:
    """(seconds of one inversion, mean PSNR of its matched reconstructions)."""
    x, y, shape = _inputs(case, np.random.default_rng(SEED))
    model = build_model(case.model, shape, 10, SEED)
    update = _update(model, x, y, case.training)
    model = model.to(device)
    started = time.perf_counter()
    labels = infer_labels(model, update, case.samples)
    if case.method == "analytic":
        images = analytic_inversion(model, update, shape)[None]
    else:
        images = cosine_inversion(model, update, labels, shape, SEED, case.training, settings, device)
    seconds = time.perf_counter() - started
    return seconds, float(psnr(*match_batch(images, x)).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = InversionSettings()
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"Adam steps per restart (default {defaults.steps})")
    parser.add_argument("--restarts", type=int, default=defaults.restarts, help=f"restarts (default {defaults.restarts})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as in a suite worker)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = InversionSettings(steps=args.steps, restarts=args.restarts)
    time_case(CASES[1], InversionSettings(steps=5, restarts=1), args.device)  # warm-up: torch's first autograd call
    print(f"One inversion per case: {args.steps} Adam steps x {args.restarts} restarts for cosine matching, "
          f"{args.threads} thread(s), device {args.device}.\n")
    print("| case | local steps | seconds | PSNR (dB) |")
    print("| :--- | ---: | ---: | ---: |")
    for case in CASES:
        seconds, quality = time_case(case, settings, args.device)
        print(f"| {case.name} | {case.local_steps} | {seconds:.3g} | {quality:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
