"""Federated learning with secure aggregation: what the server observes, and the truth kept aside for scoring."""

import copy
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from benchmark.datasets import Dataset, load_dataset
from benchmark.errors import BenchmarkError
from benchmark import local_sgd
from benchmark.local_sgd import LocalTraining, parameters_of
from benchmark.models import DESIGN_PUBLIC_IMAGES, build_model, design_weights, get_flat, logit_shift, set_flat
from benchmark.observation import Observation
from benchmark.protocol import secure_aggregate, server_divisor, streams
from benchmark.scenario import Scenario
from defenses.base import Defense, batched_local_training, trains_like_undefended
from defenses.guard import GuardedDefense


@dataclass(frozen=True)
class GroundTruth:
    """What only scoring may read."""

    participants: np.ndarray  # (T, n) uint8: who contributed to each round's sum
    updates: np.ndarray  # (n, d) each user's clean update (before the defense), averaged over its rounds
    images: np.ndarray  # (n, s, C, H, W) each user's data; empty for synthetic updates
    labels: np.ndarray  # (n, s)
    max_participations: int
    extra_checkins: float  # check-ins that contribute nothing (padding), as a fraction of the contributions
    extra_upload_bytes_per_round: float  # uploaded by those devices (8 bytes per float64 coordinate), per round


# One random stream per purpose; each defense hook draws from its own (benchmark.protocol.HOOK_STREAMS).
STREAMS = (
    "participation", "defense_participants", "data", "synthetic", "clients",
    "defense_uploads", "defense_updates", "defense_aggregates", "defense_analytics", "defense_training", "defense_steps",
)
CLIENT_CHUNK = 64  # clients trained together in one vmapped computation (bounded memory)
INVARIANT_REACH = 10.0  # initial model norms the invariant server may move the model along the logits' shift (_Server)
SMALLEST_RELATIVE_CHANGE = 1e-6  # a "smallest"-step server moves the model at least this much: a new version


def server_step(direction: np.ndarray, current: np.ndarray, held: list[np.ndarray], step: float, min_change: float) -> float:
    """The smallest eta >= step such that current - eta * direction differs from every model w in `held`
    (those the clients last accepted) by at least min_change * ||w||: the step no client refuses.

    For each w the refused steps are where a quadratic in eta is negative, an interval;
    the answer is `step` or the upper end of one of these intervals.
    """
    a = float(direction @ direction)
    refused = []
    for w in held:
        offset = w - current
        b, c = 2.0 * float(direction @ offset), float(offset @ offset) - (min_change * float(np.linalg.norm(w))) ** 2
        discriminant = b * b - 4.0 * a * c
        if discriminant > 0:
            low, high = (-b - np.sqrt(discriminant)) / (2 * a), (-b + np.sqrt(discriminant)) / (2 * a)
            refused.append((low, high + 1e-9 * abs(high)))
    for eta in sorted([step, *(high for _, high in refused if high > step)]):
        if not any(low < eta < high for low, high in refused):
            return float(eta)
    raise AssertionError("unreachable: the largest interval end is never refused")


