"""The full attack on one Observation: disaggregate, then run inference on each recovered update and on the sums."""

import time
from dataclasses import dataclass, replace

import numpy as np

from attacks.disaggregation import Disaggregation, disaggregate
from attacks.settings import AttackSettings
from attacks.geometry import left_singular, numerical_rank
from attacks.inversion import infer_labels, invert
from benchmark.executor import Executor
from benchmark.models import build_model
from benchmark.simulation import Observation

AGGREGATE_ROUNDS = 20  # rounds whose sums the aggregate-only baseline inverts


@dataclass(frozen=True)
class AttackOutput:
    disaggregation: Disaggregation
    noise_mode: bool
    images: np.ndarray  # (n, B, C, H, W) reconstructed from each recovered update; empty without a model
    labels: np.ndarray  # (n, B)
    aggregate_rounds: np.ndarray  # (R,) the rounds the baseline attacked
    aggregate_images: np.ndarray  # (R, B, C, H, W) reconstructed from those rounds' sums
    aggregate_labels: list[np.ndarray]  # R arrays of totals[t] * B labels inferred from each sum
    seconds: float


def needs_noise_mode(observation: Observation) -> bool:
    """Sums of fixed updates have rank <= n; a higher numerical rank means drift or noise."""
    _, singular = left_singular(observation.aggregates)
    return numerical_rank(singular, observation.aggregates.shape) > observation.counts.shape[0]


def run_attack(observation: Observation, settings: AttackSettings, executor: Executor = Executor(), seed: int = 0) -> AttackOutput:
    """Everything the server can infer from what it observed; never reads the ground truth."""
    started = time.perf_counter()
    noise = settings.noise or needs_noise_mode(observation)
    result = disaggregate(
        observation.aggregates,
        observation.counts,
        observation.window,
        observation.totals,
        replace(settings, noise=noise),
        executor,
    )
    n_users = observation.counts.shape[0]
    empty = np.zeros((0,))
    if observation.model == "none":
        return AttackOutput(result, noise, empty, empty, empty.astype(int), empty, [], time.perf_counter() - started)
    model = build_model(observation.model, observation.image_shape, observation.n_classes, seed)
    batch = observation.samples_per_user
    images, labels = [], []
    for user in range(n_users):
        rounds = np.flatnonzero(result.participants[:, user])
        weights = observation.weights[rounds[0] if len(rounds) else 0]
        user_images, user_labels = invert(model, weights, result.updates[user], batch, observation.image_shape, seed + user)
        images.append(user_images)
        labels.append(user_labels)
    # Without published totals the attacker still sees which sums are non-zero, and guesses each round's
    # size from the recovered participants (at least one participant).
    if observation.totals is not None:
        totals = observation.totals
    else:
        totals = np.maximum(result.participants.sum(axis=1), np.any(observation.aggregates != 0, axis=1))
    rounds = np.flatnonzero(totals > 0)[:AGGREGATE_ROUNDS]
    aggregate_images, aggregate_labels = [], []
    for t in rounds:
        round_images, _ = invert(model, observation.weights[t], observation.aggregates[t], batch, observation.image_shape, seed + int(t))
        aggregate_images.append(round_images)
        aggregate_labels.append(infer_labels(model, observation.aggregates[t], int(totals[t]) * batch))
    return AttackOutput(
        disaggregation=result,
        noise_mode=noise,
        images=np.stack(images),
        labels=np.stack(labels),
        aggregate_rounds=rounds,
        aggregate_images=np.stack(aggregate_images) if aggregate_images else np.zeros((0, batch, *observation.image_shape)),
        aggregate_labels=aggregate_labels,
        seconds=time.perf_counter() - started,
    )
