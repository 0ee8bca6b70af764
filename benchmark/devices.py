"""Where torch work runs: the --device choice, checked before any work (a light module: no torch until asked)."""

from benchmark.errors import BenchmarkError

DEVICES = ("cpu", "cuda", "auto")


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise BenchmarkError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


def resolve_device(device: str) -> str:
    """"auto" is cuda where torch sees a GPU, else cpu; asking for cuda without one is an error."""
    if check_device(device) == "cpu":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise BenchmarkError("--device cuda: torch sees no CUDA device here")
    return "cpu"
