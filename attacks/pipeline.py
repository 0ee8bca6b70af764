"""The full attack on one Observation: disaggregate, then run inference on each recovered update and on the sums."""

import time
from dataclasses import dataclass, replace

import numpy as np

from attacks.adaptive import recover
from attacks.disaggregation import Disaggregation
from attacks.geometry import left_singular, numerical_rank
from attacks.inversion import InversionSettings, LocalTraining, infer_labels, invert
from attacks.properties import PropertyGuess, guess, property_scores, window_weighted_scores
from attacks.settings import AttackSettings
from benchmark.executor import Executor
from benchmark.models import build_model, parameter_slices
from benchmark.observation import Observation

AGGREGATE_ROUNDS = 20  # rounds whose sums the aggregate-only baseline inverts


@dataclass(frozen=True)
class Inference:
    """What one set of per-user updates reveals; all empty without a model (synthetic updates)."""

    images: np.ndarray  # (n, B, C, H, W) reconstructed inputs
    labels: np.ndarray  # (n, B) inferred labels
    property: PropertyGuess  # (n,) scores and predictions of "holds a lower-half label"


@dataclass(frozen=True)
class AttackOutput:
    disaggregation: Disaggregation
    noise_mode: bool
    n_classes: int  # of the observed model; 0 without one
    recovered: Inference  # from each recovered update
    aggregate_rounds: np.ndarray  # (R,) the rounds the baseline attacked
    aggregate_images: np.ndarray  # (R, B, C, H, W) reconstructed from those rounds' sums
    aggregate_labels: list[np.ndarray]  # R arrays of totals[t] * B labels inferred from each sum
    aggregate_property: PropertyGuess  # (n,) each user's count-weighted mean of its windows' round scores
    seconds: float


NO_GUESS = PropertyGuess(np.zeros(0), np.zeros(0, dtype=bool))
NO_INFERENCE = Inference(np.zeros((0,)), np.zeros((0,)), NO_GUESS)  # synthetic updates: nothing to infer


def needs_noise_mode(observation: Observation) -> bool:
    """Sums of fixed updates have rank <= n; a higher numerical rank means drift or noise."""
    _, singular = left_singular(observation.aggregates)
    return numerical_rank(singular, observation.aggregates.shape) > observation.n_users


def _local_training(observation: Observation) -> LocalTraining:
    return LocalTraining(observation.local_training, observation.local_epochs, observation.batch_size, observation.learning_rate)


def infer_users(
    observation: Observation,
    updates: np.ndarray,
    participants: np.ndarray,
    seed: int,
    device: str = "cpu",
    settings: InversionSettings = InversionSettings(),
) -> Inference:
    """Labels, inputs and property guess of every user from its own update.

    `updates` (n, d) and `participants` (T, n) are plain arrays: the recovered ones for the attack, the
    true ones for the oracle ceiling; the first round a user took part in picks the model weights.
    """
    if observation.model == "none":
        return NO_INFERENCE
    model = build_model(observation.model, observation.image_shape, observation.n_classes, seed).to(device)
    training = _local_training(observation)
    images, labels = [], []
    for user, update in enumerate(updates):
        rounds = np.flatnonzero(participants[:, user])
        weights = observation.weights[rounds[0] if len(rounds) else 0]
        user_images, user_labels = invert(
            model, weights, update, observation.samples_per_user, observation.image_shape, seed + user, training, settings, device
        )
        images.append(user_images)
        labels.append(user_labels)
    bias = parameter_slices(model)[-1]
    return Inference(np.stack(images), np.stack(labels), guess(property_scores(updates[:, bias])))


def _aggregate_property(observation: Observation, bias: slice) -> PropertyGuess:
    """The floor: without published counts nothing tells users apart, and each gets the mean round score."""
    round_scores = property_scores(observation.aggregates[:, bias])
    if observation.counts is None:
        return guess(np.full(observation.n_users, round_scores.mean()))
    return guess(window_weighted_scores(round_scores, observation.counts, observation.window))


def run_attack(
    observation: Observation,
    settings: AttackSettings,
    executor: Executor = Executor(),
    seed: int = 0,
    device: str = "cpu",
    inversion: InversionSettings = InversionSettings(),
) -> AttackOutput:
    """Everything the server can infer from what it observed; never reads the ground truth."""
    started = time.perf_counter()
    result, noise = disaggregate_observation(observation, settings, executor)
    return infer_from(observation, result, noise, seed, device, inversion, started)


def disaggregate_observation(
    observation: Observation, settings: AttackSettings, executor: Executor = Executor()
) -> tuple[Disaggregation, bool]:
    """The disaggregation step alone, and whether it ran in noise mode (chosen when the sums' rank exceeds n)."""
    noise = settings.noise or needs_noise_mode(observation)
    return recover(observation, replace(settings, noise=noise), executor), noise


def infer_from(
    observation: Observation,
    result: Disaggregation,
    noise: bool,
    seed: int = 0,
    device: str = "cpu",
    inversion: InversionSettings = InversionSettings(),
    started: float | None = None,
) -> AttackOutput:
    """Inference on a disaggregation's per-user updates and, for the floor, on the round sums."""
    started = time.perf_counter() if started is None else started
    if observation.model == "none":
        empty = np.zeros((0,))
        return AttackOutput(result, noise, 0, NO_INFERENCE, empty.astype(int), empty, [], NO_GUESS, time.perf_counter() - started)
    recovered = infer_users(observation, result.updates, result.participants, seed, device, inversion)
    model = build_model(observation.model, observation.image_shape, observation.n_classes, seed).to(device)
    training = _local_training(observation)
    batch = observation.samples_per_user
    # Without published totals the attacker still sees which sums are non-zero, and guesses each round's
    # size from the recovered participants (at least one participant).
    if observation.totals is not None:
        totals = observation.totals
    else:
        totals = np.maximum(result.participants.sum(axis=1), np.any(observation.aggregates != 0, axis=1))
    rounds = np.flatnonzero(totals > 0)[:AGGREGATE_ROUNDS]
    aggregate_images, aggregate_labels = [], []
    for t in rounds:
        round_images, _ = invert(
            model, observation.weights[t], observation.aggregates[t], batch, observation.image_shape, seed + int(t),
            training, inversion, device,
        )
        aggregate_images.append(round_images)
        aggregate_labels.append(infer_labels(model, observation.aggregates[t], int(totals[t]) * batch))
    return AttackOutput(
        disaggregation=result,
        noise_mode=noise,
        n_classes=observation.n_classes,
        recovered=recovered,
        aggregate_rounds=rounds,
        aggregate_images=np.stack(aggregate_images) if aggregate_images else np.zeros((0, batch, *observation.image_shape)),
        aggregate_labels=aggregate_labels,
        aggregate_property=_aggregate_property(observation, parameter_slices(model)[-1]),
        seconds=time.perf_counter() - started,
    )
