"""The full attack on one Observation: disaggregate, then run inference on each recovered update and on the sums."""

import time
from dataclasses import dataclass

import numpy as np

from attacks import memo
from attacks.inversion import InversionSettings, LocalTraining, infer_labels, invert_many
from attacks.properties import PropertyGuess, guess, property_scores, window_weighted_scores
from attacks.recovery import Recovery, run_attacks
from attacks.settings import AttackSettings
from benchmark.models import build_model, parameter_slices
from benchmark.observation import Observation, expected_contributors

AGGREGATE_ROUNDS = 20  # rounds whose sums the aggregate-only baseline inverts (at most the sample size, if any)
INVERSION_CHUNK = 64  # updates inverted together in one batched computation
CANONICAL_BITS = 30  # inversion inputs are rounded to 2^-30 of their norm (_canonical)
_SAMPLE_SALT = 0x1417  # keeps the inversion sample's stream apart from the scenario's, which share the seed


@dataclass(frozen=True)
class Inference:
    """What a set of updates reveals; all empty without a model (synthetic updates).

    `images` and `labels` have one entry per update inverted, `indices` says which (users for the ceiling,
    rows of the recovered updates, named or not, for an attack): all, or a seeded sample; `property` has
    one per user.
    """

    images: np.ndarray  # (k, B, C, H, W) reconstructed inputs
    labels: np.ndarray  # (k, B) inferred labels
    property: PropertyGuess  # (n,) scores and predictions of "holds a lower-half label"
    indices: np.ndarray  # (k,) which updates were inverted (rows of images and labels, in this order)


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
NO_INFERENCE = Inference(np.zeros((0,)), np.zeros((0,)), NO_GUESS, np.zeros(0, dtype=np.int64))  # synthetic updates: nothing to infer


def _local_training(observation: Observation) -> LocalTraining:
    return LocalTraining(observation.local_training, observation.local_epochs, observation.batch_size, observation.learning_rate)


def inversion_sample(n_users: int, limit: int, seed: int) -> np.ndarray:
    """The users whose updates an oracle inverts, ascending: every one, or the seeded sample of `limit` (limit > 0)
    that the attack's sample (recovered_sample) takes wherever it names those users."""
    if limit <= 0 or n_users <= limit:
        return np.arange(n_users)
    return np.sort(np.argsort(_user_ranks(n_users, seed))[:limit])


def _user_ranks(n_users: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, _SAMPLE_SALT]).permutation(n_users)


def update_ids(recovery: Recovery, n_users: int) -> np.ndarray:
    """(k,) an id per recovered update: the first user named with its column, else n_users + its index."""
    ids = n_users + np.arange(len(recovery.updates))
    named = recovery.disaggregation.participants
    for user in np.flatnonzero(named.any(axis=0))[::-1]:
        match = np.flatnonzero((recovery.columns == named[:, [user]]).all(axis=0))
        ids[match] = user
    return ids


def recovered_sample(ids: np.ndarray, n_users: int, limit: int, seed: int) -> np.ndarray:
    """Which recovered updates (their update_ids) to invert, in order of their ids: every one, or `limit` of them,
    named ones first (the users inversion_sample draws, in its seeded order), then a seeded sample of the unnamed."""
    if limit <= 0 or len(ids) <= limit:
        chosen = np.arange(len(ids))
    else:
        unnamed_ranks = np.random.default_rng([seed, _SAMPLE_SALT, 1]).permutation(len(ids))
        user_ranks = _user_ranks(n_users, seed)
        priority = np.where(ids < n_users, user_ranks[np.minimum(ids, n_users - 1)], n_users + unnamed_ranks)
        chosen = np.argsort(priority, kind="stable")[:limit]
    return chosen[np.argsort(ids[chosen], kind="stable")]


def infer_users(
    observation: Observation,
    updates: np.ndarray,
    participants: np.ndarray,
    seed: int,
    device: str = "cpu",
    settings: InversionSettings = InversionSettings(),
    samples: int | None = None,
    invert: np.ndarray | None = None,
    ids: np.ndarray | None = None,
) -> Inference:
    """Labels and inputs from the updates `invert` names (default: all), property guess from every update.

    `updates` (k, d) and `participants` (T, k) are plain arrays: the recovered ones for the attack, the
    true ones for the oracle ceiling; the first round an update took part in picks the model weights.
    Update i inverts `samples` inputs (default: a user's) from seed + ids[i] (default i).
    """
    if observation.model == "none":
        return NO_INFERENCE
    model = build_model(observation.model, observation.image_shape, observation.n_classes, seed).to(device)
    batch = samples or observation.samples_per_user
    invert = np.arange(len(updates)) if invert is None else np.asarray(invert, dtype=np.int64)
    ids = np.arange(len(updates)) if ids is None else np.asarray(ids, dtype=np.int64)
    first = [np.flatnonzero(participants[:, user]) for user in invert]
    weights = observation.weights[[rounds[0] if len(rounds) else 0 for rounds in first]]
    images, labels = _invert_in_chunks(
        model, weights, updates[invert], batch, observation.image_shape, seed + ids[invert], observation, settings, device
    )
    bias = parameter_slices(model)[-1]
    return Inference(images, labels, guess(property_scores(updates[:, bias])), invert)


