"""A client's local training as one pure function of the model's parameters (torch.func), shared by whoever replays it.

The same function runs the protocol (the simulated client, with its shuffle) and the attack's replay (the
server's guess of the inputs, differentiable in them and batchable over users with torch.func.vmap).
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

Parameters = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LocalTraining:
    """How a client turned its samples into the update it sent: public settings of the protocol.

    "fedsgd": the gradient of the mean loss; "fedavg": (w0 - w_final) / learning_rate after
    `epochs` passes of SGD over minibatches of `batch_size`.
    """

    kind: str = "fedsgd"
    epochs: int = 1
    batch_size: int = 1
    learning_rate: float = 0.1


def parameters_of(model: nn.Module) -> Parameters:
    return {name: p.detach() for name, p in model.named_parameters()}


def unflatten(model: nn.Module, flat: torch.Tensor) -> Parameters:
    """Flat vectors (..., d) as named parameters (..., *shape), in the order of model.parameters()."""
    out, offset = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[..., offset : offset + p.numel()].reshape(*flat.shape[:-1], *p.shape)
        offset += p.numel()
    return out


def flatten(parameters: Parameters) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in parameters.values()])


def local_update(
    model: nn.Module,
    parameters: Parameters,
    x: torch.Tensor,
    y: torch.Tensor,
    training: LocalTraining,
    orders: list[torch.Tensor] | None = None,
) -> Parameters:
    """The update a client sends, per parameter: fedsgd's gradient, or fedavg's (w0 - w_final) / learning_rate.

    `orders` holds each epoch's permutation of the samples (the client's shuffle); None replays them in
    sample order. Pure in (parameters, x): differentiable, and vmap-able over users.
    """

    def loss(weights: Parameters, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, weights, (inputs,)), targets)

    if training.kind == "fedsgd":
        return grad(loss)(parameters, x, y)
    weights = parameters
    for epoch in range(training.epochs):
        order = orders[epoch] if orders is not None else torch.arange(len(y), device=y.device)
        for batch in order.split(training.batch_size):
            step = grad(loss)(weights, x[batch], y[batch])
            weights = {name: w - training.learning_rate * step[name] for name, w in weights.items()}
    return {name: (parameters[name] - weights[name]) / training.learning_rate for name in parameters}


def local_updates(
    model: nn.Module,
    parameters: Parameters,
    x: torch.Tensor,
    y: torch.Tensor,
    training: LocalTraining,
    orders: torch.Tensor | None = None,
) -> torch.Tensor:
    """(k, d) flat updates of k clients trained together from the same `parameters`: local_update vmapped over
    x (k, S, ...), y (k, S) and orders (k, epochs, S) (None: sample order)."""
    def one(inputs, targets, order):
        return flatten(local_update(model, parameters, inputs, targets, training, None if order is None else list(order)))

    return vmap(one, in_dims=(0, 0, None if orders is None else 0))(x, y, orders)
