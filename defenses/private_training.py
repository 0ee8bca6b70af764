"""DP-SGD local training: opacus' per-example gradients, clipped and noised at every step."""

import copy
import warnings

import numpy as np
import torch
from opacus import GradSampleModule
from torch.nn import functional as F

from benchmark.models import get_flat, set_flat
from benchmark.scenario import Scenario


def _noisy_gradient(sampled: GradSampleModule, x: torch.Tensor, y: torch.Tensor, noise_multiplier: float,
                    clip_norm: float, rng: np.random.Generator) -> torch.Tensor:
    """Mean of the clipped per-example gradients plus N(0, (noise_multiplier * clip_norm)^2) / batch size."""
    sampled.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # opacus' hooks fire on the module outputs; the inputs need no gradient, so this warning is moot.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        F.cross_entropy(sampled(x), y, reduction="sum").backward()
    per_example = torch.cat([p.grad_sample.reshape(len(y), -1) for p in sampled.parameters()], dim=1)
    scale = torch.clamp(clip_norm / per_example.norm(dim=1, keepdim=True), max=1.0)
    noise = torch.from_numpy(rng.normal(0.0, noise_multiplier * clip_norm, size=per_example.shape[1]))
    return ((per_example * scale).sum(dim=0) + noise) / len(y)


def dp_sgd_update(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, scenario: Scenario,
                  noise_multiplier: float, clip_norm: float, rng: np.random.Generator) -> np.ndarray:
    """benchmark.simulation.local_update with DP-SGD steps: fedsgd is one full-batch step; `model` is left unchanged."""
    sampled = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    start = get_flat(model)
    weights = start.clone()
    full_batch = scenario.local_training == "fedsgd"
    for _ in range(1 if full_batch else scenario.local_epochs):
        order = torch.arange(len(y)) if full_batch else torch.from_numpy(rng.permutation(len(y)))
        for batch in order.split(len(y) if full_batch else scenario.batch_size):
            set_flat(sampled, weights)
            gradient = _noisy_gradient(sampled, x[batch], y[batch], noise_multiplier, clip_norm, rng)
            weights = weights - scenario.learning_rate * gradient
    return ((start - weights) / scenario.learning_rate).numpy()
