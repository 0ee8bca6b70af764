"""Suites are versioned TOML files; a suite expands into tasks, one per (cell, defense, seed)."""

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path

from attacks.settings import INVERT_AT, AttackSettings
from benchmark import __version__
from benchmark.errors import BenchmarkError
from benchmark.scenario import MAX_ROUNDS, MAX_USERS, Scenario, type_error
from benchmark.utility import UtilityTask
from defenses.builtin import ALIASES
from defenses.registry import check_label, is_builtin_name

# A suite's name is a folder under --results: one path component, no "." or "..", no separator.
_SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
MAX_GRID_CELLS = 10_000  # a grid's crossed axes: more cells than any suite runs (a typo's 300000 hung the loader)
_SUITE_KEYS = ("name", "version", "description", "seeds", "attack", "defenses", "cells", "grids", "utility")


@dataclass(frozen=True)
class DefenseSpec:
    """A defense by name and constructor parameters; `label` names it in tables."""

    name: str
    parameters: tuple[tuple[str, object], ...] = ()
    label: str = ""

    @property
    def display(self) -> str:
        """The label, else the name (an old name's new one: `dp-gaussian` rows are `ldp-gaussian`'s)."""
        return self.label or ALIASES.get(self.name, self.name)


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    description: str
    seeds: tuple[int, ...]
    cells: tuple[Scenario, ...]
    defenses: tuple[DefenseSpec, ...]
    attack: AttackSettings
    utility: UtilityTask | None = None  # the [utility] table: the federated task every defense also trains


@dataclass(frozen=True)
class Task:
    suite: str
    suite_version: str
    scenario: Scenario  # carries the seed
    defense: DefenseSpec
    attack: AttackSettings
    utility: UtilityTask | None = None

    def key(self, device: str = "cpu", source: str | None = None) -> str:
        """Content hash of everything that determines the result.

        It covers the package's source (`source`, default this one's) and every plugin file's bytes, so an
        edited defense or simulation is re-run, and the device inversions run on: CPU and GPU scores differ in
        their last bits. A plugin is named by its file name, not its path, so a task keeps its key when run
        from another folder.
        """
        from benchmark.provenance import plugin_digests, portable_name, source_digest

        name = self.defense.name
        payload = {
            "suite": self.suite,
            "suite_version": self.suite_version,
            "scenario": self.scenario.to_dict(),
            "defense": [portable_name(name), [list(p) for p in self.defense.parameters], self.defense.label],
            "plugins": plugin_digests(name, [value for _, value in self.defense.parameters]),
            "attack": self.attack.keyed(),
            "package": __version__,
            "source": source or source_digest(),
            "device": device,
        }
        if self.utility is not None:
            payload["utility"] = asdict(self.utility)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def defense_digests(tasks: list[Task]) -> dict[str, str]:
    """Each defense label's digest of what its tasks' keys hold of the defense (name, parameters, plugin code):
    the rows a results folder holds under a label were made by the defense a suite file gives it, or not."""
    from benchmark.provenance import plugin_digests, portable_name
    from defenses.registry import bound_parameters

    digests = {}
    for spec in {task.defense.display: task.defense for task in tasks}.values():
        try:  # defaults filled in, as `run --defense` compares defenses (runner._same_defense)
            parameters = sorted(bound_parameters(spec.name, dict(spec.parameters)).items())
        except BenchmarkError:
            parameters = [list(p) for p in spec.parameters]
        payload = [portable_name(ALIASES.get(spec.name, spec.name)), parameters,
                   plugin_digests(spec.name, [value for _, value in spec.parameters])]
        digests[spec.display] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digests


def cells_digest(tasks: list[Task]) -> str:
    """What makes two suites of one name different, whichever defenses run: their cells, seeds, attack, utility."""
    parts = sorted({json.dumps([task.scenario.to_dict(), task.attack.keyed(), asdict(task.utility) if task.utility else None],
                               sort_keys=True, default=str) for task in tasks})
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def check_suite_name(name: object, what: str) -> str:
    """A suite name is one folder under --results: never "..", an absolute path or a separator."""
    if not (isinstance(name, str) and _SUITE_NAME.fullmatch(name)):
        raise BenchmarkError(f"{what} {name!r} must be 1 to 100 letters, digits, '.', '-' or '_', starting with a letter or digit")
    return name


def builtin_suites() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("benchmark.suites").iterdir() if p.name.endswith(".toml"))


