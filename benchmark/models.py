"""The client models and the helpers that move their parameters to and from flat vectors."""

import torch
from torch import nn


def build_model(name: str, image_shape: tuple[int, int, int], n_classes: int, seed: int) -> nn.Module:
    """A freshly initialised model; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        channels, height, width = image_shape
        if name == "mlp":
            model: nn.Module = nn.Sequential(
                nn.Flatten(), nn.Linear(channels * height * width, 64), nn.Sigmoid(), nn.Linear(64, n_classes)
            )
        else:
            # The LeNet-style CNN of the authors' CIFAR-10 demo (as in DLG), sized to the input.
            model = nn.Sequential(
                nn.Conv2d(channels, 12, 5, padding=2, stride=2),
                nn.Sigmoid(),
                nn.Conv2d(12, 12, 5, padding=2, stride=2),
                nn.Sigmoid(),
                nn.Conv2d(12, 12, 5, padding=2, stride=1),
                nn.Sigmoid(),
                nn.Flatten(),
                nn.Linear(12 * (-(-height // 4)) * (-(-width // 4)), n_classes),
            )
    return model.double()


# The frozen LeNet a malicious server designs to tell users apart (benchmarks/frozen_model.py): every convolution
# rescaled so that its pre-activations have this standard deviation on the server's public images, and the last
# convolution's bias shifted so that only this share of its sigmoid units is active. Users' updates then differ in
# many directions (at PyTorch's initialisation in about nine): 100 Fashion-MNIST users, 1200 rounds,
# ldp-gaussian(z=0.01): the true columns' median distance to the searched subspace 0.81 -> 0.20, columns recovered
# 0 -> 96; dp-aggregate(z=0.01) and dp-fedavg(z=1, cohort 1000; its noise then in the server's view): attack
# success 0 -> 1.0. Its price: image
# inversion is poor on it (ceiling PSNR 5.8 against 15.0 dB), labels are not (1.0).
DESIGN_SCALE = 32.0
DESIGN_ACTIVE = 0.03
DESIGN_PUBLIC_IMAGES = 500  # the server's public data: the first test images


def design_weights(model: nn.Module, public: torch.Tensor, scale: float = DESIGN_SCALE, active: float = DESIGN_ACTIVE,
                   zero_last: bool = False) -> nn.Module:
    """Rescale `model`'s convolutions in place (LSUV-style, on `public` images) and sparsify its last one's units.

    `zero_last`: also zero the final linear layer (then only that layer's gradient is non-zero)."""
    layers = list(model)
    convolutions = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
    if not convolutions:
        raise ValueError("design_weights needs a model with convolutions")
    with torch.no_grad():
        activations = public
        for i, layer in enumerate(layers[: convolutions[-1] + 1]):  # one pass, each layer designed as it is reached
            activations = layer(activations)
            if i in convolutions:
                factor = scale / activations.std().item()
                layer.weight.mul_(factor)
                layer.bias.mul_(factor)
                activations = activations * factor
            if i == convolutions[-1] and active < 1:
                layer.bias.sub_(torch.quantile(activations.flatten()[:200_000], 1 - active))
        if zero_last:
            layers[-1].weight.zero_()
            layers[-1].bias.zero_()
    return model


def get_flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def set_flat(model: nn.Module, flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for parameter in model.parameters():
            size = parameter.numel()
            parameter.copy_(flat[offset : offset + size].view_as(parameter))
            offset += size


def flat_gradient(model: nn.Module, loss: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


def logit_shift(model: nn.Module) -> torch.Tensor | None:
    """The unit flat direction that adds one constant to every logit (the final linear layer's bias); None where the
    model does not end in a biased linear layer. Softmax ignores that constant, so along it no prediction, no
    cross-entropy loss and no gradient changes: a server can move the model there without changing any update."""
    last = list(model.modules())[-1]
    if not isinstance(last, nn.Linear) or last.bias is None:
        return None
    parts = [torch.full_like(p, 1.0 if p is last.bias else 0.0).reshape(-1) for p in model.parameters()]
    direction = torch.cat(parts)
    return direction / direction.norm()


def parameter_slices(model: nn.Module) -> list[slice]:
    """Where each parameter tensor sits in the flat vector, in order."""
    slices, offset = [], 0
    for parameter in model.parameters():
        slices.append(slice(offset, offset + parameter.numel()))
        offset += parameter.numel()
    return slices
