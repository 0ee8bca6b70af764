"""Federated learning with secure aggregation: what the server observes, and the truth kept aside for scoring."""

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.datasets import Dataset, load_dataset
from benchmark.errors import BenchmarkError
from benchmark.models import build_model, flat_gradient, get_flat, set_flat
from benchmark.scenario import Scenario
from defenses.base import Defense


@dataclass(frozen=True)
class Observation:
    """Everything the server sees, and nothing else: this is all an attack gets."""

    aggregates: np.ndarray  # (T, d) float64: each round's aggregated update
    n_users: int
    counts: np.ndarray | None  # (n, W) int64: per-user participation counts per analytics window; None if unpublished
    window: int  # rounds per analytics window
    totals: np.ndarray | None  # (T,) participants counted per round
    weights: np.ndarray  # (T, d) the global model each round; (0, 0) for synthetic updates
    model: str
    image_shape: tuple[int, int, int]
    n_classes: int
    samples_per_user: int
    local_training: str
    learning_rate: float
    local_epochs: int  # fedavg: epochs of local SGD
    batch_size: int  # fedavg: local minibatch size
    defense_parameters: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GroundTruth:
    """What only scoring may read."""

    participants: np.ndarray  # (T, n) uint8: who contributed to each round's sum
    updates: np.ndarray  # (n, d) each user's clean update (before the defense), averaged over its rounds
    contributions: np.ndarray  # (m, d) every clean update sent, one row per (round, user) contribution
    contribution_index: np.ndarray  # (m, 2) the (round, user) of each row; both empty for synthetic updates,
    # whose update is the same vector in every round (the rows of `updates`)
    images: np.ndarray  # (n, s, C, H, W) each user's data; empty for synthetic updates
    labels: np.ndarray  # (n, s)
    max_participations: int
    extra_checkins: float  # check-ins that contribute nothing (padding), as a fraction of the contributions
    extra_upload_bytes_per_round: float  # uploaded by those devices (8 bytes per float64 coordinate), per round


