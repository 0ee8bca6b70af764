"""Suites are versioned TOML files; a suite expands into tasks, one per (cell, defense, seed)."""

import hashlib
import itertools
import json
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path

from attacks.settings import AttackSettings
from benchmark import __version__
from benchmark.errors import BenchmarkError
from benchmark.scenario import Scenario
from benchmark.utility import UtilityTask


@dataclass(frozen=True)
class DefenseSpec:
    """A defense by name and constructor parameters; `label` names it in tables."""

    name: str
    parameters: tuple[tuple[str, object], ...] = ()
    label: str = ""

    @property
    def display(self) -> str:
        return self.label or self.name


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

    def key(self) -> str:
        """Content hash of everything that determines the result, the package version included."""
        payload = {
            "suite": self.suite,
            "suite_version": self.suite_version,
            "scenario": self.scenario.to_dict(),
            "defense": [self.defense.name, [list(p) for p in self.defense.parameters], self.defense.label],
            "attack": asdict(self.attack),
            "package": __version__,
        }
        if self.utility is not None:
            payload["utility"] = asdict(self.utility)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def builtin_suites() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("benchmark.suites").iterdir() if p.name.endswith(".toml"))


def _read(name_or_path: str) -> tuple[dict, str]:
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise BenchmarkError(f"suite file {path} does not exist")
        text = path.read_text()
    elif name_or_path in builtin_suites():
        text = resources.files("benchmark.suites").joinpath(f"{name_or_path}.toml").read_text()
    else:
        raise BenchmarkError(f"unknown suite {name_or_path!r}; built-in: {', '.join(builtin_suites())}; or give a .toml file")
    try:
        return tomllib.loads(text), name_or_path
    except tomllib.TOMLDecodeError as error:
        raise BenchmarkError(f"suite {name_or_path}: invalid TOML: {error}") from None


def _defense(entry: dict) -> DefenseSpec:
    if not isinstance(entry, dict) or "name" not in entry:
        raise BenchmarkError("every [[defenses]] entry needs a name")
    parameters = {k: v for k, v in entry.items() if k not in ("name", "label")}
    return DefenseSpec(str(entry["name"]), tuple(sorted(parameters.items())), str(entry.get("label", "")))


def _grid_cells(grids: list[dict]) -> list[dict]:
    """Expand each [[grids]] table: list values are axes, crossed; `rounds_per_user` sets n_rounds = r * n_users."""
    cells = []
    for grid in grids:
        if not isinstance(grid, dict):
            raise BenchmarkError("every [[grids]] entry must be a table")
        base = str(grid.get("name", "grid"))
        axes = {k: v for k, v in grid.items() if isinstance(v, list) and k != "name"}
        if any(len(v) == 0 for v in axes.values()):
            raise BenchmarkError(f"grid {base!r}: an axis has no values")
        for values in itertools.product(*axes.values()):
            cell = {**grid, **dict(zip(axes, values))}
            cell["name"] = "-".join([base, *(f"{k}={v}" for k, v in zip(axes, values))])
            if "rounds_per_user" in cell:
                if "n_rounds" in grid:
                    raise BenchmarkError(f"grid {base!r}: give rounds_per_user or n_rounds, not both")
                per_user = cell.pop("rounds_per_user")
                cell["n_rounds"] = int(round(per_user * cell.get("n_users", Scenario.n_users)))
            cells.append(cell)
    return cells


def load_suite(name_or_path: str) -> Suite:
    data, origin = _read(name_or_path)
    for key in ("name", "version", "seeds", "defenses"):
        if key not in data:
            raise BenchmarkError(f"suite {origin}: missing key {key!r}")
    if not data.get("cells") and not data.get("grids"):
        raise BenchmarkError(f"suite {origin}: needs [[cells]] or [[grids]]")
    seeds = data["seeds"]
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise BenchmarkError(f"suite {origin}: seeds must be a non-empty list of non-negative integers")
    attack_fields = {f.name for f in fields(AttackSettings)}
    attack = data.get("attack", {})
    if set(attack) - attack_fields:
        raise BenchmarkError(f"suite {origin}: unknown attack setting(s) {sorted(set(attack) - attack_fields)}")
    return Suite(
        name=str(data["name"]),
        version=str(data["version"]),
        description=str(data.get("description", "")),
        seeds=tuple(seeds),
        cells=tuple(Scenario.from_dict(cell) for cell in [*data.get("cells", []), *_grid_cells(data.get("grids", []))]),
        defenses=tuple(_defense(entry) for entry in data["defenses"]),
        attack=AttackSettings(**attack),
        utility=_utility(origin, data.get("utility")),
    )


def _utility(origin: str, table: object) -> UtilityTask | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise BenchmarkError(f"suite {origin}: [utility] must be a table of utility task fields")
    return UtilityTask.from_dict(table)


def expand(suite: Suite, defenses: tuple[DefenseSpec, ...] | None = None) -> list[Task]:
    """Every (cell, defense, seed) of the suite as a task; `defenses` replaces the suite's own list."""
    return [
        Task(suite.name, suite.version, replace(cell, seed=seed), defense, suite.attack, suite.utility)
        for cell in suite.cells
        for defense in (defenses or suite.defenses)
        for seed in suite.seeds
    ]
