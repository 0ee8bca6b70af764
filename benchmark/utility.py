"""The utility track: a realistic federated task every defense trains, with the same hooks as the attack scenario.

Fashion-MNIST split over hundreds of clients by a seeded Dirichlet label skew,
Poisson sampling of about `cohort` clients a round, local SGD epochs, a small
CNN. A round's cohort trains together: torch.func's vmap runs every client's
own copy of the weights at once (and, for DP-SGD, every example's gradient).
Each client's update then passes the defense's hooks exactly as in
benchmark.simulation: choose_participants, local_update (a declared DP-SGD runs
batched; any other override runs per client), transform_update one client at a
time, padded_uploads, transform_aggregate; the server applies the sum, through
transform_step (central DP's noise), divided by the number of contributors.
"""

import copy
import functools
import math
from dataclasses import dataclass, fields

import numpy as np

from benchmark.catalog import DATASETS
from benchmark.errors import BenchmarkError
from benchmark.protocol import HOOK_STREAMS, secure_aggregate, server_divisor, streams
from benchmark.scenario import MAX_ROUNDS, MAX_USERS
from defenses.base import Defense, local_training_part, trains_like_undefended

_STREAMS = ("split", "participation", "init", "clients", *HOOK_STREAMS)
_SALT = 0x5554  # keeps the utility streams apart from the attack scenario's, which share the seed


