"""Scores of one task: compares what the attack produced with the ground truth. Never runs an attack."""

import numpy as np
import pandas as pd

from attacks.pipeline import AttackOutput
from benchmark.metrics import label_accuracy, match_batch, psnr, ssim
from benchmark.simulation import GroundTruth

DELTA = 1e-5  # the delta of every reported (epsilon, delta) guarantee


def _cosines(recovered: np.ndarray, true: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(recovered, axis=1) * np.linalg.norm(true, axis=1)
    dots = np.einsum("ij,ij->i", recovered, true)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)


def _recovered_image_scores(output: AttackOutput, truth: GroundTruth) -> tuple[float, float, float]:
    pairs = [match_batch(output.images[user], truth.images[user]) for user in range(len(truth.images))]
    reconstructed, true = (np.stack([pair[k] for pair in pairs]) for k in (0, 1))
    shape = reconstructed.shape
    flat = (reconstructed.reshape(-1, *shape[2:]), true.reshape(-1, *shape[2:]))
    psnrs, ssims = psnr(*flat).reshape(shape[:2]), ssim(*flat).reshape(shape[:2])
    labels = [label_accuracy(output.labels[user], truth.labels[user]) for user in range(len(truth.images))]
    return float(psnrs.mean(axis=1).mean()), float(ssims.mean(axis=1).mean()), float(np.mean(labels))


def _aggregate_image_scores(output: AttackOutput, truth: GroundTruth) -> tuple[float, float, float]:
    """The floor: each round's reconstruction scored against its best-matching participant's images."""
    owners, reconstructed, true, labels = [], [], [], []
    for index, t in enumerate(output.aggregate_rounds):
        members = np.flatnonzero(truth.participants[t])
        if len(members) == 0:
            continue
        for user in members:
            matched, images = match_batch(output.aggregate_images[index], truth.images[user])
            owners.append(index)
            reconstructed.append(matched)
            true.append(images)
        labels.append(label_accuracy(output.aggregate_labels[index], truth.labels[members].reshape(-1)))
    if not owners:
        return float("nan"), float("nan"), float("nan")
    reconstructed, true = np.stack(reconstructed), np.stack(true)
    shape = reconstructed.shape
    flat = (reconstructed.reshape(-1, *shape[2:]), true.reshape(-1, *shape[2:]))
    frame = pd.DataFrame({
        "round": owners,
        "psnr": psnr(*flat).reshape(shape[:2]).mean(axis=1),
        "ssim": ssim(*flat).reshape(shape[:2]).mean(axis=1),
    })
    best = frame.loc[frame.groupby("round")["psnr"].idxmax()]
    return float(best["psnr"].mean()), float(best["ssim"].mean()), float(np.mean(labels))


def score(output: AttackOutput, truth: GroundTruth, epsilon: float) -> dict[str, float]:
    """The score columns of the results table for one (defense, scenario, seed)."""
    recovered = output.disaggregation
    columns_exact = (recovered.participants == truth.participants).all(axis=0)
    scores = {
        "exact_column_rate": float(columns_exact.mean()),
        "entry_accuracy": float((recovered.participants == truth.participants).mean()),
        "update_cosine": float(_cosines(recovered.updates, truth.updates).mean()),
        "test_accuracy": truth.test_accuracy,
        "epsilon": epsilon,
        "attack_seconds": recovered.wall_seconds,
        "unique_rate": recovered.status.count("unique") / len(recovered.status),
    }
    nan = float("nan")
    image_scores = (nan,) * 6
    if len(truth.images):
        image_scores = _recovered_image_scores(output, truth) + _aggregate_image_scores(output, truth)
    for name, value in zip(
        ("psnr_recovered", "ssim_recovered", "label_accuracy_recovered", "psnr_aggregate", "ssim_aggregate", "label_accuracy_aggregate"),
        image_scores,
    ):
        scores[name] = value
    return scores