def _invert_in_chunks(model, weights, updates, batch, image_shape, seeds, observation, settings, device):
    """invert_many over INVERSION_CHUNK updates at a time: one batched computation each, bounded memory.

    Updates are rounded first (_canonical), so that an update recovered to within rounding error of the true
    one inverts exactly as the truth does, and each chunk is memoized (attacks.memo): the many tasks whose
    attack recovers a user's true update, and their oracle ceilings, invert it once.
    """
    training = _local_training(observation)
    updates = _canonical(np.asarray(updates, dtype=np.float64))

    def chunk(i: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(i, i + INVERSION_CHUNK)
        parts = ("invert_many", observation.model, image_shape, observation.n_classes, weights[rows], updates[rows],
                 batch, seeds[rows], training, settings, device)
        return memo.memoized(parts, lambda: invert_many(model, weights[rows], updates[rows], batch, image_shape,
                                                         seeds[rows], training, settings, device))

    parts = [chunk(i) for i in range(0, len(updates), INVERSION_CHUNK)]
    if not parts:
        return np.zeros((0, batch, *image_shape)), np.zeros((0, batch), dtype=np.int64)
    return np.concatenate([images for images, _ in parts]), np.concatenate([labels for _, labels in parts])


def _canonical(updates: np.ndarray) -> np.ndarray:
    """Each row rounded to a grid of 2^-30 times the power of two below its norm: a relative change under 1e-9,
    and rows that differ by float64 rounding error (absolute, so tiny entries too) almost always land on one grid."""
    norms = np.linalg.norm(updates, axis=1, keepdims=True)
    step = np.exp2(np.floor(np.log2(np.where(norms > 0, norms, 1.0))) - CANONICAL_BITS)
    return np.round(updates / step) * step + 0.0  # + 0.0: no -0.0, whose bytes differ from 0.0's


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
    names the most users, a full-horizon attack before a prefix one). Never reads the ground truth."""
    started = time.perf_counter()
    recoveries = run_attacks(observation, settings)
    chosen = choose(recoveries) if choose is not None else max(
        reversed(recoveries), key=lambda r: (r.named.sum(), r.attack != "prefix"))
    return infer_from(observation, chosen, seed, device, inversion, started, settings.inverted_users)


def _contributors(observation: Observation, recovery: Recovery) -> np.ndarray:
    """Each round's number of contributing users as the attacker reads it.

    Published totals count padded check-ins too: with a public padding rate r the attacker takes the
    expected contributors (m - r n) / (1 - r) of m check-ins. Without totals it sees which sums are
    non-zero and takes the cohort its sampling targets (at least one participant where the sum is not zero):
    never the attack's own columns, which had made this floor of what the sums alone reveal rise with the attack
    (rounded-counts: 0.175 from the static attempt's columns, 0.942 from the adaptive one's). An observation
    without its cohort falls back to the recovered columns.
    """
    nonzero = np.any(observation.aggregates != 0, axis=1)
    if observation.totals is None:
        if np.isfinite(observation.cohort):
            return np.where(nonzero, max(int(round(observation.cohort)), 1), 0)
        named = recovery.disaggregation.participants.sum(axis=1)
        return np.maximum(np.maximum(named, recovery.columns.sum(axis=1)), nonzero)
    rate = float(observation.defense_parameters.get("padding_rate", 0.0))
    if rate <= 0:
        return observation.totals
    return np.clip(expected_contributors(observation.totals, rate, observation.n_users), nonzero, observation.totals)


def infer_from(
    observation: Observation,
    recovery: Recovery,
    seed: int = 0,
    device: str = "cpu",
    inversion: InversionSettings = InversionSettings(),
    started: float | None = None,
    sample: int = 0,
) -> AttackOutput:
    """Inference on the recovered updates (named or not: every one, or a seeded `sample` of them), per-user
    property from the named ones, and the floor (round sums: AGGREGATE_ROUNDS of them, at most `sample`)."""
    started = time.perf_counter() if started is None else started
    if observation.model == "none":
        empty = np.zeros((0,))
        return AttackOutput(recovery, 0, NO_INFERENCE, empty.astype(int), empty, [], NO_GUESS, time.perf_counter() - started)
    group_size = 1 if recovery.groups is None else int(np.bincount(np.unique(recovery.groups, return_inverse=True)[1]).max())
    batch = observation.samples_per_user
    ids = update_ids(recovery, observation.n_users)
    chosen = recovered_sample(ids, observation.n_users, sample, seed)
    vectors = infer_users(observation, recovery.updates, recovery.columns, seed, device, inversion, batch * group_size, chosen, ids)
    model = build_model(observation.model, observation.image_shape, observation.n_classes, seed).to(device)
    bias = parameter_slices(model)[-1]
    recovered = Inference(vectors.images, vectors.labels, guess(property_scores(recovery.disaggregation.updates[:, bias])),
                          vectors.indices)
    totals = _contributors(observation, recovery)
    rounds = np.flatnonzero(totals > 0)[: min(AGGREGATE_ROUNDS, sample) if sample > 0 else AGGREGATE_ROUNDS]
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