def partition(dataset: Dataset, n_users: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Label-skewed split: each user draws 80% of its samples from its dominant class, the rest from any class.

    Dominant classes are balanced (each class as often as n_users allows) and dealt out by a seeded
    permutation, so a user's data is independent of its id (fixed groups of consecutive ids see no pattern).
    """
    by_class = [rng.permutation(np.flatnonzero(dataset.y_train == c)) for c in range(dataset.n_classes)]
    taken = [0] * dataset.n_classes
    indices = np.empty((n_users, samples), dtype=np.int64)
    dominant_class = rng.permutation(np.arange(n_users) % dataset.n_classes)
    for user in range(n_users):
        dominant = int(np.ceil(0.8 * samples))
        classes = [int(dominant_class[user])] * dominant + list(rng.integers(0, dataset.n_classes, samples - dominant))
        for slot, cls in enumerate(classes):
            pool = by_class[cls]
            if len(pool) == 0:
                raise BenchmarkError(f"data set {dataset.name} has no training sample of class {cls}")
            indices[user, slot] = pool[taken[cls] % len(pool)]
            taken[cls] += 1
    return indices


def local_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    """fedsgd: the gradient of the mean loss; fedavg: (w_before - w_after) / lr after local epochs of SGD.

    One client of local_updates, the one local-training loop (benchmark.local_sgd's, which the inversion replays).
    """
    return local_updates(model, x[None], y[None], scenario, rng)[0]


def local_updates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    """(k, d): local_update of k clients, x (k, S, ...), y (k, S), trained together (vmapped); each client's
    shuffles are drawn from `rng` in client order, as k calls of local_update would draw them."""
    training = LocalTraining(scenario.local_training, scenario.local_epochs, scenario.batch_size, scenario.learning_rate)
    orders = None
    if training.kind == "fedavg":
        orders = torch.from_numpy(np.array([[rng.permutation(y.shape[1]) for _ in range(training.epochs)] for _ in range(len(y))]))
    return local_sgd.local_updates(model, parameters_of(model), x, y, training, orders).detach().numpy()


class _Federation:
    """One run of the protocol; the server moves the model every `refresh_every` rounds (0: never), as _Server says."""

    def __init__(self, scenario: Scenario, defense: Defense) -> None:
        self.scenario, self.defense = scenario, defense
        self.rngs = streams(scenario.seed, STREAMS)
        self.together = batched_local_training(defense)
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
        if scenario.initial_model == "designed":
            public = torch.tensor(self.dataset.x_test[:DESIGN_PUBLIC_IMAGES], dtype=torch.float64)
            design_weights(self.model, public)
        self.cache: dict[int, np.ndarray] = {}
        self.dim = int(get_flat(self.model).numel())
        self.deterministic = scenario.local_training == "fedsgd" or scenario.batch_size >= scenario.samples_per_user

    def clean_updates(self, users: np.ndarray, frozen: bool) -> np.ndarray:
        """(k, d) the round's clean updates: trained together (CLIENT_CHUNK at a time), or cached where the model
        is frozen and the local training deterministic."""
        if self.scenario.update_kind == "synthetic":
            return self.synthetic[users]
        cached = frozen and self.deterministic
        out = np.empty((len(users), self.dim))
        todo = [row for row, user in enumerate(users) if not (cached and int(user) in self.cache)]
        for row, user in enumerate(users):
            if cached and int(user) in self.cache:
                out[row] = self.cache[int(user)]
        for start in range(0, len(todo), CLIENT_CHUNK):
            rows = todo[start : start + CLIENT_CHUNK]
            chosen = users[rows]
            x, y = torch.from_numpy(self.images[chosen]), torch.from_numpy(self.labels[chosen])
            out[rows] = local_updates(self.model, x, y, self.scenario, self.rngs["clients"])
        if cached:
            for row in todo:
                self.cache[int(users[row])] = out[row]
        return out

    def client_update(self, user: int, clean: np.ndarray) -> np.ndarray:
        """What the client computes under the defense: the defense's own local training, else the clean update."""
        if self.scenario.update_kind == "model":
            x, y = torch.from_numpy(self.images[user]), torch.from_numpy(self.labels[user])
            update = self.defense.local_update(self.model, x, y, self.scenario, self.rngs["defense_training"])
            if update is not None:
                return np.asarray(update, dtype=np.float64)
        return clean.copy()

    def train_together(self, users: np.ndarray) -> np.ndarray | None:
        """(k, d) the round's client updates from a local training that runs all its clients at once
        (defenses.base.batched_local_training, e.g. DP-SGD); None where the defense has none."""
        if self.together is None or self.scenario.update_kind != "model" or not len(users):
            return None
        x, y = torch.from_numpy(self.images[users]), torch.from_numpy(self.labels[users])
        try:
            out = np.asarray(self.together.local_updates(self.model, x, y, self.scenario, self.rngs["defense_training"]))
        except BenchmarkError:
            raise
        except Exception as error:  # noqa: BLE001 - defense code: one line naming the hook
            raise BenchmarkError(f"defense {self.defense.name!r}: hook local_updates raised {type(error).__name__}: {error}") from None
        if out.shape != (len(users), self.dim) or not np.all(np.isfinite(out)):
            raise BenchmarkError(f"defense {self.defense.name!r}: hook local_updates must return finite ({len(users)}, {self.dim}) updates")
        return out.astype(np.float64)

    def run(self, refresh_every: int, step: str | float = "honest", horizons: tuple[int, ...] = ()) -> dict:
        """`step`: "invariant" (along the logits' common shift), "honest" (the learning rate along the aggregates),
        "smallest" (the least step along them the clients accept) or a number (_Server).

        At each of `horizons` (< n_rounds) it keeps what a run of that many rounds would end with: each user's
        summed clean update and the padded coordinates (`at`), so a shorter run is a prefix (_prefix)."""
        s, defense, rngs = self.scenario, self.defense, self.rngs
        at: dict[int, tuple[np.ndarray, int]] = {}
        n = s.n_users
        contributed = np.zeros((s.n_rounds, n), dtype=bool)
        checked_in = np.zeros((s.n_rounds, n), dtype=bool)
        aggregates, weights = [], []
        clean_sum = np.zeros((n, self.dim))
        padded_coordinates = 0
        direction = None  # the sum of the mean aggregates of the rounds since the last refresh
        server = _Server(self, step) if refresh_every and s.update_kind == "model" else None
        padding_rate = float(defense.public_parameters().get("padding_rate", 0.0)) if server is not None else 0.0
        for t in range(s.n_rounds):
            selected = rngs["participation"].random(n) < s.participation
            contributing, counted = defense.choose_participants(selected, t, rngs["defense_participants"])
            contributed[t], checked_in[t] = contributing, counted
            if s.update_kind == "model":
                weights.append(get_flat(self.model).numpy())
            if server is not None:  # every device that checked in took the model: the server cannot tell padded ones apart
                server.accepted(counted)
            users = np.flatnonzero(contributing)
            together = self.train_together(users)
            cleans = self.clean_updates(users, frozen=refresh_every == 0)
            sent = []
            for row, user in enumerate(users):
                clean = cleans[row]
                clean_sum[user] += clean
                sent.append(self.client_update(int(user), clean) if together is None else together[row])
            padded = int((checked_in[t] & ~contributed[t]).sum())
            aggregate, uploaded = secure_aggregate(defense, sent, padded, self.dim, rngs)
            padded_coordinates += uploaded
            aggregates.append(aggregate)
            if server is not None:
                if contributing.any():  # divided as the server can (server_divisor)
                    divisor = server_divisor(int(contributing.sum()), s.participation * n, padding_rate)
                    mean = defense.transform_step(aggregate, rngs["defense_steps"]) / divisor
                    direction = mean if direction is None else direction + mean
                if (t + 1) % refresh_every == 0 and (direction is not None or server.shift is not None):
                    server.refresh(direction)  # the invariant server needs no aggregate to move the model
                    direction = None
            if t + 1 in horizons:
                at[t + 1] = (clean_sum.copy(), padded_coordinates)
        rounds_per_user = np.maximum(contributed.sum(axis=0), 1)[:, None]
        return {
            "at": at,
            "aggregates": np.stack(aggregates),
            "weights": np.stack(weights) if weights else np.zeros((0, 0)),
            "contributed": contributed,
            "checked_in": checked_in,
            "updates": clean_sum / rounds_per_user,
            "padded_coordinates": padded_coordinates,
            # whether the model's moves changed the clients' updates (the server knows how it moved it)
            "updates_drift": server is not None and server.shift is None,
        }


class _Server:
    """Moves the global model when the defense forces a refresh, never by less than the clients accept.

    It knows which model each client last accepted (it sent it), so every new model keeps the defense's
    `min_relative_change` from all of them: no client ever refuses one. "invariant": only along the logits'
    common shift (models.logit_shift), which changes no update, to the point of that line nearest the initial
    model that the clients accept; otherwise along the clients' mean aggregates by `step`. On one line the
    clients' refusal intervals (m ||w_h|| around each held model) can push that point away without end when m
    nears 1 (each jump past them grows ||w||, and with it the next interval); past INVARIANT_REACH initial model
    norms the server leaves the line and takes the smallest accepted step along the aggregates for the rest of
    the run (`shift` None: the updates then drift). It stays on the line for every setting the suites use
    (m <= 0.1: under 2 norms over 1200 rounds of 100 users).
    """

    def __init__(self, federation: "_Federation", step: str | float) -> None:
        self.federation = federation
        smallest = step in ("smallest", "invariant")
        self.step = 0.0 if smallest else federation.scenario.learning_rate if step == "honest" else float(step)
        floor = SMALLEST_RELATIVE_CHANGE if smallest else 0.0
        self.min_change = max(float(federation.defense.min_relative_change), floor)
        self.models = {0: get_flat(federation.model).numpy().copy()}  # version -> weights, kept while a client holds it
        shift = logit_shift(federation.model) if step == "invariant" else None
        self.shift = None if shift is None else shift.numpy()
        self.base = self.models[0]
        self.positions = {0: 0.0}  # version -> position along `shift` (invariant server)
        self.version = 0
        self.held = np.full(federation.scenario.n_users, -1)  # each client's last accepted version; -1: none yet

    def accepted(self, checked_in: np.ndarray) -> None:
        self.held[checked_in] = self.version

    def refresh(self, direction: np.ndarray | None) -> None:
        current = self.models[self.version]
        held = [int(v) for v in np.unique(self.held[self.held >= 0])]
        position = 0.0
        if self.shift is not None:
            radii = [self.min_change * float(np.linalg.norm(self.models[v])) for v in held]
            position = nearest_accepted([self.positions[v] for v in held], radii)
            if abs(position) > INVARIANT_REACH * float(np.linalg.norm(self.base)):
                self.shift = None  # for the rest of the run: the updates drift from here on
        if self.shift is None:
            if direction is None:  # nobody contributed since the last refresh: no aggregate to step along
                return
            new = current - server_step(direction, current, [self.models[v] for v in held], self.step, self.min_change) * direction
        else:
            new = self.base + position * self.shift
        self.version += 1
        set_flat(self.federation.model, torch.from_numpy(new))
        self.models = {v: w for v, w in self.models.items() if v in self.held}
        self.models[self.version] = new
        self.positions = {v: p for v, p in self.positions.items() if v in self.models}
        self.positions[self.version] = position


def nearest_accepted(positions: list[float], radii: list[float]) -> float:
    """The point of a line nearest 0 that lies at least radii[i] from every positions[i] (the clients' refusal
    balls, open, on the line of invariant models)."""
    candidates = [0.0] + [p + sign * r * (1 + 1e-9) for p, r in zip(positions, radii) for sign in (1.0, -1.0)]
    for candidate in sorted(candidates, key=lambda c: (abs(c), -c)):
        if all(abs(candidate - p) >= r for p, r in zip(positions, radii)):
            return float(candidate)
    raise AssertionError("unreachable: the farthest candidate lies outside every ball")


SHARED_RUNS = 2  # federation runs kept per process for defenses that leave training untouched (see _shared_run)
_shared: "OrderedDict[tuple[Scenario, bool], dict]" = OrderedDict()


def _leaves_training_alone(defense: Defense) -> bool:
    """No training or protocol hook overridden, no forced refresh, no refused step: the undefended federation run."""
    return trains_like_undefended(defense) and defense.refresh_every == 0 and defense.min_relative_change == 0


def _federation_run(scenario: Scenario, defense: Defense, horizons: tuple[int, ...] = ()) -> dict:
    """The federation's arrays: the run's output plus the users' data (images, labels, n_classes)."""
    federation = _Federation(scenario, defense)
    if scenario.model_policy == "trained":
        refresh_every, step = 1, "honest"
    else:
        refresh_every, step = defense.refresh_every, scenario.server_step
    observed = federation.run(refresh_every, step, horizons)
    if scenario.update_kind == "model":
        observed.update(images=federation.images, labels=federation.labels, n_classes=federation.dataset.n_classes)
    return observed


def _shared_run(scenario: Scenario, defense: Defense, horizons: tuple[int, ...] = ()) -> dict:
    """One undefended federation run per scenario, shared by every defense that leaves training alone
    (analytics-only ones): theirs is bit-identical, and only transform_analytics, on its own stream, differs.

    The undefended run is guarded as `defense` is (same checks, same defense name in an error), so the
    shared arrays do not depend on which defense asked first; callers get copies (the kept ones stay clean).
    """
    guarded = isinstance(defense, GuardedDefense)
    key = (scenario, guarded, horizons)
    if key not in _shared:
        plain = Defense()
        if guarded:
            plain = GuardedDefense(plain)
            plain.name = defense.name
        _shared[key] = _federation_run(scenario, plain, horizons)
        while len(_shared) > SHARED_RUNS:
            _shared.popitem(last=False)
    _shared.move_to_end(key)
    return {name: value.copy() if isinstance(value, np.ndarray) else value for name, value in _shared[key].items()}


def _prefix(observed: dict, n_rounds: int) -> dict:
    """What a run of the first `n_rounds` rounds observes, cut (copied) from a longer run that kept that horizon."""
    if n_rounds == len(observed["aggregates"]):
        return observed
    summed, padded = observed["at"][n_rounds]
    cut = {name: observed[name][:n_rounds].copy() for name in ("aggregates", "contributed", "checked_in", "weights")}
    return {**observed, **cut, "padded_coordinates": padded,
            "updates": summed / np.maximum(cut["contributed"].sum(axis=0), 1)[:, None]}


def prefix_consistent(defense: Defense) -> bool:
    """Whether the defense's run over T rounds begins with its run over fewer, so one run serves every horizon.

    True for the built-ins (and compositions of them), whose hooks never read the horizon (tests check every
    one, bit for bit); a plugin's hooks may read scenario.n_rounds, so its horizons run apart.
    """
    from defenses.builtin import BUILTIN_DEFENSES
    from defenses.composition import Composed

    inner = defense.inner if isinstance(defense, GuardedDefense) else defense
    if isinstance(inner, Composed):
        return all(prefix_consistent(part) for part in inner.parts)
    return type(inner) in BUILTIN_DEFENSES.values()


def simulate(scenario: Scenario, defense: Defense) -> tuple[Observation, GroundTruth]:
    """Run the protocol under `defense`; the same scenario (with its seed) gives the same arrays, bit for bit.

    A defense that leaves training alone reuses this process's undefended run of the scenario (_shared_run).
    """
    return simulate_horizons(scenario, defense, (scenario.n_rounds,))[scenario.n_rounds]


def simulate_horizons(scenario: Scenario, defense: Defense, horizons: tuple[int, ...]) -> dict[int, tuple[Observation, GroundTruth]]:
    """simulate() of the scenario cut to each of `horizons` rounds (each at most scenario.n_rounds), bit for bit.

    Where the defense is prefix_consistent, one run of the longest horizon serves them all (the shorter ones
    are its first rounds; analytics are computed afresh on each, as a run of that length computes them).
    """
    longest = max(horizons)
    scenario = replace(scenario, n_rounds=longest)
    if not prefix_consistent(defense):
        # each horizon's federation from the defense as given (a plugin may learn across rounds: reused, a shorter
        # run had started where the longer one ended); `defense` itself runs the longest, as callers read it after
        own = {n: defense if n == longest else copy.deepcopy(defense) for n in horizons}
        return {n: _observe(replace(scenario, n_rounds=n), own[n], _run(replace(scenario, n_rounds=n), own[n], ()))
                for n in horizons}
    shorter = tuple(sorted(n for n in set(horizons) if n < longest))
    observed = _run(scenario, defense, shorter)
    return {n: _observe(replace(scenario, n_rounds=n), defense, _prefix(observed, n)) for n in horizons}


def _run(scenario: Scenario, defense: Defense, horizons: tuple[int, ...]) -> dict:
    if _leaves_training_alone(defense):
        return _shared_run(scenario, defense, horizons)
    return _federation_run(scenario, defense, horizons)


def _observe(scenario: Scenario, defense: Defense, observed: dict) -> tuple[Observation, GroundTruth]:
    """The server's Observation and the GroundTruth kept aside, from a run's arrays."""
    # The analytics stream is its own: no hook of the run draws from it, so a fresh one is the run's, untouched.
    analytics = defense.transform_analytics(observed["checked_in"].copy(), scenario.window,
                                            streams(scenario.seed, STREAMS)["defense_analytics"])
    if scenario.update_kind == "model":
        images, labels = observed["images"], observed["labels"]
        image_shape, n_classes = tuple(images.shape[2:]), observed["n_classes"]
    else:
        images, labels = np.zeros((0,)), np.zeros((0,), dtype=np.int64)
        image_shape, n_classes = (0, 0, 0), 0
    padded_checkins = (observed["checked_in"] & ~observed["contributed"]).sum()
    parameters = defense.public_parameters()
    if parameters.get("groups") is not None and len(parameters["groups"]) != scenario.n_users:  # else silently unread
        raise BenchmarkError(f"defense {defense.name!r}: public_parameters gives groups for {len(parameters['groups'])} "
                             f"users; the scenario has {scenario.n_users}")
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
        defense_parameters=parameters,
        updates_drift=bool(observed["updates_drift"]),
        cohort=scenario.participation * scenario.n_users,
    )
    truth = GroundTruth(
        participants=observed["contributed"].astype(np.uint8),
        updates=observed["updates"],
        images=images,
        labels=labels,
        max_participations=int(observed["contributed"].sum(axis=0).max()),
        extra_checkins=float(padded_checkins / max(observed["contributed"].sum(), 1)),
        extra_upload_bytes_per_round=8.0 * observed["padded_coordinates"] / scenario.n_rounds,
    )
    return observation, truth