def _read(name_or_path: str) -> tuple[dict, str]:
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if path.is_dir():
            raise BenchmarkError(f"suite file {path} is a directory, not a .toml file")
        if not path.is_file():
            raise BenchmarkError(f"suite file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise BenchmarkError(f"suite file {path} cannot be read as UTF-8 text: {error}") from None
    elif path.suffix.lower() == ".toml":  # TINY.TOML: neither a built-in name nor, as spelled, a suite file
        raise BenchmarkError(f"suite file {path}: suite files end in a lowercase .toml; rename it")
    elif name_or_path in builtin_suites():
        text = resources.files("benchmark.suites").joinpath(f"{name_or_path}.toml").read_text()
    else:
        raise BenchmarkError(f"unknown suite {name_or_path!r}; built-in: {', '.join(builtin_suites())}; or give a .toml file")
    try:
        return tomllib.loads(text), name_or_path
    except tomllib.TOMLDecodeError as error:
        raise BenchmarkError(f"suite {name_or_path}: invalid TOML: {error}") from None
    except RecursionError:
        raise BenchmarkError(f"suite {name_or_path}: invalid TOML: arrays or tables nested too deeply") from None


def _defense(entry: dict, origin: str) -> DefenseSpec:
    if not isinstance(entry, dict) or "name" not in entry:
        raise BenchmarkError(f"suite {origin}: every [[defenses]] entry needs a name")
    for key in ("name", "label"):
        if key in entry:
            check_label(entry[key], f"suite {origin}: [[defenses]] {key}")
    label = entry.get("label", "")
    if label != entry["name"] and is_builtin_name(label):
        raise BenchmarkError(f"suite {origin}: [[defenses]] {entry['name']!r} is labelled {label!r}, a built-in defense's "
                             "name: its rows would pass for that defense's")
    parameters = {k: v for k, v in entry.items() if k not in ("name", "label")}
    return DefenseSpec(entry["name"], tuple(sorted(parameters.items())), label)


def _check_unique(origin: str, what: str, values: list) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise BenchmarkError(f"suite {origin}: {what} {value!r} appears twice; each must be unique")
        seen.add(value)


def _attack(origin: str, values: object) -> AttackSettings:
    """[attack] with every field's type and range checked here, not in the first task."""
    if not isinstance(values, dict):
        raise BenchmarkError(f"suite {origin}: [attack] must be a table")
    kinds = {f.name: f.type for f in fields(AttackSettings)}
    # adaptive: the runner runs both; invert: set per task from invert_at; device: the run's --device
    unknown = sorted(set(values) - set(kinds) | {"adaptive", "invert", "device"} & set(values))
    if unknown:
        raise BenchmarkError(f"suite {origin}: unknown attack setting(s) {unknown}")
    for key, value in values.items():
        problem = type_error(value, kinds[key])
        if problem is None and not isinstance(value, bool) and isinstance(value, (int, float)):
            minimum = 1 if key in ("search_iterations", "simplex_iterations", "mip_checks") else 0
            problem = None if value >= minimum else f"must be at least {minimum}"
            if problem is None and key == "time_limit" and value == 0:  # no second for any solve: the joint stage never ran
                problem = "must be above 0 seconds"
        if problem is None and key == "invert_at" and value not in INVERT_AT:
            problem = f"must be one of {', '.join(INVERT_AT)}"
        if problem:
            raise BenchmarkError(f"suite {origin}: [attack] {key} {problem}, got {value!r}")
    return AttackSettings(**values)


def _grid_cells(grids: list[dict]) -> list[dict]:
    """Expand each [[grids]] table: list values are axes, crossed; `rounds_per_user` sets n_rounds = r * n_users."""
    cells = []
    for grid in grids:
        if not isinstance(grid, dict):
            raise BenchmarkError("every [[grids]] entry must be a table")
        base = check_label(grid.get("name", "grid"), "grid name")
        axes = {k: v for k, v in grid.items() if isinstance(v, list) and k not in ("name", "horizons")}
        if any(len(v) == 0 for v in axes.values()):
            raise BenchmarkError(f"grid {base!r}: an axis has no values")
        crossed = math.prod(len(v) for v in axes.values())
        if crossed > MAX_GRID_CELLS:
            raise BenchmarkError(f"grid {base!r}: its axes cross to {crossed} cells, more than {MAX_GRID_CELLS}")
        for values in itertools.product(*axes.values()):
            cell = {**grid, **dict(zip(axes, values))}
            cell["name"] = "-".join([base, *(f"{k}={v}" for k, v in zip(axes, values))])
            if "rounds_per_user" in cell:
                if "n_rounds" in grid:
                    raise BenchmarkError(f"grid {base!r}: give rounds_per_user or n_rounds, not both")
                per_user = cell.pop("rounds_per_user")
                if type_error(per_user, float) or per_user <= 0:
                    raise BenchmarkError(f"grid {base!r}: rounds_per_user must be a positive number, got {per_user!r}")
                cell["n_rounds"] = _whole_rounds(per_user, cell.get("n_users", Scenario.n_users), f"grid {base!r}")
            cells.append(cell)
    return cells


def _horizon_cells(cells: list[dict]) -> list[dict]:
    """A cell's `horizons` (rounds per user the server may choose) become one cell each, n_rounds = h * n_users.

    The copies keep the cell's name: results tell them apart by their `horizon` column.
    """
    expanded = []
    for cell in cells:
        if not isinstance(cell, dict) or "horizons" not in cell:
            expanded.append(cell)
            continue
        name, horizons = cell.get("name", "?"), cell["horizons"]
        n_users = cell.get("n_users", Scenario.n_users)
        if "n_rounds" in cell or "rounds_per_user" in cell:
            raise BenchmarkError(f"cell {name!r}: give horizons or n_rounds (rounds_per_user), not both")
        numbers = isinstance(horizons, list) and all(type_error(h, float) is None for h in horizons)
        if not (numbers and horizons and all(h > 0 for h in horizons) and len(set(horizons)) == len(horizons)):
            raise BenchmarkError(f"cell {name!r}: horizons must be a non-empty list of distinct positive numbers, each finite")
        rounds = [_whole_rounds(horizon, n_users, f"cell {name!r}") for horizon in horizons]
        if len(set(rounds)) < len(rounds):
            raise BenchmarkError(f"cell {name!r}: horizons {horizons} give the same number of rounds twice")
        expanded.extend({**{k: v for k, v in cell.items() if k != "horizons"}, "n_rounds": r} for r in rounds)
    return expanded


def _whole_rounds(per_user: float, n_users: object, where: str) -> int:
    """n_rounds = per_user * n_users, refused unless it is a whole number (never rounded silently)."""
    rounds = _rounds(per_user, n_users, where)
    if abs(rounds - per_user * n_users) > 1e-9 * max(rounds, 1):
        raise BenchmarkError(f"{where}: {per_user} rounds per user times {n_users} users is not a whole number of rounds")
    return rounds


def _rounds(per_user: float, n_users: object, where: str) -> int:
    """n_rounds for `per_user` rounds per user (a positive finite number), checked before it is computed."""
    if type_error(n_users, int) or not 1 <= n_users <= MAX_USERS:
        raise BenchmarkError(f"{where}: n_users must be an integer between 1 and {MAX_USERS}, got {n_users!r}")
    if per_user * n_users > MAX_ROUNDS:
        raise BenchmarkError(f"{where}: {per_user} rounds per user times {n_users} users exceeds {MAX_ROUNDS} rounds")
    return round(per_user * n_users)


# Cell fields that synthetic updates never read (they come from no model, which therefore never moves), and those
# fedsgd's single gradient never reads: a [[cells]] entry that sets them believes they shape the cell (they only
# changed its task keys). A [[grids]] entry may set one for the crossed cells that read it.
MODEL_FIELDS = ("dataset", "data_root", "model", "samples_per_user", "local_training", "local_epochs", "batch_size",
                "learning_rate", "initial_model", "model_policy", "server_step")
FEDAVG_FIELDS = ("local_epochs", "batch_size")


def _check_used(cell: dict) -> None:
    """BenchmarkError for a cell field that this cell's kind of updates never reads."""
    name = cell.get("name", Scenario.name)
    if cell.get("update_kind") == "synthetic":
        unused = [key for key in MODEL_FIELDS if key in cell]
        reason = 'update_kind = "synthetic" (Gaussian updates, no model or data)'
    elif "synthetic_dim" in cell:
        unused, reason = ["synthetic_dim"], "model updates (synthetic_dim sizes synthetic ones)"
    else:
        unused = [key for key in FEDAVG_FIELDS if key in cell] if cell.get("local_training", Scenario.local_training) == "fedsgd" else []
        reason = 'local_training = "fedsgd" (one gradient of all the client\'s samples)'
    if unused:
        raise BenchmarkError(f"cell {name!r}: {', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect with "
                             f"{reason}; remove {'it' if len(unused) == 1 else 'them'}")


def load_suite(name_or_path: str) -> Suite:
    """The suite, every field checked by type and range, names unique; BenchmarkError naming the field."""
    data, origin = _read(name_or_path)
    for key in ("name", "version", "seeds", "defenses"):
        if key not in data:
            raise BenchmarkError(f"suite {origin}: missing key {key!r}")
    unknown = sorted(set(data) - set(_SUITE_KEYS))
    if unknown:
        raise BenchmarkError(f"suite {origin}: unknown key(s) {unknown}; known: {', '.join(_SUITE_KEYS)}")
    name = check_suite_name(data["name"], f"suite {origin}: name")
    for key in ("version", "description"):
        if key in data and not isinstance(data[key], str):
            raise BenchmarkError(f"suite {origin}: {key} must be a string, got {data[key]!r}")
    check_label(data["version"], f"suite {origin}: version")  # an entry prints it: refused here, not after the run
    if not data.get("cells") and not data.get("grids"):
        raise BenchmarkError(f"suite {origin}: needs [[cells]] or [[grids]]")
    for key in ("cells", "grids", "defenses"):
        if key in data and not isinstance(data[key], list):
            raise BenchmarkError(f"suite {origin}: {key} must be a list of tables ([[{key}]])")
    seeds = data["seeds"]
    if not (isinstance(seeds, list) and seeds and all(type_error(s, int) is None and 0 <= s < 2**63 for s in seeds)):
        raise BenchmarkError(f"suite {origin}: seeds must be a non-empty list of integers in [0, 2^63), got {seeds!r}")
    _check_unique(origin, "seed", seeds)
    if not data["defenses"]:
        raise BenchmarkError(f"suite {origin}: defenses must list at least one [[defenses]] entry")
    try:
        for cell in data.get("cells", []):  # a grid may cross kinds of cells with a field that only some of them read
            if isinstance(cell, dict):
                _check_used(cell)
        declared = [*data.get("cells", []), *_grid_cells(data.get("grids", []))]
        for cell in declared:  # expand() sets every task's seed: a cell's own would be ignored
            if isinstance(cell, dict) and "seed" in cell:
                raise BenchmarkError(f"cell {cell.get('name', Scenario.name)!r}: seed is not a cell field; seeds come "
                                     "from the suite's top-level seeds list")
        cells = tuple(Scenario.from_dict(cell) for cell in _horizon_cells(declared))
        for cell in cells:
            check_label(cell.name, "cell name")
            if cell.participation * cell.n_rounds < 1:  # most users would never take part: nothing to attack
                raise BenchmarkError(f"cell {cell.name!r}: participation * n_rounds must be at least 1 (each user "
                                     "takes part in at least one round on average)")
    except BenchmarkError as error:
        raise BenchmarkError(f"suite {origin}: {error}") from None
    _check_unique(origin, "cell name", [cell.get("name", Scenario.name) for cell in declared])  # horizons share one
    defenses = tuple(_defense(entry, origin) for entry in data["defenses"])
    _check_unique(origin, "defense label (name, or label when given)", [spec.display for spec in defenses])
    return Suite(
        name=name,
        version=data["version"],
        description=data.get("description", ""),
        seeds=tuple(seeds),
        cells=cells,
        defenses=defenses,
        attack=_attack(origin, data.get("attack", {})),
        utility=_utility(origin, data.get("utility")),
    )


def _utility(origin: str, table: object) -> UtilityTask | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise BenchmarkError(f"suite {origin}: [utility] must be a table of utility task fields")
    try:
        task = UtilityTask.from_dict(table)
        check_label(task.name, "[utility] name")
        return task
    except BenchmarkError as error:
        raise BenchmarkError(f"suite {origin}: {error}") from None


def expand(suite: Suite, defenses: tuple[DefenseSpec, ...] | None = None) -> list[Task]:
    """Every (cell, defense, seed) of the suite as a task; `defenses` replaces the suite's own list.

    Under `invert_at = "longest-horizon"` only the tasks at their cell's longest horizon invert updates.
    """
    longest: dict[str, int] = {}
    for cell in suite.cells:
        longest[cell.name] = max(longest.get(cell.name, 0), cell.n_rounds)

    def attack(cell: Scenario) -> AttackSettings:
        skip = suite.attack.invert_at == "longest-horizon" and cell.n_rounds < longest[cell.name]
        return replace(suite.attack, invert=False) if skip else suite.attack

    return [
        Task(suite.name, suite.version, replace(cell, seed=seed), defense, attack(cell), suite.utility)
        for cell in suite.cells
        for defense in (defenses or suite.defenses)
        for seed in suite.seeds
    ]
