"""Leaderboard entries: `submit` runs a suite for one defense and records it, `verify` re-runs a sample of
its tasks, and `render_readme` turns the entries into leaderboard/README.md.

An entry keeps every task's result row (without wall-clock columns) beside the SHA-256 of its canonical
JSON, so a verifier can name each score that differs, and a reader can check no row was edited.
"""

import hashlib
import inspect
import json
import math
import os
import random
import re
import secrets
import tempfile
import tomllib
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import cache
from importlib import metadata, resources
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from benchmark import __version__
from benchmark.columns import NOT_APPLICABLE, RESULT_COLUMNS, SCORE_COLUMNS, WALL_CLOCK_COLUMNS, row_problem
from benchmark.errors import BenchmarkError
from benchmark.executor import Executor
from benchmark.provenance import plugin_path, portable_name, source_digest
from benchmark.runner import plugin_labels, run_suite
from benchmark.store import ResultStore, check_output_file, look_up, write_atomically
from benchmark.suite import DefenseSpec, Suite, Task, builtin_suites, expand, load_suite
from defenses.builtin import ALIASES, BUILTIN_DEFENSES
from defenses.registry import bound_parameters, check_label, defense_class, is_builtin_name, make_defense
from leaderboard.render import COLUMN_NOTES, default_columns, render
from leaderboard.summary import OPTIONAL_SCORES, SUMMARY_SCORES, check_table, summarize

ENTRY_FORMAT = 1
SOURCE_KEY = "disaggbench-source"  # in `packages`: the digest of the source its task keys hash
DEFAULT_ENTRIES = Path("leaderboard") / "entries"
STANDARD_SUITE = "standard"
MISSING_PARAMETERS = "(none)"
AGGREGATED_SCORES = SUMMARY_SCORES
# Libraries whose versions can change a score; recorded so a verifier can explain a difference.
RECORDED_PACKAGES = ("disaggbench", "numpy", "scipy", "torch", "highspy", "opacus", "pandas",
                     "scikit-learn", "scikit-image", "torchmetrics", "dp-accounting")
README_COLUMNS = ("rank", "tier", "defense", "attack_success_worst", "attributed_success_worst",
                  "anonymous_success_worst", "horizon", "psnr_share_worst", "utility_drop_worst", "test_accuracy",
                  "test_accuracy_undefended", "epsilon", "epsilon_level", "epsilon_utility", "overhead_checkins", "tasks",
                  "failed", "not_applicable")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
INT64 = (-(2**63), 2**63 - 1)  # the integers an entry may hold (suites' seeds, --param values): what pandas reads
# The columns a task's row holds (benchmark.runner): the results table's, the suite version and package version
# beside them, and scores that earlier versions wrote and their entries keep (standard v2's epsilon_prv*). Entries
# leave the wall-clock columns out. Any other column was not written by a task.
_ROW_EXTRA_COLUMNS = ("suite_version", "package_version")
_RETIRED_COLUMNS = ("epsilon_prv", "epsilon_prv_amplified")
ROW_COLUMNS = frozenset((*RESULT_COLUMNS, *_ROW_EXTRA_COLUMNS, *_RETIRED_COLUMNS)) - frozenset(WALL_CLOCK_COLUMNS)
# A cell's declared numbers, as a row repeats them (benchmark.runner._row): numbers, never text
_CELL_NUMBERS = ("n_users", "n_rounds", "horizon", "window", "participation")
# Figures of one account: given only with the headline epsilon (defenses.accounting.Privacy)
_SAME_ACCOUNT = ("epsilon_amplified", "epsilon_rdp")


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same data always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def result_hash(result: dict) -> str:
    return hashlib.sha256(canonical_json(result)).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BenchmarkError(f"entry name {name!r} must be 1 to 100 letters, digits, '-' or '_'")
    return name


