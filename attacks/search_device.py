"""The projection search's array steps, on numpy (the reference) or on a torch device (a GPU).

attacks/projection_search.py runs one loop and one subspace step (two products per iteration, all users at
once) over either backend, which supplies the arrays, the clipping and window sums, the box or the rounding to
window counts, and the residual checks. The numpy
backend is the default and gives the same answer on every machine; the torch one runs the same arithmetic
where the products are cheap (`AttackSettings.device`), and hands back numpy arrays at each check, where the
bookkeeping (best candidates, peeling) stays on the CPU. torch is imported only when a device is asked for.
"""

import numpy as np

from attacks.geometry import Geometry


class NumpyArrays:
    """The reference backend: numpy arrays, the geometry's own window sums, rounding and residual."""

    def __init__(self, geometry: Geometry, dtype: type) -> None:
        self.geometry, self.dtype = geometry, dtype

    def asarray(self, values: np.ndarray) -> np.ndarray:
        """Floating arrays in the iteration's precision (no copy when they have it)."""
        return values.astype(self.dtype, copy=False) if np.issubdtype(values.dtype, np.floating) else values

    def numpy(self, values: np.ndarray) -> np.ndarray:
        return values

    def clip(self, values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        return np.clip(values, low, high)

    def window_sums(self, values: np.ndarray) -> np.ndarray:
        return self.geometry.window_sums(values)

    def box(self, values: np.ndarray, open_rounds: np.ndarray) -> np.ndarray:
        return np.clip(values, 0.0, open_rounds)

    def round(self, values: np.ndarray, open_rounds: np.ndarray | None, users: np.ndarray, dtype: type) -> np.ndarray:
        """round_to_counts, taking rounds known to be 0 (not `open_rounds`) last."""
        masked = values if open_rounds is None else np.where(open_rounds, values, -np.inf)
        return self.geometry.round_to_counts(masked, users).astype(dtype, copy=False)

    def residual(self, columns: np.ndarray) -> np.ndarray:
        return self.geometry.residual(columns)


class TorchArrays:
    """The same steps on a torch device, float64 like the reference (the answers may still differ in the last
    bits, and a non-convex search can then end elsewhere: the CPU path stays the reference)."""

    def __init__(self, geometry: Geometry, device: str, dtype: type) -> None:
        import torch

        self.torch, self.device, self.geometry = torch, torch.device(device), geometry
        self.dtype = getattr(torch, np.dtype(dtype).name)  # the iteration's precision, as numpy's path
        self.basis = self.asarray(geometry.basis)
        self.counts, self.high = self.asarray(geometry.counts), self.asarray(geometry.high)

    def asarray(self, values: np.ndarray):
        """On the device; floating arrays in the iteration's precision."""
        tensor = self.torch.as_tensor(np.ascontiguousarray(values), device=self.device)
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor

    def numpy(self, values) -> np.ndarray:
        return values.detach().cpu().numpy()

    def box(self, values, open_rounds):
        return self.torch.minimum(values.clamp(min=0.0), open_rounds.to(values.dtype))

    def clip(self, values, low, high):
        return self.torch.clamp(values, min=low, max=high)

    def window_sums(self, values):
        """(W, m) the window sums of (T, m) values, the last window possibly shorter."""
        return self.blocks(values, 0.0).sum(dim=1)

    def blocks(self, values, fill: float):
        window, rounds = self.geometry.window, values.shape[0]
        n_windows = -(-rounds // window)
        padded = values.new_full((n_windows * window, values.shape[1]), fill)
        padded[:rounds] = values
        return padded.reshape(n_windows, window, values.shape[1])

    def round(self, values, open_rounds, users: np.ndarray, dtype: type):
        """Geometry.round_to_counts on the device: in each window the top-c rounds get 1 (ties to the earlier round)."""
        torch = self.torch
        scores = values if open_rounds is None else torch.where(open_rounds, values, torch.full_like(values, -np.inf))
        blocks = self.blocks(scores, -np.inf)
        order = torch.argsort(-blocks, dim=1, stable=True)
        ranks = torch.empty_like(order)
        positions = torch.arange(blocks.shape[1], device=self.device)[None, :, None].expand_as(order)
        ranks.scatter_(1, order, positions)
        index = torch.as_tensor(users, device=self.device)
        wanted = self.counts[index].T
        if not self.geometry.exact:
            wanted = torch.clamp((blocks > 0.5).sum(dim=1), min=wanted, max=self.high[index].T)
        binary = ranks < wanted[:, None, :]
        return binary.reshape(-1, binary.shape[2])[: values.shape[0]].to(getattr(torch, np.dtype(dtype).name))

    def residual(self, columns) -> np.ndarray:
        """Geometry.residual, in float64 as the numpy path checks every candidate."""
        basis, columns = self.basis.to(self.torch.float64), columns.to(self.torch.float64)
        outside = columns - basis @ (basis.T @ columns)
        norms = self.torch.linalg.vector_norm(outside, dim=0)
        return self.numpy(norms / self.torch.clamp(self.torch.linalg.vector_norm(columns, dim=0), min=1.0))


def arrays_for(geometry: Geometry, device: str, dtype: type):
    """The backend for `device`: numpy for "cpu" (the reference), torch otherwise."""
    return NumpyArrays(geometry, dtype) if device == "cpu" else TorchArrays(geometry, device, dtype)
