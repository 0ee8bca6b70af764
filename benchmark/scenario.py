"""A scenario: one federated-learning setting the benchmark simulates and attacks."""

import math
from dataclasses import asdict, dataclass, fields

from benchmark.catalog import DATASETS, MODELS
from benchmark.errors import BenchmarkError

# Past these the participant matrix alone outgrows a workstation: refused at load, not after minutes of work.
MAX_USERS, MAX_ROUNDS, MAX_CELLS_OF_MATRIX = 100_000, 1_000_000, 200_000_000


def type_error(value: object, kind: object) -> str | None:
    """Why `value` is not of the dataclass field type `kind` (int, float, bool, str, their `| None`), else None.

    TOML gives bool for true/false and int for 3: a bool is not an int here, an int is a float, a float
    that is not finite is refused.
    """
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if kind is int or kind == (int | None):
        if value is None and kind is not int:
            return None
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if kind is float or kind == (float | None):
        if value is None and kind != float:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be finite"
    if kind is str or kind == (str | None):
        return None if isinstance(value, str) or (value is None and kind is not str) else "must be a string"
    return None


@dataclass(frozen=True)
class Scenario:
    """Every knob of the simulation; invalid values raise BenchmarkError at construction.

    The server is the attacker. Under model_policy = "frozen" it keeps the model fixed for all
    n_rounds (the horizon, n_rounds / n_users rounds per user, is its choice too: suites declare the
    horizons a cell offers), unless the defense demands a refreshed model; it then moves the
    model as `server_step` says: "invariant" (the default: it moves the model only along the
    logits' common shift, which changes no prediction and no update, to the point of that line
    nearest the initial model that the clients accept; where that point runs away, m near 1, it
    falls back to "smallest": simulation._Server),
    "smallest" (along the rounds' mean aggregates, the smallest step the defense's clients accept),
    "honest" (along them by the learning rate), or a positive number (along them by that step). The
    first two change it by at least simulation.SMALLEST_RELATIVE_CHANGE, so each refresh is a new model;
    a step below what the clients accept is raised to it. Under "trained" the server applies every
    round's aggregate with the learning rate.
    The weights it starts from are its choice too: `initial_model = "designed"` (benchmark.models.design_weights).
    """

    name: str = "default"
    n_users: int = 20
    n_rounds: int = 60
    participation: float = 0.3
    window: int = 5
    dataset: str = "digits"
    data_root: str | None = None
    model: str = "mlp"
    samples_per_user: int = 1
    local_training: str = "fedsgd"  # "fedsgd": one gradient; "fedavg": local epochs of SGD
    local_epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 0.1
    model_policy: str = "frozen"  # "frozen": the model moves only when the defense forces it; "trained": honest training
    initial_model: str = "default"  # "default": PyTorch's initialisation; "designed": weights the server designs (cnn)
    server_step: str | float = "invariant"  # how a frozen-policy server applies forced refreshes (class docstring)
    update_kind: str = "model"  # "model": real model updates; "synthetic": Gaussian vectors
    synthetic_dim: int = 0  # dimension of synthetic updates; 0 means ceil(1.2 n)
    seed: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            problem = type_error(getattr(self, field.name), field.type)
            if problem:
                raise BenchmarkError(f"scenario {self.name!r}: {field.name} {problem}, got {getattr(self, field.name)!r}")
        checks = [
            (self.n_users >= 2, "n_users must be at least 2"),
            (self.name.strip() != "", "name must not be empty"),
            (self.n_users <= MAX_USERS, f"n_users must be at most {MAX_USERS}"),
            (self.n_rounds >= 1, "n_rounds must be at least 1"),
            (self.n_rounds <= MAX_ROUNDS, f"n_rounds must be at most {MAX_ROUNDS}"),
            (self.n_users * self.n_rounds <= MAX_CELLS_OF_MATRIX, f"n_users * n_rounds must be at most {MAX_CELLS_OF_MATRIX}"),
            (0.0 < self.participation <= 1.0, "participation must be in (0, 1]"),
            (1 <= self.window <= self.n_rounds, "window must be between 1 and n_rounds"),
            (self.dataset in DATASETS, f"dataset must be one of {', '.join(DATASETS)}"),
            (self.model in MODELS, f"model must be one of {', '.join(MODELS)}"),
            (1 <= self.samples_per_user <= 100_000, "samples_per_user must be between 1 and 100000"),
            (self.local_training in ("fedsgd", "fedavg"), "local_training must be 'fedsgd' or 'fedavg'"),
            (1 <= self.local_epochs <= 10_000, "local_epochs must be between 1 and 10000"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.model_policy in ("frozen", "trained"), "model_policy must be 'frozen' or 'trained'"),
            (self.initial_model in ("default", "designed"), "initial_model must be 'default' or 'designed'"),
            (self.initial_model == "default" or (self.model == "cnn" and self.update_kind == "model"),
             "initial_model 'designed' needs model = 'cnn' and update_kind = 'model'"),
            (self.update_kind in ("model", "synthetic"), "update_kind must be 'model' or 'synthetic'"),
            (self.server_step in ("invariant", "smallest", "honest") or _positive_number(self.server_step),
             "server_step must be 'invariant', 'smallest', 'honest' or a positive number"),
            (0 <= self.synthetic_dim <= 10_000_000, "synthetic_dim must be between 0 and 10000000"),
            # sums of n updates in d < n coordinates cannot tell the users apart; 0 means ceil(1.2 n) >= n
            (self.update_kind != "synthetic" or self.synthetic_dim == 0 or self.synthetic_dim >= self.n_users,
             f"synthetic_dim ({self.synthetic_dim}) must be 0 or at least n_users ({self.n_users}): fewer "
             "coordinates than users cannot tell them apart"),
            (self.seed >= 0, "seed must be non-negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise BenchmarkError(f"scenario {self.name!r}: {message}")

    @property
    def horizon(self) -> int | float:
        """Rounds per user, n_rounds / n_users: how long the server keeps the federation (and its model) going."""
        rounds_per_user = self.n_rounds / self.n_users
        return int(rounds_per_user) if rounds_per_user.is_integer() else rounds_per_user

    @classmethod
    def from_dict(cls, values: dict) -> "Scenario":
        if not isinstance(values, dict):
            raise BenchmarkError(f"every [[cells]] entry must be a table, got {values!r}")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise BenchmarkError(f"unknown scenario field(s): {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as error:
            raise BenchmarkError(f"scenario {values.get('name', '?')!r}: {error}") from None

    def to_dict(self) -> dict:
        return asdict(self)


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