def _streams(seed: int) -> dict[str, np.random.Generator]:
    names = ("participation", "defense", "data", "synthetic", "clients")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def partition(dataset: Dataset, n_users: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Label-skewed split: user j draws 80% of its samples from class j mod C, the rest from any class."""
    by_class = [rng.permutation(np.flatnonzero(dataset.y_train == c)) for c in range(dataset.n_classes)]
    taken = [0] * dataset.n_classes
    indices = np.empty((n_users, samples), dtype=np.int64)
    for user in range(n_users):
        dominant = int(np.ceil(0.8 * samples))
        classes = [user % dataset.n_classes] * dominant + list(rng.integers(0, dataset.n_classes, samples - dominant))
        for slot, cls in enumerate(classes):
            pool = by_class[cls]
            if len(pool) == 0:
                raise BenchmarkError(f"data set {dataset.name} has no training sample of class {cls}")
            indices[user, slot] = pool[taken[cls] % len(pool)]
            taken[cls] += 1
    return indices


def local_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    """fedsgd: the gradient of the mean loss; fedavg: (w_before - w_after) / lr after local epochs of SGD."""
    start = get_flat(model)
    if scenario.local_training == "fedsgd":
        return flat_gradient(model, F.cross_entropy(model(x), y)).numpy()
    weights = start.clone()
    for _ in range(scenario.local_epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        for batch in order.split(scenario.batch_size):
            set_flat(model, weights)
            weights = weights - scenario.learning_rate * flat_gradient(model, F.cross_entropy(model(x[batch]), y[batch]))
    set_flat(model, start)
    return ((start - weights) / scenario.learning_rate).numpy()


class _Federation:
    """One run of the protocol; the server applies the aggregates to the model every `refresh_every` rounds (0: never)."""

    def __init__(self, scenario: Scenario, defense: Defense) -> None:
        self.scenario, self.defense = scenario, defense
        self.rngs = _streams(scenario.seed)
        if scenario.update_kind == "synthetic":
            dim = scenario.synthetic_dim or int(np.ceil(1.2 * scenario.n_users))
            self.synthetic = self.rngs["synthetic"].standard_normal((scenario.n_users, dim))
            self.dim = dim
            return
        self.dataset = load_dataset(scenario.dataset, scenario.data_root)
        index = partition(self.dataset, scenario.n_users, scenario.samples_per_user, self.rngs["data"])
        self.images = np.ascontiguousarray(self.dataset.x_train[index], dtype=np.float64)
        self.labels = self.dataset.y_train[index]
        self.model = build_model(scenario.model, self.images.shape[2:], self.dataset.n_classes, scenario.seed)
        self.cache: dict[int, np.ndarray] = {}
        self.dim = int(get_flat(self.model).numel())
        self.deterministic = scenario.local_training == "fedsgd" or scenario.batch_size >= scenario.samples_per_user

    def clean_update(self, user: int, frozen: bool) -> np.ndarray:
        if self.scenario.update_kind == "synthetic":
            return self.synthetic[user]
        if frozen and self.deterministic and user in self.cache:
            return self.cache[user]
        x, y = torch.from_numpy(self.images[user]), torch.from_numpy(self.labels[user])
        update = local_update(self.model, x, y, self.scenario, self.rngs["clients"])
        if frozen and self.deterministic:
            self.cache[user] = update
        return update

    def client_update(self, user: int, clean: np.ndarray) -> np.ndarray:
        """What the client computes under the defense: the defense's own local training, else the clean update."""
        if self.scenario.update_kind == "model":
            x, y = torch.from_numpy(self.images[user]), torch.from_numpy(self.labels[user])
            update = self.defense.local_update(self.model, x, y, self.scenario, self.rngs["defense"])
            if update is not None:
                return np.asarray(update, dtype=np.float64)
        return clean.copy()

    def run(self, refresh_every: int) -> dict:
        s, defense = self.scenario, self.defense
        n = s.n_users
        contributed = np.zeros((s.n_rounds, n), dtype=bool)
        checked_in = np.zeros((s.n_rounds, n), dtype=bool)
        aggregates, weights, contributions, index = [], [], [], []
        clean_sum = np.zeros((n, self.dim))
        padded_coordinates = 0
        pending = None  # the model step of the rounds since the last refresh
        for t in range(s.n_rounds):
            selected = self.rngs["participation"].random(n) < s.participation
            contributing, counted = defense.choose_participants(selected, t, self.rngs["defense"])
            contributed[t], checked_in[t] = contributing, counted
            if s.update_kind == "model":
                weights.append(get_flat(self.model).numpy())
            aggregate = None
            for user in np.flatnonzero(contributing):
                clean = self.clean_update(int(user), frozen=refresh_every == 0)
                clean_sum[user] += clean
                if s.update_kind == "model":
                    contributions.append(clean)
                    index.append((t, int(user)))
                own = self.client_update(int(user), clean)
                sent = np.asarray(defense.transform_update(own, self.rngs["defense"]), dtype=np.float64)
                aggregate = sent if aggregate is None else aggregate + sent
            aggregate = np.zeros(self.dim) if aggregate is None else aggregate
            padded = int((checked_in[t] & ~contributed[t]).sum())
            uploads = defense.padded_uploads(padded, self.dim, self.rngs["defense"]) if padded else None
            if uploads is not None:
                aggregate = aggregate + np.asarray(uploads, dtype=np.float64).sum(axis=0)
                padded_coordinates += uploads.size
            aggregate = np.asarray(defense.transform_aggregate(aggregate, self.rngs["defense"]), dtype=np.float64)
            aggregates.append(aggregate)
            if refresh_every and s.update_kind == "model":
                if contributing.any():
                    step = torch.from_numpy(aggregate) * (s.learning_rate / contributing.sum())
                    pending = step if pending is None else pending + step
                if (t + 1) % refresh_every == 0 and pending is not None:
                    set_flat(self.model, get_flat(self.model) - pending)
                    pending = None
        rounds_per_user = np.maximum(contributed.sum(axis=0), 1)[:, None]
        return {
            "aggregates": np.stack(aggregates),
            "weights": np.stack(weights) if weights else np.zeros((0, 0)),
            "contributed": contributed,
            "checked_in": checked_in,
            "updates": clean_sum / rounds_per_user,
            "contributions": np.stack(contributions) if contributions else np.zeros((0, self.dim)),
            "contribution_index": np.array(index, dtype=np.int64).reshape(-1, 2),
            "padded_coordinates": padded_coordinates,
        }


def simulate(scenario: Scenario, defense: Defense) -> tuple[Observation, GroundTruth]:
    """Run the protocol under `defense`; the same scenario (with its seed) gives the same arrays, bit for bit."""
    federation = _Federation(scenario, defense)
    refresh_every = 1 if scenario.model_policy == "trained" else defense.refresh_every
    observed = federation.run(refresh_every)
    analytics = defense.transform_analytics(observed["checked_in"], scenario.window, federation.rngs["defense"])
    if scenario.update_kind == "model":
        images, labels = federation.images, federation.labels
        image_shape, n_classes = tuple(images.shape[2:]), federation.dataset.n_classes
    else:
        images, labels = np.zeros((0,)), np.zeros((0,), dtype=np.int64)
        image_shape, n_classes = (0, 0, 0), 0
    padded_checkins = (observed["checked_in"] & ~observed["contributed"]).sum()
    observation = Observation(
        aggregates=observed["aggregates"],
        n_users=scenario.n_users,
        counts=analytics.counts,
        window=analytics.window,
        totals=analytics.totals,
        weights=observed["weights"],
        model=scenario.model if scenario.update_kind == "model" else "none",
        image_shape=image_shape,
        n_classes=n_classes,
        samples_per_user=scenario.samples_per_user,
        local_training=scenario.local_training,
        learning_rate=scenario.learning_rate,
        local_epochs=scenario.local_epochs,
        batch_size=scenario.batch_size,
        defense_parameters=defense.public_parameters(),
    )
    truth = GroundTruth(
        participants=observed["contributed"].astype(np.uint8),
        updates=observed["updates"],
        contributions=observed["contributions"],
        contribution_index=observed["contribution_index"],
        images=images,
        labels=labels,
        max_participations=int(observed["contributed"].sum(axis=0).max()),
        extra_checkins=float(padded_checkins / max(observed["contributed"].sum(), 1)),
        extra_upload_bytes_per_round=8.0 * observed["padded_coordinates"] / scenario.n_rounds,
    )
    return observation, truth
