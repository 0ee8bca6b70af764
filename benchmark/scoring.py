"""Scores of one task: compares what the attack produced with the ground truth. Never runs an attack.

Every inference quantity is scored three times: on the recovered updates (`*_recovered`), on the
true updates (`*_ceiling`, the same inference code run by an oracle that knew each update) and on
the round sums alone (`*_aggregate`, the floor secure aggregation leaves); its share says where the
attack lands between floor and ceiling.
"""

import math

import numpy as np
import pandas as pd

from attacks.disaggregation import Disaggregation
from attacks.pipeline import AttackOutput, Inference
from attacks.properties import PropertyGuess, holds_property
from benchmark.metrics import (
    AUC_CHANCE,
    label_accuracy,
    lpips,
    lpips_unavailable,
    majority_share,
    match_batch,
    property_accuracy,
    property_auc,
    psnr,
    ssim,
)
from benchmark.simulation import GroundTruth

DELTA = 1e-5  # the delta of every reported (epsilon, delta) guarantee
QUANTITIES = ("psnr", "ssim", "label_accuracy", "property_auc", "property_accuracy")
SHARE_COLUMNS = {
    "psnr": "psnr_share",
    "ssim": "ssim_share",
    "label_accuracy": "label_share",
    "property_auc": "property_share",
    "property_accuracy": "property_accuracy_share",
}
EQUAL = 1e-9  # ceiling and floor closer than this count as equal
SUCCESS_COSINE = 0.95  # a recovered update this close to the true one counts as that user's update


def share(recovered: float, floor: float, ceiling: float) -> float:
    """(recovered - floor) / (ceiling - floor), clipped to [0, 1]: 0 at the aggregate-only floor, 1 at the ceiling.

    Clipped because a narrow range would blow noise up (0.1 against a floor of 0.95 and a ceiling
    of 1.0 is -17): below the floor disaggregation gained nothing, and the raw columns keep the rest.
    When ceiling equals floor there is no range: 1.0 if recovered reaches the ceiling, else 0.0.
    NaN only when a side is NaN (nothing to score, e.g. synthetic updates).
    """
    if any(math.isnan(value) for value in (recovered, floor, ceiling)):
        return math.nan
    if abs(ceiling - floor) <= EQUAL:
        return 1.0 if recovered >= ceiling - EQUAL else 0.0
    return min(max((recovered - floor) / (ceiling - floor), 0.0), 1.0)


def _cosines(recovered: np.ndarray, true: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(recovered, axis=1) * np.linalg.norm(true, axis=1)
    dots = np.einsum("ij,ij->i", recovered, true)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)


def _matched(images: np.ndarray, truth: GroundTruth) -> tuple[np.ndarray, np.ndarray]:
    """(n * B, C, H, W) reconstructions and true images, each user's batch paired by the Hungarian method."""
    pairs = [match_batch(images[user], truth.images[user]) for user in range(len(truth.images))]
    reconstructed, true = (np.concatenate([pair[k] for pair in pairs]) for k in (0, 1))
    return reconstructed, true


def _property_scores(guess: PropertyGuess, has: np.ndarray) -> dict[str, float]:
    return {
        "property_auc": property_auc(guess.scores, has, guess.predictions),
        "property_accuracy": property_accuracy(guess.predictions, has),
    }


def _user_scores(inference: Inference, truth: GroundTruth, has: np.ndarray) -> dict[str, float]:
    """Per-user quantities averaged over users (image scores first averaged over each user's batch)."""
    reconstructed, true = _matched(inference.images, truth)
    shape = (len(truth.images), -1)
    labels = [label_accuracy(inference.labels[user], truth.labels[user]) for user in range(len(truth.images))]
    return {
        "psnr": float(psnr(reconstructed, true).reshape(shape).mean(axis=1).mean()),
        "ssim": float(ssim(reconstructed, true).reshape(shape).mean(axis=1).mean()),
        "label_accuracy": float(np.mean(labels)),
        **_property_scores(inference.property, has),
    }


