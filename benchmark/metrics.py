"""Image and label scores, invariant to the order of a batch (Hungarian matching before scoring)."""

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

PSNR_CAP = 100.0  # dB: a perfect reconstruction scores this instead of infinity, so means stay finite
DATA_RANGE = 1.0  # images live in [0, 1]


def psnr(reconstructed: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB (data_range 1), capped at PSNR_CAP; inputs (B, C, H, W)."""
    values = peak_signal_noise_ratio(
        torch.from_numpy(reconstructed), torch.from_numpy(true), data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3)
    )
    return np.minimum(values.numpy(), PSNR_CAP)


def ssim(reconstructed: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image SSIM (data_range 1); a 3x3 Gaussian window, since the bundled digits are 8x8."""
    kernel = 3 if min(true.shape[-2:]) < 16 else 11
    values = structural_similarity_index_measure(
        torch.from_numpy(reconstructed), torch.from_numpy(true), data_range=DATA_RANGE, kernel_size=kernel, reduction="none"
    )
    return values.numpy()


def match_batch(reconstructed: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair reconstructions with true images to minimise the total squared error (Hungarian method)."""
    cost = ((reconstructed[:, None] - true[None]) ** 2).reshape(len(reconstructed), len(true), -1).mean(axis=2)
    rows, cols = linear_sum_assignment(cost)
    return reconstructed[rows], true[cols]


def label_accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
    """Share of the true labels recovered, as multisets (order does not matter)."""
    predicted_counts = np.bincount(predicted, minlength=max(predicted.max(initial=0), true.max(initial=0)) + 1)
    true_counts = np.bincount(true, minlength=len(predicted_counts))
    return float(np.minimum(predicted_counts[: len(true_counts)], true_counts).sum() / max(len(true), 1))
