"""The full attack on one Observation: disaggregate, then run inference on each recovered update and on the sums."""

import time
from dataclasses import dataclass

import numpy as np

from attacks.inversion import InversionSettings, LocalTraining, infer_labels, invert_many
from attacks.properties import PropertyGuess, guess, property_scores, window_weighted_scores
from attacks.recovery import Recovery, run_attacks
from attacks.settings import AttackSettings
from benchmark.models import build_model, parameter_slices
from benchmark.observation import Observation

AGGREGATE_ROUNDS = 20  # rounds whose sums the aggregate-only baseline inverts
INVERSION_CHUNK = 64  # updates inverted together in one batched computation


@dataclass(frozen=True)
class Inference:
    """What a set of updates reveals; all empty without a model (synthetic updates).

    `images` and `labels` have one entry per update inverted (each user's for the ceiling, each
    recovered update, named or not, for an attack); `property` has one per user.
    """

    images: np.ndarray  # (k, B, C, H, W) reconstructed inputs
    labels: np.ndarray  # (k, B) inferred labels
    property: PropertyGuess  # (n,) scores and predictions of "holds a lower-half label"


@dataclass(frozen=True)
class AttackOutput:
    recovery: Recovery  # the strongest attack's recovered updates, named or not
    n_classes: int  # of the observed model; 0 without one
    recovered: Inference  # from each recovered update
    aggregate_rounds: np.ndarray  # (R,) the rounds the baseline attacked
    aggregate_images: np.ndarray  # (R, B, C, H, W) reconstructed from those rounds' sums
    aggregate_labels: list[np.ndarray]  # R arrays of totals[t] * B labels inferred from each sum
    aggregate_property: PropertyGuess  # (n,) each user's count-weighted mean of its windows' round scores
    seconds: float


NO_GUESS = PropertyGuess(np.zeros(0), np.zeros(0, dtype=bool))
NO_INFERENCE = Inference(np.zeros((0,)), np.zeros((0,)), NO_GUESS)  # synthetic updates: nothing to infer


def _local_training(observation: Observation) -> LocalTraining:
    return LocalTraining(observation.local_training, observation.local_epochs, observation.batch_size, observation.learning_rate)


def infer_users(
    observation: Observation,
    updates: np.ndarray,
    participants: np.ndarray,
    seed: int,
    device: str = "cpu",
    settings: InversionSettings = InversionSettings(),
    samples: int | None = None,
) -> Inference:
    """Labels, inputs and property guess from each update (k, d), of `samples` inputs (default: a user's).

    `updates` (k, d) and `participants` (T, k) are plain arrays: the recovered ones for the attack, the
    true ones for the oracle ceiling; the first round an update took part in picks the model weights.
    """
    if observation.model == "none":
        return NO_INFERENCE
    model = build_model(observation.model, observation.image_shape, observation.n_classes, seed).to(device)
    batch = samples or observation.samples_per_user
    first = [np.flatnonzero(participants[:, user]) for user in range(len(updates))]
    weights = observation.weights[[rounds[0] if len(rounds) else 0 for rounds in first]]
    images, labels = _invert_in_chunks(
        model, weights, updates, batch, observation.image_shape, seed + np.arange(len(updates)), observation, settings, device
    )
    bias = parameter_slices(model)[-1]
    return Inference(images, labels, guess(property_scores(updates[:, bias])))


def _invert_in_chunks(model, weights, updates, batch, image_shape, seeds, observation, settings, device):
    """invert_many over INVERSION_CHUNK updates at a time: one batched computation each, bounded memory."""
    training = _local_training(observation)
    parts = [
        invert_many(model, weights[i : i + INVERSION_CHUNK], updates[i : i + INVERSION_CHUNK], batch, image_shape,
                    seeds[i : i + INVERSION_CHUNK], training, settings, device)
        for i in range(0, len(updates), INVERSION_CHUNK)
    ]
    if not parts:
        return np.zeros((0, batch, *image_shape)), np.zeros((0, batch), dtype=np.int64)
    return np.concatenate([images for images, _ in parts]), np.concatenate([labels for _, labels in parts])


