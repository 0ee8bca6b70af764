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


def parameter_slices(model: nn.Module) -> list[slice]:
    """Where each parameter tensor sits in the flat vector, in order."""
    slices, offset = [], 0
    for parameter in model.parameters():
        slices.append(slice(offset, offset + parameter.numel()))
        offset += parameter.numel()
    return slices