def _aggregate_scores(output: AttackOutput, truth: GroundTruth, has: np.ndarray) -> dict[str, float]:
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
    scores = {"psnr": math.nan, "ssim": math.nan, "label_accuracy": math.nan, **_property_scores(output.aggregate_property, has)}
    if not owners:
        return scores
    reconstructed, true = np.stack(reconstructed), np.stack(true)
    shape = reconstructed.shape
    flat = (reconstructed.reshape(-1, *shape[2:]), true.reshape(-1, *shape[2:]))
    frame = pd.DataFrame({
        "round": owners,
        "psnr": psnr(*flat).reshape(shape[:2]).mean(axis=1),
        "ssim": ssim(*flat).reshape(shape[:2]).mean(axis=1),
    })
    best = frame.loc[frame.groupby("round")["psnr"].idxmax()]
    return {**scores, "psnr": float(best["psnr"].mean()), "ssim": float(best["ssim"].mean()), "label_accuracy": float(np.mean(labels))}


def _lpips(output: AttackOutput, truth: GroundTruth) -> str:
    """Mean LPIPS of the recovered reconstructions, as text so the column keeps one type on every machine,
    or "not computed: <reason>" where the backbone's weights are not on disk (nothing is ever downloaded)."""
    if not len(truth.images):
        return "not computed: no images (synthetic updates)"
    reason = lpips_unavailable()
    if reason is not None:
        return f"not computed: {reason}"
    return f"{float(lpips(*_matched(output.recovered.images, truth)).mean()):.6g}"


def score_recovery(recovered: Disaggregation, truth: GroundTruth) -> dict[str, float]:
    """How well one attack disaggregated: the columns that pick the strongest attack on a task.

    `attack_success` is the share of users whose own update the attack holds: their participation
    column exact and their recovered update within cosine SUCCESS_COSINE of the true one. An exact
    column alone is not enough: under fixed groups, or noise, a user's column can be right while
    only a group sum, or a noisy estimate, comes out.
    """
    columns_exact = (recovered.participants == truth.participants).all(axis=0)
    cosines = _cosines(recovered.updates, truth.updates)
    return {
        "attack_success": float((columns_exact & (cosines >= SUCCESS_COSINE)).mean()),
        "exact_column_rate": float(columns_exact.mean()),
        "entry_accuracy": float((recovered.participants == truth.participants).mean()),
        "update_cosine": float(cosines.mean()),
        "unique_rate": recovered.status.count("unique") / len(recovered.status),
        "attack_seconds": recovered.wall_seconds,
    }


def score(output: AttackOutput, truth: GroundTruth, ceiling: Inference) -> dict[str, float | str]:
    """The score columns of the results table for one attack output on one (defense, scenario, seed).

    `ceiling` is the oracle's inference on the true updates (attacks.pipeline.infer_users on the truth).
    """
    scores: dict[str, float | str] = {
        **score_recovery(output.disaggregation, truth),
        "property_auc_chance": math.nan,
        "property_accuracy_chance": math.nan,
    }
    sides = {side: dict.fromkeys(QUANTITIES, math.nan) for side in ("recovered", "ceiling", "aggregate")}
    if len(truth.images):
        has = holds_property(truth.labels, output.n_classes)
        sides = {
            "recovered": _user_scores(output.recovered, truth, has),
            "ceiling": _user_scores(ceiling, truth, has),
            "aggregate": _aggregate_scores(output, truth, has),
        }
        scores["property_auc_chance"] = AUC_CHANCE
        scores["property_accuracy_chance"] = majority_share(has)
    for quantity in QUANTITIES:
        for side, values in sides.items():
            scores[f"{quantity}_{side}"] = values[quantity]
        scores[SHARE_COLUMNS[quantity]] = share(
            sides["recovered"][quantity], sides["aggregate"][quantity], sides["ceiling"][quantity]
        )
    scores["lpips"] = _lpips(output, truth)
    return scores
