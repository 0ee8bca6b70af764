"""Inference on an update: which labels it holds, and what its inputs looked like."""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.models import flat_gradient, parameter_slices, set_flat


def infer_labels(model: nn.Module, update: np.ndarray, n_samples: int) -> np.ndarray:
    """Labels from the last layer's bias gradient (softmax - one-hot is negative only at the true labels).

    Returns the `n_samples` most negative classes (a class may repeat when the
    batch is larger than the number of negative entries).
    """
    bias = update[parameter_slices(model)[-1]]
    order = np.argsort(bias, kind="stable")
    negative = order[bias[order] < 0]
    if len(negative) == 0:
        negative = order[:1]
    return np.resize(negative, n_samples)


def analytic_inversion(model: nn.Module, update: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray | None:
    """Exact input of a single sample when the first layer is fully connected: x = dW[i] / db[i].

    Uses the rows with the largest |db| (weighted least squares over them), or
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


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def cosine_inversion(
    model: nn.Module,
    update: np.ndarray,
    labels: np.ndarray,
    image_shape: tuple[int, ...],
    seed: int,
    steps: int = 300,
    restarts: int = 1,
    tv_weight: float = 1e-4,
    learning_rate: float = 0.1,
) -> np.ndarray:
    """Inverting Gradients (Geiping et al., 2020): Adam on inputs to maximise cosine(grad(x), update) + TV prior.

    Matches a single-gradient (fedsgd) update of len(labels) samples; returns
    (B, C, H, W) images in [0, 1], the restart with the best final match.
    """
    target = torch.from_numpy(update)
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)

    def objective(logits_x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(logits_x)
        gradient = flat_gradient(model, F.cross_entropy(model(x), y), create_graph=True)
        return 1 - F.cosine_similarity(gradient, target, dim=0) + tv_weight * _total_variation(x)

    best, best_loss = None, float("inf")
    for _ in range(restarts):
        logits_x = torch.randn((len(labels), *image_shape), generator=generator, dtype=torch.float64).requires_grad_(True)
        optimizer = torch.optim.Adam([logits_x], lr=learning_rate)
        for _ in range(steps):
            optimizer.zero_grad()
            objective(logits_x).backward()
            optimizer.step()
        final = objective(logits_x).item()
        if final < best_loss:
            best, best_loss = torch.sigmoid(logits_x).detach().numpy(), final
    return best


def invert(
    model: nn.Module, weights: np.ndarray, update: np.ndarray, n_samples: int, image_shape: tuple[int, ...], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(images (B, C, H, W), labels (B,)) reconstructed from one update at the given global weights."""
    set_flat(model, torch.from_numpy(weights))
    labels = infer_labels(model, update, n_samples)
    if n_samples == 1:
        image = analytic_inversion(model, update, image_shape)
        if image is not None:
            return image[None], labels
    return cosine_inversion(model, update, labels, image_shape, seed), labels
