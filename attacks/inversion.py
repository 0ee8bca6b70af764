"""Inference on one update: which labels it holds, and what its inputs looked like."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from benchmark.models import parameter_slices, set_flat


@dataclass(frozen=True)
class LocalTraining:
    """How a client turned its samples into the update it sent: public settings of the protocol.

    "fedsgd": the gradient of the mean loss; "fedavg": (w0 - w_final) / learning_rate after
    `epochs` passes of SGD over minibatches of `batch_size` (benchmark.simulation.local_update).
    """

    kind: str = "fedsgd"
    epochs: int = 1
    batch_size: int = 1
    learning_rate: float = 0.1


@dataclass(frozen=True)
class InversionSettings:
    """Cosine matching (Geiping et al., 2020): Adam steps per restart, restarts (the best is kept), TV weight.

    The TV weight was chosen on digits and Fashion-MNIST: at 1e-4 it flattened the LeNet CNN's
    reconstructions to 8-9 dB PSNR where 1e-6 gave 14-18 dB; the MLP's did not move.
    """

    steps: int = 300
    restarts: int = 2
    tv_weight: float = 1e-6
    learning_rate: float = 0.1


def infer_labels(model: nn.Module, update: np.ndarray, n_samples: int) -> np.ndarray:
    """Labels from the last layer's bias gradient, a sum of (softmax - one-hot): negative only at held classes.

    Each negative class gets a share of the batch proportional to its one-hot mass, estimated as the
    mean entry of the classes nobody holds (their softmax mass) minus its own entry; when more classes
    are negative than there are samples, the most negative ones are kept.
    """
    bias = update[parameter_slices(model)[-1]]
    negative = np.flatnonzero(bias < 0)
    if len(negative) == 0:
        negative = np.array([int(np.argmin(bias))])
    if len(negative) >= n_samples:
        return np.sort(negative[np.argsort(bias[negative], kind="stable")][:n_samples])
    background = bias[bias >= 0].mean() if np.any(bias >= 0) else 0.0
    mass = np.maximum(background - bias[negative], 1e-12)
    ideal = n_samples * mass / mass.sum()
    counts = np.maximum(np.floor(ideal).astype(np.int64), 1)
    while counts.sum() < n_samples:
        counts[np.argmax(ideal - counts)] += 1
    while counts.sum() > n_samples:
        counts[np.argmin(np.where(counts > 1, ideal - counts, np.inf))] -= 1
    return np.repeat(negative, counts)


def analytic_inversion(model: nn.Module, update: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray | None:
    """Exact input of a single sample when the first layer is fully connected: x = dW[i] / db[i].

    Exact for fedavg too: every local step's first-layer gradient is delta_k x^T, so their sum is
    (sum delta_k) x^T. Solves dW = db x^T by least squares over all rows (weighted by db), or returns
    None when the model does not start with a Linear layer (after Flatten).
    """
    layers = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
    first = next((m for m in layers if not isinstance(m, nn.Flatten)), None)
    if not isinstance(first, nn.Linear):
        return None
    weight_slice, bias_slice = parameter_slices(model)[:2]
    weight = update[weight_slice].reshape(first.out_features, first.in_features)
    bias = update[bias_slice]
    if not np.any(bias):
        return np.zeros(image_shape)
    x = (bias @ weight) / (bias @ bias)
    return np.clip(x.reshape(image_shape), 0.0, 1.0)


def simulated_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, training: LocalTraining) -> torch.Tensor:
    """The flat update the client would send for inputs x, differentiable in x (create_graph).

    fedavg replays every local SGD step in the order of the samples: the client's shuffle is
    unknown to the server, and irrelevant when one batch holds every sample.
    """
    names = [name for name, _ in model.named_parameters()]
    start = [p.detach().requires_grad_(True) for p in model.parameters()]

    def gradient(weights: list[torch.Tensor], batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = F.cross_entropy(functional_call(model, dict(zip(names, weights)), (x[batch],)), y[batch])
        return torch.autograd.grad(loss, weights, create_graph=True)

    everything = torch.arange(len(y), device=y.device)
    if training.kind == "fedsgd":
        return torch.cat([g.reshape(-1) for g in gradient(start, everything)])
    weights = start
    for _ in range(training.epochs):
        for batch in everything.split(training.batch_size):
            weights = [w - training.learning_rate * g for w, g in zip(weights, gradient(weights, batch))]
    return torch.cat([(w0 - w).reshape(-1) for w0, w in zip(start, weights)]) / training.learning_rate


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def matching_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, training: LocalTraining, tv_weight: float
) -> torch.Tensor:
    """1 - cosine(simulated update of x, observed update) + tv_weight * total variation of x."""
    update = simulated_update(model, x, y, training)
    return 1 - F.cosine_similarity(update, target, dim=0) + tv_weight * total_variation(x)


def cosine_inversion(
    model: nn.Module,
    update: np.ndarray,
    labels: np.ndarray,
    image_shape: tuple[int, ...],
    seed: int,
    training: LocalTraining = LocalTraining(),
    settings: InversionSettings = InversionSettings(),
    device: str = "cpu",
) -> np.ndarray:
    """Inverting Gradients: Adam on the inputs (through a sigmoid, so they stay in [0, 1]) to minimise matching_loss.

    Returns (B, C, H, W) images, B = len(labels), from the restart with the smallest final loss.
    The model must already sit on `device`; starting points are drawn on the CPU, so a seed gives
    the same start everywhere.
    """
    target = torch.from_numpy(np.asarray(update, dtype=np.float64)).to(device)
    y = torch.from_numpy(np.array(labels, dtype=np.int64)).to(device)
    generator = torch.Generator().manual_seed(seed)

    def loss(logits_x: torch.Tensor) -> torch.Tensor:
        return matching_loss(model, torch.sigmoid(logits_x), y, target, training, settings.tv_weight)

    best, best_loss = None, float("inf")
    for _ in range(max(settings.restarts, 1)):
        start = torch.randn((len(labels), *image_shape), generator=generator, dtype=torch.float64)
        logits_x = start.to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([logits_x], lr=settings.learning_rate)
        for _ in range(settings.steps):
            (logits_x.grad,) = torch.autograd.grad(loss(logits_x), [logits_x])
            optimizer.step()
        final = loss(logits_x).item()
        if best is None or final < best_loss:
            best, best_loss = torch.sigmoid(logits_x).detach().cpu().numpy(), final
    return best


def invert(
    model: nn.Module,
    weights: np.ndarray,
    update: np.ndarray,
    n_samples: int,
    image_shape: tuple[int, ...],
    seed: int,
    training: LocalTraining = LocalTraining(),
    settings: InversionSettings = InversionSettings(),
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(images (B, C, H, W), labels (B,)) from one update at the given global weights: labels first, then inputs.

    One sample behind a fully connected first layer is solved exactly; everything else by cosine matching.
    """
    set_flat(model, torch.from_numpy(weights))
    labels = infer_labels(model, update, n_samples)
    if n_samples == 1:
        image = analytic_inversion(model, update, image_shape)
        if image is not None:
            return image[None], labels
    return cosine_inversion(model, update, labels, image_shape, seed, training, settings, device), labels