def parse_parameters(pairs: list[str]) -> dict:
    """`KEY=VALUE` pairs; VALUE is read as a TOML value (1, 0.5, true, [1, 2], "text"), else kept as text."""
    parameters: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise BenchmarkError(f"--param {pair!r} must look like NAME=VALUE")
        if key in parameters:
            raise BenchmarkError(f"--param {key} given twice")
        try:
            parameters[key] = tomllib.loads(f"v = {text}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            parameters[key] = text
        if _too_large(parameters[key]):  # an entry holding it could not be read back (verify, --readme)
            raise BenchmarkError(f"--param {key}: an integer beyond 64 bits")
    return parameters


def _too_large(value: object) -> bool:
    if isinstance(value, dict):
        return any(map(_too_large, value.values()))
    if isinstance(value, list):
        return any(map(_too_large, value))
    return isinstance(value, int) and not -2**63 <= value < 2**63


def full_parameters(defense: str, given: dict) -> dict:
    """Every constructor parameter of the defense, defaults filled in, checked by constructing it once.

    Recording the defaults too keeps an entry meaningful if a later version changes them.
    """
    parameters = bound_parameters(defense, given)
    try:
        parameters = json.loads(canonical_json(parameters))  # tuples become lists, as a verifier will read them
    except (TypeError, ValueError):
        raise BenchmarkError(f"defense {defense!r}: parameters must be finite JSON values, got {parameters}") from None
    make_defense(defense, parameters)
    return parameters


def package_versions() -> dict[str, str]:
    versions = {}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    versions["disaggbench"] = __version__
    versions[SOURCE_KEY] = source_digest()
    return versions


def _schema() -> dict:
    return json.loads(resources.files("leaderboard").joinpath("entry.schema.json").read_text())


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_entry(entry: object, origin: str) -> dict:
    """The entry if it matches entry.schema.json and every task's hash matches its result, else BenchmarkError."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(_schema()).iter_errors(entry))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "top level"
        raise BenchmarkError(f"entry {origin} is invalid at {where}: {_one_line(error.message)}")
    seen = set()
    for task in entry["tasks"]:
        key, result = task["key"], task["result"]
        if key in seen:
            raise BenchmarkError(f"entry {origin} lists task {key} twice")
        seen.add(key)
        problem = row_problem(result)
        if problem is not None:
            raise BenchmarkError(f"entry {origin}: task {key}: {problem}")
        if result_hash(result) != task["sha256"]:
            raise BenchmarkError(f"entry {origin}: task {key}: sha256 does not match its result")
        if (result["seed"], result["scenario"]) != (task["seed"], task["scenario"]):
            raise BenchmarkError(f"entry {origin}: task {key}: seed or scenario differs from its result")
    return entry


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of float range")
    return value


def _bounded_int(text: str) -> int:
    """An integer of the int64 range (a seed or --param value may be as large as 2^63 - 1), checked by value; more
    than 19 digits are refused before converting (int() of a huge string is slow)."""
    value = int(text) if len(text.lstrip("-")) <= 19 else None
    if value is None or not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"integer {text[:20]}{'...' if len(text) > 20 else ''} lies outside the 64-bit range "
                         f"[{INT64[0]}, {INT64[1]}]")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (give null for a missing number)")


def load_entry(path: str | Path) -> dict:
    """Read and validate an entry file; its name must match the file name. Its rows, defense, texts and task set are
    checked as well (check_entry), the task set against its suite where the suite it recorded can be found."""
    path = Path(path)
    if path.is_dir():
        raise BenchmarkError(f"entry {path} is a directory; give an entry's .json file")
    if not path.is_file():
        raise BenchmarkError(f"entry {path} does not exist")
    try:
        entry = json.loads(path.read_text(encoding="utf-8"), parse_float=_finite_float, parse_int=_bounded_int,
                           parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise BenchmarkError(f"entry {path} is not valid JSON: {_one_line(str(error))}") from None
    except RecursionError:
        raise BenchmarkError(f"entry {path} is not valid JSON: arrays or objects nested too deeply") from None
    validate_entry(entry, str(path))
    if entry["name"] != path.stem:
        raise BenchmarkError(f"entry {path} is named {entry['name']!r}; the file must be {entry['name']}.json")
    check_entry(entry, str(path), _recorded_suite(entry, path.parent))
    return entry


def _recorded_suite(entry: dict, folder: Path) -> Suite | None:
    """The suite the entry ran, where it can be found: its recorded source (a file relative to the entry's folder or
    a built-in suite), else the leaderboard's kept copy `suites/NAME-vVERSION.toml` beside the entries folder; only
    a suite of the entry's name and version counts. None when neither is (a built-in suite since moved on)."""
    recorded = entry["suite"]["source"]
    candidates = [recorded]
    if recorded.endswith(".toml") and not Path(recorded).is_absolute() and (folder / recorded).is_file():
        candidates = [str(folder / recorded)]
    candidates.append(str(folder.parent / "suites" / f"{entry['suite']['name']}-v{entry['suite']['version']}.toml"))
    for source in candidates:
        if source.endswith(".toml") and not Path(source).is_file():
            continue
        try:
            suite = load_suite(source)
        except BenchmarkError:
            continue  # verify, which needs it, names the problem; the entry is checked without it here
        if (suite.name, suite.version) == (entry["suite"]["name"], entry["suite"]["version"]):
            return suite
    return None


def check_entry(entry: dict, origin: str, suite: Suite | None) -> None:
    """BenchmarkError naming `origin` and the field for what a schema-valid entry cannot hold: a `created` that is no
    UTC time, a name or label with control characters, task rows a results table would refuse (check_table) or that
    are not rows a task writes, rows of another defense or suite than the entry names, and a task set that is not
    the suite's: every (cell, seed, horizon) of `suite` once, or without it (not found) the full seeds x cells grid."""
    _check_texts(entry, origin)
    _check_defense(entry, origin, suite)
    _check_rows(entry, origin)
    _check_task_set(entry, origin, suite)


def _check_texts(entry: dict, origin: str) -> None:
    try:
        datetime.strptime(entry["created"], CREATED_FORMAT)
    except ValueError:
        raise BenchmarkError(f"entry {origin}: created {entry['created']!r} is not a UTC time "
                             "(YYYY-MM-DDTHH:MM:SSZ)") from None
    # (suite.source, and a plugin's defense.name, path/to/file.py:Class, are paths, not names tables print)
    name = entry["defense"]["name"]
    fields = [("suite.name", entry["suite"]["name"]), ("suite.version", entry["suite"]["version"])]
    fields += [] if plugin_path(name) is not None else [("defense.name", name)]
    fields += [("defense.label", entry["defense"]["label"])] if entry["defense"]["label"] else []  # empty: none given
    fields += [(f"packages.{package}", version) for package, version in entry["packages"].items()]
    for field, value in fields:
        check_label(value, f"entry {origin}: {field}")


def _check_defense(entry: dict, origin: str, suite: Suite | None) -> None:
    """A label that names another built-in defense, or parameters the named built-in does not take, would put the
    rows under the wrong defense; where the suite at hand lists the built-in with these parameters, its label."""
    name, label, parameters = entry["defense"]["name"], entry["defense"]["label"], entry["defense"]["parameters"]
    if label and label != name and is_builtin_name(label):
        raise BenchmarkError(f"entry {origin}: defense.label {label!r} is a built-in defense's name, but the entry's "
                             f"defense is {name!r}")
    if name not in BUILTIN_DEFENSES and name not in ALIASES:
        return  # a plugin or entry point: verify loads it (and its key checks its label); it need not be here
    try:
        inspect.signature(defense_class(name)).bind(**parameters)
    except TypeError as error:
        raise BenchmarkError(f"entry {origin}: defense.parameters {_one_line(str(parameters), 80)} are not those of "
                             f"defense {name!r}: {error}") from None
    listed = [spec for spec in (suite.defenses if suite is not None else ())
              if spec.name == name and full_parameters(spec.name, dict(spec.parameters)) == parameters]
    if listed and listed[0].label != label:  # (one the suite does not list: verify finds none of its tasks' keys)
        raise BenchmarkError(f"entry {origin}: defense.label is {label!r}, but suite {suite.name} version "
                             f"{suite.version} labels {name} with these parameters {listed[0].label!r}")


def _cell_value(value: object) -> object:
    """A row's value as a results table holds it: null as NaN, "inf" as infinity."""
    if value is None:
        return math.nan
    return float(value) if value in ("inf", "-inf") else value


_NO_SCORES = dict.fromkeys(SCORE_COLUMNS, math.nan)


def _check_rows(entry: dict, origin: str) -> None:
    """Every task row checked as a results table's rows are (check_table: types, ranges, statuses, the ID columns a
    cell can declare, a task twice), then what a task writes and the entry names."""
    defense, tasks = entry["defense"]["label"] or entry["defense"]["name"], entry["tasks"]
    for task in tasks:
        where, result = f"entry {origin}: task {task['key']}", task["result"]
        unknown = sorted(set(result) - ROW_COLUMNS)
        if unknown:
            why = ("a wall-clock column, which entries leave out" if unknown[0] in WALL_CLOCK_COLUMNS
                   else "not a column a task writes")
            raise BenchmarkError(f"{where}: column {unknown[0]!r} is {why}")
        for column in _CELL_NUMBERS:
            value = result.get(column)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number and (value is not None or column != "horizon"):  # a cell without horizons: no horizon
                raise BenchmarkError(f"{where}: {column} must be a number, got {value!r}")

    def refuse(error: BenchmarkError, task: dict | None) -> BenchmarkError:
        detail = str(error).removeprefix(f"results table {origin}: ")
        return BenchmarkError(f"entry {origin}: " + (f"task {task['key']}: " if task else "tasks: ") + detail)

    def table(rows: list[dict]) -> pd.DataFrame:  # as results_frame reads them: a score no row holds is NaN
        return pd.DataFrame([{**_NO_SCORES, **{k: _cell_value(v) for k, v in t["result"].items()}} for t in rows])

    try:
        check_table(table(tasks), origin)
    except BenchmarkError as error:
        for task in tasks:  # the row at fault, where one alone is (a task twice is not)
            try:
                check_table(table([task]), origin)
            except BenchmarkError as own:
                raise refuse(own, task) from None
        raise refuse(error, None) from None
    for task in tasks:
        where, result = f"entry {origin}: task {task['key']}", task["result"]
        if result["defense"] != defense:
            raise BenchmarkError(f"{where}: defense is {result['defense']!r}, but the entry's defense is {defense!r}")
        if "suite" in result and result["suite"] != entry["suite"]["name"]:  # (rows' suite_version is not compared)
            raise BenchmarkError(f"{where}: suite is {result['suite']!r}, but the entry's suite.name is "
                                 f"{entry['suite']['name']!r}")
        horizon = result.get("horizon")
        if horizon is not None and not math.isclose(horizon, result["n_rounds"] / result["n_users"], rel_tol=1e-12):
            raise BenchmarkError(f"{where}: horizon is {horizon!r}, but n_rounds / n_users is "
                                 f"{result['n_rounds'] / result['n_users']!r}")
        status = result["status"]
        if status.startswith(NOT_APPLICABLE):
            scored = [column for column in SCORE_COLUMNS if result.get(column) is not None]
            if scored:
                raise BenchmarkError(f"{where}: status is {_one_line(status, 60)!r}, but {scored[0]} holds a value "
                                     "(a task that does not apply scores nothing)")
        if result.get("epsilon") is None:
            given = [column for column in _SAME_ACCOUNT if result.get(column) is not None]
            if given:
                raise BenchmarkError(f"{where}: {given[0]} is {result[given[0]]!r} without an epsilon (it is a figure "
                                     "of the same account)")


def _task_identity(task: dict, with_rounds: bool) -> tuple:
    """What identifies an entry's task whatever code made it: its cell, seed and (a cell's horizons share its name)
    its number of rounds."""
    place = (task["scenario"], task["seed"])
    return (*place, task["result"].get("n_rounds")) if with_rounds else place


def _describe(identity: tuple) -> str:
    return f"cell {identity[0]}, seed {identity[1]}" + (f", n_rounds {identity[2]}" if len(identity) > 2 else "")


def _check_task_set(entry: dict, origin: str, suite: Suite | None) -> None:
    """The entry's tasks are exactly the suite's for its defense: every (cell, seed, n_rounds) once, none missing
    (a cherry-picked entry), none other. Without its suite, the seeds x cells grid its own tasks span is complete."""
    tasks = entry["tasks"]
    with_rounds = all("n_rounds" in task["result"] for task in tasks)  # every row a task writes holds it
    held = Counter(_task_identity(task, with_rounds) for task in tasks)
    twice = [identity for identity, count in held.items() if count > 1]
    if twice:
        raise BenchmarkError(f"entry {origin}: tasks: ({_describe(twice[0])}) appears {held[twice[0]]} times")
    if suite is not None:
        cells = {(cell.name, cell.n_rounds): cell for cell in suite.cells}
        expected = Counter((cell.name, seed, cell.n_rounds)[: 3 if with_rounds else 2]
                           for cell in suite.cells for seed in suite.seeds)
        of = f"suite {suite.name} version {suite.version}"
        for task in tasks:
            identity = _task_identity(task, with_rounds)
            if identity not in expected:
                raise BenchmarkError(f"entry {origin}: task {task['key']} ({_describe(identity)}) is not a task "
                                     f"of {of}")
            cell = cells.get((task["scenario"], task["result"].get("n_rounds")))
            for column in ("n_users", "window", "participation"):
                if cell is not None and column in task["result"] and task["result"][column] != getattr(cell, column):
                    raise BenchmarkError(f"entry {origin}: task {task['key']}: {column} is {task['result'][column]!r}, "
                                         f"but {of} gives cell {cell.name} {getattr(cell, column)!r}")
        missing = sorted((expected - held).elements(), key=str)
        if missing:
            raise BenchmarkError(f"entry {origin}: tasks: {len(missing)} of the {sum(expected.values())} tasks of "
                                 f"{of} are missing (the first: {_describe(missing[0])}); an entry holds every task "
                                 "of its suite")
        return
    seeds = sorted({task["seed"] for task in tasks})
    cells = sorted({identity[:1] + identity[2:] for identity in held}, key=str)
    for cell in cells:
        for seed in seeds:
            identity = (cell[0], seed, *cell[1:])
            if identity not in held:
                raise BenchmarkError(
                    f"entry {origin}: tasks: ({_describe(identity)}) is missing, though other cells have seed {seed}; "
                    f"an entry holds every task of its suite (suite {entry['suite']['name']} version "
                    f"{entry['suite']['version']} was not found to check against)")


def _stored_row(store: ResultStore, key: str) -> dict:
    """The task's stored row as written (NaN as null, infinities as "inf")."""
    return json.loads((store.tasks / f"{key}.json").read_text())


def _without_wall_clock(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS}


def _stored_result(store: ResultStore, key: str) -> dict:
    """The task's stored row without wall-clock columns: what an entry keeps."""
    return _without_wall_clock(_stored_row(store, key))


def _json_number(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def _run(tasks: list[Task], results_root: str | Path, executor: Executor, progress: bool) -> pd.DataFrame:
    # Worker processes run with one BLAS thread; tasks run in this process must too, or
    # multi-threaded reductions change the last bits of some scores.
    with threadpool_limits(limits=1):
        return run_suite(tasks, results_root, executor, progress=progress, write_table=False)  # the suite's table stays the suite's


def _summary(summary_table: pd.DataFrame) -> dict:
    """An entry's `summary` from the one-row summarize() table of its tasks."""
    summary = summary_table.iloc[0]
    return {
        "tasks": int(summary["tasks"]),
        "failed": int(summary["failed"]),
        "scores": {
            score: {"mean": _json_number(summary[score]), "low": _json_number(summary[f"{score}_low"]),
                    "high": _json_number(summary[f"{score}_high"])}
            for score in AGGREGATED_SCORES
        },
    }


def entry_summary(entry: dict) -> dict:
    """The `summary` an entry's own task rows give."""
    return _summary(summarize(results_frame([entry])))


def _summary_differences(entry: dict, held: set[str]) -> list[str]:
    """Every figure of the entry's `summary` that its own task rows do not give (an edited summary); `held`: the
    columns its tasks hold."""
    derived = entry_summary(entry)

    def same(a: object, b: object) -> bool:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        return a == b

    lines = [f"summary: {key}: entry {entry['summary'][key]!r}, its tasks give {derived[key]!r}"
             for key in ("tasks", "failed") if entry["summary"][key] != derived[key]]
    for score, figures in entry["summary"]["scores"].items():  # what the entry adds: an invented score or figure
        if score not in derived["scores"]:
            if score not in held:  # a score of earlier code is one its tasks hold (standard v2's epsilon_prv)
                lines.append(f"summary: {score}: entry {figures!r}, its tasks give no such score")
            continue
        legacy = "ci95" in figures  # an entry from before bootstrap intervals: mean and ci95
        extra = [f for f in figures if f not in derived["scores"][score] and not (legacy and f == "ci95")]
        lines += [f"summary: {score} {f}: entry {figures[f]!r}, its tasks give no such figure" for f in extra]
    for score, figures in derived["scores"].items():
        if score not in entry["summary"]["scores"] and score in OPTIONAL_SCORES and score not in held:
            continue  # a score newer than the entry (no task of it holds the column): nothing to check
        stored_figures = entry["summary"]["scores"].get(score, {})
        for figure, value in figures.items():
            if figure != "mean" and "ci95" in stored_figures:
                continue  # an entry from before bootstrap intervals: its t-interval is not re-derived
            stored = stored_figures.get(figure, "<missing>")
            if not same(stored, value):
                lines.append(f"summary: {score} {figure}: entry {stored!r}, its tasks give {value!r}")
    return lines


def _relative_to(defense: str, folder: Path) -> str:
    """A plugin's path as seen from the entries folder (portable with it); another name unchanged."""
    path = plugin_path(defense)
    if path is None:
        return defense
    return f"{os.path.relpath(path.resolve(), folder.resolve())}:{defense.rpartition(':')[2]}"


def _suite_relative_to(source: str, folder: Path) -> str:
    """A suite file's path as seen from the entries folder; a built-in suite's name unchanged."""
    return os.path.relpath(Path(source).resolve(), folder.resolve()) if source.endswith(".toml") else source


def _resolved_from(defense: str, folder: Path) -> str:
    """An entry's plugin path, stored relative to the entry's folder, as a path from here."""
    path = plugin_path(defense)
    if path is None or path.is_absolute():
        return defense
    return f"{folder / path}:{defense.rpartition(':')[2]}"


@dataclass(frozen=True)
class Submission:
    path: Path
    entry: dict
    table: pd.DataFrame
    summary: pd.DataFrame


def _suite_spec(suite: Suite, defense: str, parameters: dict) -> DefenseSpec:
    """The suite's own entry for this defense when its parameters, defaults filled in, are these: then its
    tasks are the very tasks `disaggbench run --suite` stores, and one run serves both. Else a new spec."""
    for spec in suite.defenses:
        # a plugin by its file's name and class, as keys name it: the suite spells its path from where it ran, the
        # entry from its own folder (a suite that listed its plugin had verified none of its tasks)
        if portable_name(spec.name) == portable_name(defense) and full_parameters(defense, dict(spec.parameters)) == parameters:
            return plugin_labels((replace(spec, name=defense),))[0]
    return plugin_labels((DefenseSpec(defense, tuple(sorted(parameters.items())), ""),))[0]


def submit(
    defense: str,
    given_parameters: dict,
    suite_source: str,
    name: str,
    results_root: str | Path,
    entries: str | Path = DEFAULT_ENTRIES,
    executor: Executor = Executor(),
    overwrite: bool = False,
    progress: bool = True,
) -> Submission:
    """Run every task of the suite for the defense (stored tasks are reused) and write `entries/NAME.json`."""
    path = Path(entries) / f"{check_name(name)}.json"
    if path.exists() and not overwrite:
        raise BenchmarkError(f"entry {path} exists; choose another --name or pass --overwrite")
    check_output_file(path, "entry", replaces_stored=True)
    suite = load_suite(suite_source)
    owned = look_up(Path(results_root), "--results") / suite.name  # the store's files: an entry there passed for a task
    folder = look_up(Path(entries), "--entries")
    if folder == owned or owned in folder.parents:
        raise BenchmarkError(f"--entries {entries} lies inside the results of suite {suite.name!r} ({owned}); give a "
                             "folder outside it")
    parameters = full_parameters(defense, given_parameters)
    spec = _suite_spec(suite, defense, parameters)
    label = spec.label
    tasks = expand(suite, (spec,))
    table = _run(tasks, results_root, executor, progress)
    store = ResultStore(results_root, suite.name)
    rows = []
    for task in tasks:
        result = _stored_result(store, task.key())
        rows.append({"key": task.key(), "seed": task.scenario.seed, "scenario": task.scenario.name,
                     "sha256": result_hash(result), "result": result})
    summary_table = summarize(table)
    entry = {
        "format": ENTRY_FORMAT,
        "name": name,
        "created": datetime.now(timezone.utc).strftime(CREATED_FORMAT),
        "defense": {"name": _relative_to(defense, path.parent), "parameters": parameters, "label": label},
        "suite": {"name": suite.name, "version": suite.version, "source": _suite_relative_to(suite_source, path.parent)},
        "packages": package_versions(),
        "summary": _summary(summary_table),
        "tasks": rows,
    }
    validate_entry(entry, str(path))
    check_entry(entry, str(path), suite)  # what verify and --readme will check: never an entry they refuse
    write_atomically(path, json.dumps(entry, indent=2, ensure_ascii=False, allow_nan=False).encode() + b"\n")
    return Submission(path, entry, table, summary_table)


def _entry_tasks(entry: dict, suite_source: str | None, folder: Path) -> dict[str, Task]:
    """The entry's tasks rebuilt from its suite and defense, by the entry's key; BenchmarkError when they cannot match,
    or when the entry's tasks are not exactly the suite's (check_entry against this suite).

    Keys are recomputed with the source digest the entry recorded, so an entry made by other source
    still finds its tasks (they re-run with this source; a difference is then explained by a note).
    An entry from before source digests is matched by (scenario, seed). A plugin's path is read
    relative to the entry's folder.
    """
    if entry["packages"]["disaggbench"] != __version__:
        raise BenchmarkError(
            f"entry {entry['name']} was made with disaggbench {entry['packages']['disaggbench']}, this is "
            f"{__version__}; its tasks can only be re-run by that version"
        )
    recorded = entry["suite"]["source"]
    if recorded.endswith(".toml") and not Path(recorded).is_absolute() and (folder / recorded).is_file():
        recorded = str(folder / recorded)  # else, as an entry before relative paths, from here
    suite: Suite = load_suite(suite_source or recorded)
    if (suite.name, suite.version) != (entry["suite"]["name"], entry["suite"]["version"]):
        raise BenchmarkError(
            f"entry {entry['name']} ran suite {entry['suite']['name']} version {entry['suite']['version']}, "
            f"but {suite_source or entry['suite']['source']} is {suite.name} version {suite.version}"
        )
    check_entry(entry, str(folder / f"{entry['name']}.json"), suite)  # every task of this suite, no other
    defense = entry["defense"]
    name = _resolved_from(defense["name"], folder)
    spec = _suite_spec(suite, name, defense["parameters"])
    spec = DefenseSpec(spec.name, spec.parameters, defense["label"])
    source = entry["packages"].get(SOURCE_KEY)
    if source is None:
        by_place = {(task.scenario.name, task.scenario.seed): task for task in expand(suite, (spec,))}
        tasks = {t["key"]: by_place[(t["scenario"], t["seed"])] for t in entry["tasks"] if (t["scenario"], t["seed"]) in by_place}
    else:
        tasks = {task.key(source=source): task for task in expand(suite, (spec,))}
    unknown = [task["key"] for task in entry["tasks"] if task["key"] not in tasks]
    if unknown:
        raise BenchmarkError(f"entry {entry['name']}: task {unknown[0]} is not a task of its suite and defense here")
    return tasks


@dataclass(frozen=True)
class Verification:
    seed: int
    checked: int
    total: int
    differences: list[str]
    package_notes: list[str]
    clock_notes: list[str]  # re-run tasks whose attack a clock safety net stopped: their scores may be the machine's
    processor_notes: list[str]  # values within processor_tolerance (not counted as differences)
    new_columns: tuple[str, ...] = ()  # optional scores newer code writes that no task of the entry holds: not compared


@dataclass(frozen=True)
class Tolerance:
    """How far a re-run value may lie from the entry's when the difference is the processor's rounding, not the code."""

    absolute: float = 0.0
    relative: float = 0.0
    why: str = ""

    def admits(self, old: float, new: float) -> bool:
        return abs(old - new) <= max(self.absolute, self.relative * max(abs(old), abs(new)))

    def __str__(self) -> str:
        bound = f"{self.absolute}" if self.absolute else f"a relative {self.relative:g}"
        return f"within {bound}: {self.why}"


# Utility columns come from torch training, whose CPU kernels round differently on different processors: the same
# code and seeds gave test_accuracy_undefended 0.8563, 0.8531, 0.8544, 0.8510, 0.8621 on one AMD EPYC and 0.8561,
# 0.8534, 0.8549, 0.8514, 0.8627 on another (at most 0.0006 apart; bit-identical on one machine).
_KERNELS = Tolerance(absolute=0.005, why="torch's CPU kernels round differently across processors")
UTILITY_TOLERANCE = {"test_accuracy": _KERNELS, "test_accuracy_undefended": _KERNELS, "utility_drop": _KERNELS}
# Every other number may differ in its last bits: numpy runs float64 exp and log on AVX-512 where the processor has
# it (numpy.lib.introspect.opt_func_info: X86_V4), and OpenBLAS picks its kernels by processor. On an AMD EPYC
# without AVX-512, dp-fedavg(z=1, cohort=1000)'s epsilon_amplified came out 87.2738873673989 against its entry's
# 87.27388736385511, and `none`'s update_cosine 0.9999999999999994 against 0.9999999999999996. A relative 1e-9
# admits such rounding only: a share of users, a count or a rank that changed moves by far more.
ROUNDING = Tolerance(relative=1e-9, why="floating-point rounding differs across processors")


def processor_tolerance(column: str) -> Tolerance:
    """How far `column`'s value may move from one processor to another with the same code and inputs."""
    return UTILITY_TOLERANCE.get(column, ROUNDING)


def _clock_note(task: dict) -> str:
    """For a re-run stopped by a clock safety net (clock_limited): work limits did not decide all of its scores, so
    a difference there can come from the machine's speed or load rather than the code."""
    return (f"task {task['key']} ({task['scenario']}, seed {task['seed']}): its re-run was clock-limited (the joint "
            "stage's budget or a solve's time_limit stopped attack work), so its unique_rate and other attack scores "
            "may differ with the machine's speed or load")


def _differences(task: dict, rerun: dict, new_columns: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(scores that differ, values within processor_tolerance) between an entry's task and its re-run;
    `new_columns` are left out."""
    where = f"task {task['key']} ({task['scenario']}, seed {task['seed']})"
    stored = task["result"]
    lines, notes = [], []
    for column in sorted((set(stored) | set(rerun)) - set(new_columns)):
        old, new = stored.get(column, "<missing>"), rerun.get(column, "<missing>")
        if old == new:
            continue
        line = f"{where}: {column}: entry {old!r}, re-run {new!r}"
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
        tolerance = processor_tolerance(column)
        if numbers and tolerance.admits(old, new):
            notes.append(f"{line} ({tolerance})")
        else:
            lines.append(line)
    return lines, notes


def verify(
    path: str | Path,
    sample: int = 3,
    seed: int | None = None,
    suite_source: str | None = None,
    executor: Executor = Executor(),
    progress: bool = True,
) -> Verification:
    """Re-run `sample` randomly chosen tasks of the entry from scratch and list every score that differs."""
    if sample < 1:
        raise BenchmarkError("--sample must be at least 1")
    entry = load_entry(path)
    tasks = _entry_tasks(entry, suite_source, Path(path).parent)
    held = set().union(*(task["result"] for task in entry["tasks"]))
    summary_differences = _summary_differences(entry, held)
    seed = secrets.randbelow(2**32) if seed is None else seed
    picked = random.Random(seed).sample(range(len(entry["tasks"])), min(sample, len(entry["tasks"])))
    chosen = [entry["tasks"][i] for i in sorted(picked)]
    with tempfile.TemporaryDirectory(prefix="disaggbench-verify-") as scratch:
        _run([tasks[task["key"]] for task in chosen], scratch, executor, progress)
        store = ResultStore(scratch, entry["suite"]["name"])
        reruns = [_stored_row(store, tasks[task["key"]].key()) for task in chosen]
    new_columns = tuple(sorted((set().union(*reruns) - held) & set(OPTIONAL_SCORES)))
    compared = [_differences(task, _without_wall_clock(rerun), new_columns) for task, rerun in zip(chosen, reruns)]
    differences = summary_differences + [line for lines, _ in compared for line in lines]
    processor_notes = [note for _, notes in compared for note in notes]
    clock_notes = [_clock_note(task) for task, rerun in zip(chosen, reruns) if rerun.get("clock_limited")]
    here = package_versions()
    notes = [f"{package} {version} in the entry, {here.get(package, 'not installed')} here"
             for package, version in sorted(entry["packages"].items()) if here.get(package) != version]
    return Verification(seed, len(chosen), len(entry["tasks"]), differences, notes, clock_notes, processor_notes,
                        new_columns)


def load_entries(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchmarkError(f"entries folder {folder} " + ("is a file, not a folder" if folder.exists() else "does not exist"))
    entries = [load_entry(path) for path in sorted(folder.glob("*.json"))]
    if not entries:
        raise BenchmarkError(f"no entries in {folder}; add one with `disaggbench submit`")
    return entries


def results_frame(entries: list[dict]) -> pd.DataFrame:
    """Every task row of the entries, the defense column replaced by the entry name, numbers as floats.

    Scores missing from a row (a failed task's, or the wall-clock ones entries never hold) are NaN.
    """
    missing = dict.fromkeys(SCORE_COLUMNS, math.nan)
    rows = [{**missing, **{k: _cell_value(v) for k, v in task["result"].items()}, "defense": entry["name"]}
            for entry in entries for task in entry["tasks"]]
    return pd.DataFrame(rows)


def _markdown_cell(text: str) -> str:
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|")


@cache
def _current_version(suite_name: str) -> str | None:
    """The built-in suite's version now (read once a process); None for a suite that is not built in."""
    return load_suite(suite_name).version if suite_name in builtin_suites() else None


def _stale_warning(suite_name: str, version: str, folder: Path) -> list[str]:
    """A paragraph when a built-in suite has moved on since these entries were made: their verdicts are not current.
    Where `folder` (the leaderboard's) keeps that version's suite file in suites/, it says how to verify them."""
    current = _current_version(suite_name)
    if current is None or current == version:
        return []
    kept = Path("suites") / f"{suite_name}-v{version}.toml"
    verify = (f" `disaggbench verify entries/NAME.json --suite {kept.as_posix()}` still re-runs their tasks."
              if (folder / kept).is_file() else "")
    return ["", f"**Stale:** the built-in `{suite_name}` suite is now version {current}; these entries were made with "
                f"version {version} and the attacks and utility measure of that time, so their verdicts are not current. "
                "Re-run them with `disaggbench submit ... --overwrite` before comparing." + verify]


def _newest_first(version: str) -> tuple:
    """Sort key: numeric versions from the highest down, then any others by name."""
    try:
        return (0, -float(version), "")
    except ValueError:
        return (1, 0.0, version)


def render_readme(folder: str | Path = DEFAULT_ENTRIES) -> str:
    """leaderboard/README.md: one ranked table per suite version, the entries' details, and missing built-ins."""
    entries = load_entries(folder)
    # standard first, and within a suite its current version first: stale tables follow, the newest first
    suites = sorted({(e["suite"]["name"], e["suite"]["version"]) for e in entries},
                    key=lambda s: (s[0] != STANDARD_SUITE, s[0], s[1] != _current_version(s[0]), _newest_first(s[1])))
    lines = [
        "# DisaggBench leaderboard",
        "",
        "<!-- Generated from the entry files by `disaggbench leaderboard --readme`; do not edit by hand. -->",
        "",
        "Each row is one entry in `entries/`: a defense with fixed parameters run on every task of a suite.",
        "Add one with `disaggbench submit DEFENSE --suite standard --name NAME [--param KEY=VALUE ...]`;",
        "check one with `disaggbench verify entries/NAME.json`, which re-runs a random sample of its tasks",
        "and names every score that differs. Wall-clock columns are left out: they measure the machine.",
        "Every score of every cell, with its interval: `disaggbench leaderboard --format csv` on the suite's results.",
    ]
    for suite_name, version in suites:
        members = [e for e in entries if (e["suite"]["name"], e["suite"]["version"]) == (suite_name, version)]
        summary = summarize(results_frame(members))
        columns = default_columns(summary, README_COLUMNS)
        table = render(summary, "markdown", columns=columns)
        table += "\n" + "\n".join(f"- `{c}`: {COLUMN_NOTES[c]}" for c in columns) + "\n"
        lines += ["", f"## Suite `{suite_name}` (version {version})", *_stale_warning(suite_name, version, Path(folder).parent),
                  "", table.rstrip("\n"), "",
                  "| entry | defense | parameters | disaggbench | created |", "| :--- | :--- | :--- | :--- | :--- |"]
        for e in members:
            given = sorted(e["defense"]["parameters"].items())
            parameters = ", ".join(f"{k}={json.dumps(v)}" for k, v in given) or MISSING_PARAMETERS
            lines.append("| " + " | ".join(_markdown_cell(text) for text in (
                e["name"], e["defense"]["name"], parameters, e["packages"]["disaggbench"], e["created"])) + " |")
    on_standard = {e["defense"]["name"] for e in entries if e["suite"]["name"] == STANDARD_SUITE}
    missing = sorted(set(BUILTIN_DEFENSES) - on_standard)
    if missing:
        lines += ["", f"Built-in defenses without an entry on the `{STANDARD_SUITE}` suite: "
                  + ", ".join(f"`{name}`" for name in missing) + "."]
    return "\n".join(lines) + "\n"

