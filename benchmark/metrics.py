"""Image, label and property scores; image scores are invariant to the order of a batch (Hungarian matching)."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

PSNR_CAP = 100.0  # dB: a perfect reconstruction scores this instead of infinity, so means stay finite
DATA_RANGE = 1.0  # images live in [0, 1]
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet_Weights.IMAGENET1K_V1, the LPIPS backbone
LPIPS_SIZE = 64  # pixels on the short side that LPIPS inputs are upsampled to
AUC_CHANCE = 0.5


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


def property_accuracy(predictions: np.ndarray, truth: np.ndarray) -> float:
    """Share of users whose property was predicted correctly."""
    return float(np.mean(predictions == truth))


def property_auc(scores: np.ndarray, truth: np.ndarray, predictions: np.ndarray) -> float:
    """ROC AUC of the property scores against the true property (ties count one half).

    When every user has the same property there is nothing to rank and the AUC is undefined: NaN (it had
    copied property_accuracy, another score, into this column).
    """
    if truth.all() or not truth.any():
        return math.nan
    return float(roc_auc_score(truth, scores))


def majority_share(truth: np.ndarray) -> float:
    """The accuracy of always guessing the more common property value: chance for property_accuracy."""
    return float(max(truth.mean(), 1 - truth.mean()))


def lpips_unavailable() -> str | None:
    """Why LPIPS cannot run here without downloading anything, or None when it can."""
    if importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
    if not weights.is_file():
        return f"the AlexNet weights are not on disk at {weights}"
    return None


def lpips(reconstructed: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image LPIPS (AlexNet backbone, lower = more alike); call only when lpips_unavailable() is None.

    Grey images are repeated to three channels and small ones upsampled (bilinear) to LPIPS_SIZE
    pixels on their short side, since AlexNet's first layers shrink an 8 x 8 digit to nothing.
    """
    from torchmetrics.functional.image.lpips import learned_perceptual_image_patch_similarity

    pair = [torch.from_numpy(np.ascontiguousarray(images)).float() for images in (reconstructed, true)]
    if pair[0].shape[1] == 1:
        pair = [images.repeat(1, 3, 1, 1) for images in pair]
    short_side = min(pair[0].shape[-2:])
    if short_side < LPIPS_SIZE:
        scale = -(-LPIPS_SIZE // short_side)
        pair = [F.interpolate(images, scale_factor=scale, mode="bilinear").clamp(0.0, 1.0) for images in pair]
    values = learned_perceptual_image_patch_similarity(*pair, net_type="alex", reduction="none", normalize=True)
    return values.reshape(-1).numpy()