@dataclass(frozen=True)
class UtilityTask:
    """A federated training task; each client joins a round with probability cohort / n_clients (Poisson)."""

    name: str = "fashion-standard"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    n_clients: int = 500
    cohort: int = 50  # expected clients per round
    n_rounds: int = 200
    samples_per_client: int = 120
    dirichlet_alpha: float = 1.0  # label skew: each client's class mix ~ Dirichlet(alpha)
    local_epochs: int = 1
    batch_size: int = 20
    learning_rate: float = 0.15  # local SGD
    server_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.dataset in DATASETS, f"dataset must be one of {', '.join(DATASETS)}"),
            (2 <= self.n_clients <= MAX_USERS, f"n_clients must be between 2 and {MAX_USERS}"),
            (1 <= self.cohort <= self.n_clients, "cohort must be between 1 and n_clients"),
            (1 <= self.n_rounds <= MAX_ROUNDS, f"n_rounds must be between 1 and {MAX_ROUNDS}"),
            (1 <= self.samples_per_client <= 100_000, "samples_per_client must be between 1 and 100000"),
            (self.n_clients * self.samples_per_client <= 10_000_000,
             "n_clients * samples_per_client must be at most 10000000 (images held in memory)"),
            (self.dirichlet_alpha > 0, "dirichlet_alpha must be positive"),
            (1 <= self.local_epochs <= 10_000, "local_epochs must be between 1 and 10000"),
            (1 <= self.batch_size <= self.samples_per_client, "batch_size must be between 1 and samples_per_client"),
            (self.learning_rate > 0 and self.server_learning_rate > 0, "learning rates must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise BenchmarkError(f"utility task {self.name!r}: {message}")

    @property
    def sample_rate(self) -> float:
        return self.cohort / self.n_clients

    @classmethod
    def from_dict(cls, values: dict) -> "UtilityTask":
        from benchmark.scenario import type_error

        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise BenchmarkError(f"unknown utility task field(s): {', '.join(unknown)}")
        for field_ in fields(cls):
            if field_.name in values:
                problem = type_error(values[field_.name], field_.type)
                if problem:
                    raise BenchmarkError(f"[utility] {field_.name} {problem}, got {values[field_.name]!r}")
        try:
            return cls(**values)
        except TypeError as error:
            raise BenchmarkError(f"utility task {values.get('name', '?')!r}: {error}") from None


# Where Fashion-MNIST is absent: digits (1347 training images), labelled as such in every row.
DIGITS_FALLBACK = UtilityTask(name="digits-fallback (Fashion-MNIST absent)", dataset="digits", n_clients=100, cohort=20,
                              n_rounds=100, samples_per_client=13, batch_size=13, learning_rate=0.3)


def resolve(task: UtilityTask) -> UtilityTask:
    """`task`, or DIGITS_FALLBACK where it asks for Fashion-MNIST from the default place and the files are absent."""
    from benchmark.datasets import FASHION_MNIST_ROOT

    if task.dataset == "fashion-mnist" and task.data_root is None and not any(FASHION_MNIST_ROOT.glob("train-images*")):
        return DIGITS_FALLBACK
    return task


def _example_dp(defense: Defense) -> tuple[float, float] | None:
    """(noise_multiplier, clip_norm) of the DP-SGD that provides the defense's local training, if it declares one."""
    return getattr(local_training_part(defense), "example_dp", None)


def split(labels: np.ndarray, n_classes: int, task: UtilityTask, rng: np.random.Generator) -> np.ndarray:
    """(n_clients, samples) training indices: each client's class mix ~ Dirichlet(alpha); a class pool is reused when spent."""
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
    taken = np.zeros(n_classes, dtype=np.int64)
    index = np.empty((task.n_clients, task.samples_per_client), dtype=np.int64)
    for client in range(task.n_clients):
        counts = rng.multinomial(task.samples_per_client, rng.dirichlet([task.dirichlet_alpha] * n_classes))
        rows = [pools[c][(taken[c] + np.arange(k)) % len(pools[c])] for c, k in enumerate(counts) if k]
        taken += counts
        index[client] = rng.permutation(np.concatenate(rows))
    return index


def build_cnn(image_shape: tuple[int, int, int], n_classes: int, seed: int):
    """Two stride-2 5x5 convolutions (8 and 16 channels, ReLU) and a linear layer, float32."""
    import torch
    from torch import nn

    channels, height, width = image_shape
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(channels, 8, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(8, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(16 * (-(-height // 4)) * (-(-width // 4)), n_classes),
        )


class _Cohort:
    """Local training of many clients at once, every client its own weights: benchmark.local_sgd's loop, vmapped
    (DP-SGD's clipped and noised steps batched here)."""

    def __init__(self, model, task: UtilityTask) -> None:
        import torch
        from torch.func import functional_call, grad, vmap

        from benchmark.local_sgd import LocalTraining

        self.model, self.task, self.torch = model, task, torch
        self.training = LocalTraining("fedavg", task.local_epochs, task.batch_size, task.learning_rate)

        def example_loss(params, x, y):
            return torch.nn.functional.cross_entropy(functional_call(model, params, (x[None],)), y[None])

        self.example_grads = vmap(vmap(grad(example_loss), in_dims=(None, 0, 0)))

    def train(self, start: dict, x, y, generator, example_dp: tuple[float, float] | None, noise_generator):
        """(K, d) float64 updates (w_start - w_end) / lr of K clients with data x (K, S, ...), y (K, S)."""
        from benchmark.local_sgd import local_updates

        torch, task = self.torch, self.task
        k, s = y.shape
        orders = torch.stack([torch.argsort(torch.rand(k, s, generator=generator), dim=1)
                              for _ in range(task.local_epochs)], dim=1)  # (K, epochs, S): each client's shuffles
        if example_dp is None:
            return local_updates(self.model, start, x, y, self.training, orders).double().numpy()
        weights = {name: value.expand(k, *value.shape).clone() for name, value in start.items()}
        for epoch in range(task.local_epochs):
            for batch in orders[:, epoch].split(task.batch_size, dim=1):
                xb = torch.gather(x, 1, batch.reshape(k, -1, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))
                step = self._noisy_gradient(weights, xb, torch.gather(y, 1, batch), *example_dp, noise_generator)
                weights = {name: weights[name] - task.learning_rate * step[name] for name in weights}
        flat = torch.cat([(start[n] - weights[n]).reshape(k, -1) for n in start], dim=1) / task.learning_rate
        return flat.double().numpy()

    def _noisy_gradient(self, weights, xb, yb, noise_multiplier, clip_norm, generator):
        """defenses.private_training's step, batched: clipped per-example gradients, summed, noised, / batch size."""
        torch = self.torch
        grads = self.example_grads(weights, xb, yb)  # each (K, B, *shape)
        k, b = yb.shape
        norms = torch.sqrt(sum(g.reshape(k, b, -1).pow(2).sum(dim=2) for g in grads.values()))
        scale = torch.clamp(clip_norm / norms, max=1.0)
        return {
            name: ((g * scale.reshape(k, b, *[1] * (g.dim() - 2))).sum(dim=1)
                   + noise_multiplier * clip_norm * torch.randn(k, *g.shape[2:], generator=generator)) / b
            for name, g in grads.items()
        }


def _scenario(task: UtilityTask, seed: int):
    """The Scenario a per-client local_update hook is given: the utility task's local training."""
    from benchmark.scenario import Scenario

    return Scenario(name=task.name, n_users=task.n_clients, n_rounds=task.n_rounds, participation=task.sample_rate,
                    window=1, dataset=task.dataset, model="cnn", samples_per_user=task.samples_per_client,
                    local_training="fedavg", local_epochs=task.local_epochs, batch_size=task.batch_size,
                    learning_rate=task.learning_rate, model_policy="trained", seed=seed)


@functools.lru_cache(maxsize=2)
def _data(dataset: str, root: str | None):
    from benchmark.datasets import load_dataset

    return load_dataset(dataset, root)


def train(task: UtilityTask, defense: Defense, seed: int, threads: int = 1, one_at_a_time: bool = False) -> float:
    """Test accuracy of the task's model after federated training under `defense`; the same seed gives the same figure.

    Runs on `threads` torch threads (restored after): one per worker is fastest for these small kernels.
    `one_at_a_time` trains each client alone (the baseline of benchmarks/utility.py): the same
    computation, other draws of the batch order, many times slower.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(task, defense, seed, one_at_a_time)
    finally:
        torch.set_num_threads(previous)


def _train(task: UtilityTask, defense: Defense, seed: int, one_at_a_time: bool) -> float:
    import torch
    from torch.func import functional_call

    from benchmark.local_sgd import flatten, unflatten

    rngs = streams([seed, _SALT], _STREAMS)
    data = _data(task.dataset, task.data_root)
    index = split(data.y_train, data.n_classes, task, rngs["split"])
    images, labels = torch.from_numpy(data.x_train[index]), torch.from_numpy(data.y_train[index])
    model = build_cnn(tuple(data.x_train.shape[1:]), data.n_classes, int(rngs["init"].integers(2**31)))
    params = {name: value.detach().clone() for name, value in model.named_parameters()}
    cohort = _Cohort(model, task)
    client_gen = torch.Generator().manual_seed(int(rngs["clients"].integers(2**63)))
    noise_gen = torch.Generator().manual_seed(int(rngs["defense_training"].integers(2**63)))
    example_dp = _example_dp(defense)
    per_client = example_dp is None and local_training_part(defense) is not None
    scenario = _scenario(task, seed) if per_client else None
    dim = sum(value.numel() for value in params.values())
    padding_rate = float(defense.public_parameters().get("padding_rate", 0.0))
    for t, contributing, checked_in in _rounds(task, defense, rngs):
        clients = np.flatnonzero(contributing)
        sent = []
        if len(clients):
            x, y = images[clients], labels[clients]
            if one_at_a_time:
                updates = np.concatenate([cohort.train(params, x[i : i + 1], y[i : i + 1], client_gen, example_dp, noise_gen)
                                          for i in range(len(clients))])
            else:
                updates = cohort.train(params, x, y, client_gen, example_dp, noise_gen)
            for row in range(len(clients)):
                own = _own_update(defense, model, params, x[row], y[row], scenario, rngs["defense_training"]) if per_client else None
                sent.append(updates[row] if own is None else own)
        padded = int((np.asarray(checked_in) & ~np.asarray(contributing)).sum())
        aggregate, _ = secure_aggregate(defense, sent, padded, dim, rngs)
        if len(clients):
            divisor = server_divisor(len(clients), task.sample_rate * task.n_clients, padding_rate)
            aggregate = defense.transform_step(aggregate, rngs["defense_steps"])
            step = torch.from_numpy(aggregate * (task.server_learning_rate * task.learning_rate / divisor)).float()
            params = unflatten(model, flatten(params) - step)
    with torch.no_grad():
        logits = functional_call(model, params, (torch.tensor(data.x_test),))  # a copy: digits arrays are read-only
    return float((logits.argmax(dim=1).numpy() == data.y_test).mean())


def _rounds(task: UtilityTask, defense: Defense, rngs: dict):
    """Each round's (index, contributing, checked_in): Poisson sampling, then the defense's choose_participants."""
    for t in range(task.n_rounds):
        selected = rngs["participation"].random(task.n_clients) < task.sample_rate
        contributing, checked_in = defense.choose_participants(selected, t, rngs["defense_participants"])
        yield t, np.asarray(contributing, dtype=bool), checked_in


def utility_epsilon(task: UtilityTask | None, seed: int, defense: Defense, delta: float) -> float:
    """The headline epsilon (the defense's privacy hook, at its level) of the utility run behind test_accuracy: its
    rounds, its sampling rate and the client who contributed most, replayed from the run's own participation streams
    (no training). NaN without a task or a DP guarantee.

    A row's `epsilon` is that of the attack scenario, where the server keeps one model for hundreds of rounds; this
    is the guarantee of the training whose accuracy the row reports. A DP-SGD part counts its steps a round for the
    utility task's local training, as when it trains the utility task's clients itself.
    """
    if task is None:
        return math.nan
    task = resolve(task)
    replay = copy.deepcopy(defense)
    counts_steps = getattr(local_training_part(replay), "count_steps", None)
    if callable(counts_steps):  # DP-SGD: its steps a round under the utility task's local training
        counts_steps(_scenario(task, seed))
    contributions = np.zeros(task.n_clients, dtype=np.int64)
    for _, contributing, _ in _rounds(task, replay, streams([seed, _SALT], _STREAMS)):
        contributions += contributing
    return replay.privacy(task.n_rounds, task.sample_rate, int(contributions.max()), delta).epsilon


def _own_update(defense: Defense, model, params: dict, x, y, scenario, rng: np.random.Generator) -> np.ndarray | None:
    """The defense's own local_update for one client, on a float64 copy of the global model (as in the simulation)."""
    import torch

    client = copy.deepcopy(model).double()
    with torch.no_grad():
        for name, parameter in client.named_parameters():
            parameter.copy_(params[name])
    update = defense.local_update(client, x.double(), y, scenario, rng)
    return None if update is None else np.asarray(update, dtype=np.float64)


@functools.lru_cache(maxsize=64)
def cached_accuracy(task: UtilityTask, seed: int, defense_key: str) -> float:
    """train() for the defense behind `defense_key` (JSON [name, parameters]); "" is the undefended run. Cached per process."""
    import json

    from defenses.guard import GuardedDefense
    from defenses.registry import make_defense

    if not defense_key:
        return train(task, Defense(), seed)
    name, parameters = json.loads(defense_key)
    return train(task, GuardedDefense(make_defense(name, parameters)), seed)


def defense_key(name: str, parameters: dict) -> str:
    """The `defense_key` of cached_accuracy and UtilityRun for a defense given by name and parameters."""
    import json

    return json.dumps([name, dict(parameters)], sort_keys=True, default=str)


def runs_needed(task: UtilityTask, seed: int, key: str, defense: Defense) -> tuple["UtilityRun", "UtilityRun"]:
    """(undefended, defended) trainings a row needs; the same run twice when the defense leaves training alone."""
    resolved = resolve(task)
    undefended = UtilityRun(resolved, seed, "")
    return undefended, undefended if trains_like_undefended(defense) else UtilityRun(resolved, seed, key)


@dataclass(frozen=True)
class UtilityRun:
    """One training of the utility track: a resolved task, a seed, a defense_key ("" undefended)."""

    task: UtilityTask
    seed: int
    defense_key: str

    def key(self, source: str | None = None) -> str:
        """Content hash: the task, the seed, the defense (plugin files by name and bytes) and the package source,
        so an edited defense, plugin or training loop trains again."""
        import hashlib
        import json
        from dataclasses import asdict

        from benchmark import __version__
        from benchmark.provenance import plugin_digests, portable_name, source_digest

        defense = None
        if self.defense_key:
            name, parameters = json.loads(self.defense_key)
            defense = [portable_name(name), parameters, plugin_digests(name, list(parameters.values()))]
        payload = {"utility": asdict(self.task), "seed": self.seed, "defense": defense, "package": __version__,
                   "source": source or source_digest()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def accuracy(self) -> float:
        return cached_accuracy(self.task, self.seed, self.defense_key)


def not_computed() -> dict:
    nan = math.nan
    return {"test_accuracy": nan, "test_accuracy_undefended": nan, "utility_drop": nan,
            "utility_task": "not computed: the suite declares no [utility] task"}


def scores_of(task: UtilityTask, undefended: float, defended: float) -> dict:
    """A row's utility columns from the two accuracies of the same (resolved) task and seed."""
    return {"test_accuracy": defended, "test_accuracy_undefended": undefended, "utility_drop": undefended - defended,
            "utility_task": describe(task)}


def utility_scores(task: UtilityTask | None, seed: int, defense_key: str, defense: Defense) -> dict:
    """test_accuracy, test_accuracy_undefended, utility_drop (same seed, same task) and utility_task for one row,
    trained here (suites train each run once beforehand: benchmark.runner).

    A defense that leaves every training hook alone shares the undefended run: its drop is exactly 0.
    """
    if task is None:
        return not_computed()
    undefended, defended = runs_needed(task, seed, defense_key, defense)
    return scores_of(undefended.task, undefended.accuracy(), defended.accuracy())


def describe(task: UtilityTask) -> str:
    return (f"{task.name}: {task.dataset}, {task.n_clients} clients (Dirichlet {task.dirichlet_alpha:g}), "
            f"~{task.cohort}/round, {task.n_rounds} rounds, {task.local_epochs} local epoch(s)")