def _aggregate_property(observation: Observation, bias: slice) -> PropertyGuess:
    """The floor: without published counts nothing tells users apart, and each gets the mean round score."""
    round_scores = property_scores(observation.aggregates[:, bias])
    if observation.counts is None:
        return guess(np.full(observation.n_users, round_scores.mean()))
    return guess(window_weighted_scores(round_scores, observation.counts, observation.window))


def run_attack(
    observation: Observation,
    settings: AttackSettings,
    seed: int = 0,
    device: str = "cpu",
    inversion: InversionSettings = InversionSettings(),
    choose=None,
) -> AttackOutput:
    """Every attack, then inference on one: `choose` picks it from the list of Recoveries (default: the last that
    names the most users). Never reads the ground truth."""
    started = time.perf_counter()
    recoveries = run_attacks(observation, settings)
    chosen = choose(recoveries) if choose is not None else max(reversed(recoveries), key=lambda r: r.named.sum())
    return infer_from(observation, chosen, seed, device, inversion, started)


def _contributors(observation: Observation, recovery: Recovery) -> np.ndarray:
    """Each round's number of contributing users as the attacker reads it.

    Published totals count padded check-ins too: with a public padding rate r the attacker takes the
    expected contributors (m - r n) / (1 - r) of m check-ins. Without totals it sees which sums are
    non-zero and guesses from the recovered columns (at least one participant).
    """
    nonzero = np.any(observation.aggregates != 0, axis=1)
    if observation.totals is None:
        named = recovery.disaggregation.participants.sum(axis=1)
        return np.maximum(np.maximum(named, recovery.columns.sum(axis=1)), nonzero)
    rate = float(observation.defense_parameters.get("padding_rate", 0.0))
    if rate <= 0:
        return observation.totals
    estimate = np.rint((observation.totals - rate * observation.n_users) / (1.0 - rate)) if rate < 1 else observation.totals
    return np.clip(estimate, nonzero, observation.totals).astype(np.int64)


def infer_from(
    observation: Observation,
    recovery: Recovery,
    seed: int = 0,
    device: str = "cpu",
    inversion: InversionSettings = InversionSettings(),
    started: float | None = None,
) -> AttackOutput:
    """Inference on every recovered update (named or not), per-user property from the named ones, and the floor."""
    started = time.perf_counter() if started is None else started
    if observation.model == "none":
        empty = np.zeros((0,))
        return AttackOutput(recovery, 0, NO_INFERENCE, empty.astype(int), empty, [], NO_GUESS, time.perf_counter() - started)
    group_size = 1 if recovery.groups is None else int(np.bincount(np.unique(recovery.groups, return_inverse=True)[1]).max())
    batch = observation.samples_per_user
    vectors = infer_users(observation, recovery.updates, recovery.columns, seed, device, inversion, samples=batch * group_size)
    model = build_model(observation.model, observation.image_shape, observation.n_classes, seed).to(device)
    bias = parameter_slices(model)[-1]
    recovered = Inference(vectors.images, vectors.labels, guess(property_scores(recovery.disaggregation.updates[:, bias])))
    totals = _contributors(observation, recovery)
    rounds = np.flatnonzero(totals > 0)[:AGGREGATE_ROUNDS]
    aggregate_images, _ = _invert_in_chunks(
        model, observation.weights[rounds], observation.aggregates[rounds], batch, observation.image_shape, seed + rounds,
        observation, inversion, device,
    )
    aggregate_labels = [infer_labels(model, observation.aggregates[t], int(totals[t]) * batch) for t in rounds]
    return AttackOutput(
        recovery=recovery,
        n_classes=observation.n_classes,
        recovered=recovered,
        aggregate_rounds=rounds,
        aggregate_images=aggregate_images,
        aggregate_labels=aggregate_labels,
        aggregate_property=_aggregate_property(observation, bias),
        seconds=time.perf_counter() - started,
    )
