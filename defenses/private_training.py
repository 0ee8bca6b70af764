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


def dp_sgd_updates(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, scenario: Scenario,
                   noise_multiplier: float, clip_norm: float, rng: np.random.Generator,
                   cache: dict | None = None) -> np.ndarray:
    """(k, d): dp_sgd_update of k clients at once, x (k, S, ...) and y (k, S), per-example gradients vmapped.

    It draws from `rng` what k calls of dp_sgd_update, one client after another, would draw, in the same
    order (each client's batch orders and step noise), so the two give the same updates up to rounding.
    A first step over a client's whole data starts from the global model, so its clipped gradient sum is a
    function of (model, data) alone: with `cache` (a dict kept across calls) it is computed once per client
    and model, summed in sample order (under a frozen model, fedsgd clients then cost only their noise).
    """
    from torch.func import functional_call, grad, vmap

    k, samples = y.shape
    full_batch = scenario.local_training == "fedsgd"
    epochs = 1 if full_batch else scenario.local_epochs
    size = samples if full_batch else scenario.batch_size
    batches = -(-samples // size)
    start = {name: value.detach() for name, value in model.named_parameters()}
    dim = sum(value.numel() for value in start.values())
    orders = np.empty((k, epochs, samples), dtype=np.int64)
    noise = np.empty((k, epochs, batches, dim))
    for client in range(k):
        for epoch in range(epochs):
            orders[client, epoch] = np.arange(samples) if full_batch else rng.permutation(samples)
            for batch in range(batches):
                noise[client, epoch, batch] = rng.normal(0.0, noise_multiplier * clip_norm, size=dim)

    def example_loss(params, xi, yi):
        return F.cross_entropy(functional_call(model, params, (xi[None],)), yi[None], reduction="sum")

    per_example = vmap(vmap(grad(example_loss), in_dims=(None, 0, 0)), in_dims=(0, 0, 0))

    def clipped_sums(weights, xb, yb) -> torch.Tensor:
        grads = per_example(weights, xb, yb)
        flat = torch.cat([g.reshape(len(yb), yb.shape[1], -1) for g in grads.values()], dim=2)
        return (flat * torch.clamp(clip_norm / flat.norm(dim=2, keepdim=True), max=1.0)).sum(dim=1)

    weights = {name: value.expand(k, *value.shape).clone() for name, value in start.items()}
    for epoch in range(epochs):
        for batch in range(batches):
            index = torch.from_numpy(orders[:, epoch, batch * size : (batch + 1) * size])
            if cache is not None and epoch == 0 and size >= samples:
                summed = _first_step_sums(cache, start, x, y, lambda rows: clipped_sums(
                    {n: v.expand(len(rows), *v.shape) for n, v in start.items()}, x[rows], y[rows]))
            else:
                xb = torch.gather(x, 1, index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))
                summed = clipped_sums(weights, xb, torch.gather(y, 1, index))
            step = (summed + torch.from_numpy(noise[:, epoch, batch])) / index.shape[1]
            offset = 0
            for name, value in weights.items():
                width = value[0].numel()
                weights[name] = value - scenario.learning_rate * step[:, offset : offset + width].reshape(value.shape)
                offset += width
    moved = torch.cat([(start[name] - weights[name]).reshape(k, -1) for name in start], dim=1)
    return (moved / scenario.learning_rate).detach().numpy()


def _first_step_sums(cache: dict, start: dict, x: torch.Tensor, y: torch.Tensor, compute) -> torch.Tensor:
    """(k, d) clipped gradient sums of each client's whole data at the global model: cached ones reused, the rest
    computed together by `compute(rows)` (sample order, so a cached and a fresh sum are the same numbers)."""
    import hashlib

    model_key = hashlib.sha256(b"".join(v.numpy().tobytes() for v in start.values())).hexdigest()
    if cache.get("model") != model_key:  # a new global model: the old sums are of no more use
        cache.clear()
        cache["model"] = model_key
    keys = [hashlib.sha256(x[i].numpy().tobytes() + y[i].numpy().tobytes()).hexdigest() for i in range(len(y))]
    missing = [i for i, key in enumerate(keys) if key not in cache]
    if missing:
        for i, value in zip(missing, compute(torch.tensor(missing))):
            cache[keys[i]] = value
    return torch.stack([cache[key] for key in keys])
