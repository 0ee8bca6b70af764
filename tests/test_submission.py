"""Leaderboard entries: submit writes a schema-valid entry, verify re-runs it, the README is built from entries."""

import json
import re
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.suite import expand, load_suite
from defenses.builtin import BUILTIN_DEFENSES
from leaderboard.submission import (
    AGGREGATED_SCORES,
    WALL_CLOCK_COLUMNS,
    _entry_tasks,
    canonical_json,
    entry_summary,
    full_parameters,
    parse_parameters,
    result_hash,
)
from tests.conftest import TINY_CELL

SCHEMA = Path(__file__).resolve().parents[1] / "leaderboard" / "entry.schema.json"

# Named "standard" so the README's standard-suite section is exercised. The integer program's time
# limit is generous: one cut off by the clock would make scores depend on machine load.
SUITE = """
name = "standard"
version = "3"
description = "one small cell, two seeds"
seeds = [0, 1]

[utility]
name = "digits-tiny"
dataset = "digits"
n_clients = 20
cohort = 8
n_rounds = 30
samples_per_client = 40
batch_size = 10
learning_rate = 0.3

[attack]
time_limit = 10

[[defenses]]
name = "none"

[[defenses]]
name = "dp-gaussian"
label = "dp(z=2)"
noise_multiplier = 2
clip_norm = 1.0
""" + TINY_CELL


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def submitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Entries `none` and `dp` (dp-gaussian, noise_multiplier 2) of the tiny suite, made once for the module."""
    root = tmp_path_factory.mktemp("submitted")
    (root / "standard.toml").write_text(SUITE)
    for defense, name, extra in (("none", "none", []), ("dp-gaussian", "dp", ["--param", "noise_multiplier=2"])):
        code = main(["submit", defense, "--name", name, "--suite", str(root / "standard.toml"), "--results",
                     str(root / "results"), "--entries", str(root / "entries"), "--quiet", *extra])
        assert code == 0
    return root


@pytest.fixture
def entries(submitted: Path, tmp_path: Path) -> Path:
    """A private copy of the entries and, beside them, their suite file (entries name it relative to themselves)."""
    shutil.copy(submitted / "standard.toml", tmp_path / "standard.toml")
    return Path(shutil.copytree(submitted / "entries", tmp_path / "entries"))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def write(path: Path, entry: dict) -> None:
    path.write_text(json.dumps(entry, indent=2))


def test_submit_writes_a_schema_valid_entry_with_a_hash_of_every_stored_task(submitted: Path) -> None:
    entry = read(submitted / "entries" / "dp.json")
    jsonschema.validate(entry, json.loads(SCHEMA.read_text()))
    assert entry["name"] == "dp"
    assert entry["defense"] == {"name": "dp-gaussian", "parameters": {"noise_multiplier": 2, "clip_norm": 1.0}, "label": "dp(z=2)"}
    # Paths are stored relative to the entry's folder, so an entries folder can move and still be verified.
    assert entry["suite"] == {"name": "standard", "version": "3", "source": "../standard.toml"}
    assert entry["packages"]["disaggbench"] == "0.2.0" and "numpy" in entry["packages"]
    assert [(t["scenario"], t["seed"]) for t in entry["tasks"]] == [("tiny-fedsgd", 0), ("tiny-fedsgd", 1)]
    # The suite lists this defense with these parameters: the entry's tasks are the suite's own.
    suite_tasks = [t.key() for t in expand(load_suite(str(submitted / "standard.toml"))) if t.defense.label == "dp(z=2)"]
    assert [t["key"] for t in entry["tasks"]] == suite_tasks
    assert {t["result"]["defense"] for t in entry["tasks"]} == {"dp(z=2)"}
    for task in entry["tasks"]:
        stored = read(submitted / "results" / "standard" / "tasks" / f"{task['key']}.json")
        assert set(WALL_CLOCK_COLUMNS) <= set(stored)
        assert task["result"] == {k: v for k, v in stored.items() if k not in WALL_CLOCK_COLUMNS}
        assert task["sha256"] == result_hash(task["result"])
        assert task["result"]["status"] == "ok"
    # An entry's run stores its tasks but leaves the suite's table alone (it had replaced it with the entry's rows).
    assert not (submitted / "results" / "standard" / "results.parquet").exists()
    scores = entry["summary"]["scores"]
    assert list(scores) == list(AGGREGATED_SCORES)
    assert scores["entry_accuracy"]["mean"] == pytest.approx(np.mean([t["result"]["entry_accuracy"] for t in entry["tasks"]]))
    assert scores["epsilon"]["mean"] > 0 and scores["epsilon"]["low"] == scores["epsilon"]["high"] == scores["epsilon"]["mean"]
    assert entry["summary"]["tasks"] == 2 and entry["summary"]["failed"] == 0
    none = read(submitted / "entries" / "none.json")
    assert none["defense"] == {"name": "none", "parameters": {}, "label": ""}
    assert none["summary"]["scores"]["epsilon"] == {"mean": None, "low": None, "high": None}


def test_submit_and_verify_have_help(capsys) -> None:
    for command in ("submit", "verify"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and f"usage: disaggbench {command}" in capsys.readouterr().out


def test_canonical_json_is_independent_of_key_order() -> None:
    assert canonical_json({"b": 1, "a": [1.5, None]}) == b'{"a":[1.5,null],"b":1}'
    assert result_hash({"a": 1, "b": "x"}) == result_hash({"b": "x", "a": 1})
    assert result_hash({"a": 1.0}) != result_hash({"a": 1.0000000000000002})


def test_verify_re_runs_the_sample_and_finds_every_score_equal(entries: Path, capsys) -> None:
    code, out, err = cli(["verify", entries / "dp.json", "--sample", "5", "--seed", "3", "--quiet"], capsys)
    assert code == 0, err
    assert f"verified 2 of 2 tasks of {entries / 'dp.json'} (--seed 3): every score matches" in out


def test_verify_names_each_score_that_differs(entries: Path, capsys) -> None:
    path = entries / "none.json"
    entry = read(path)
    task = entry["tasks"][1]
    true_accuracy = task["result"]["entry_accuracy"]
    task["result"]["entry_accuracy"] = 0.5
    task["result"]["status"] = "failed: edited"
    task["sha256"] = result_hash(task["result"])
    write(path, entry)
    code, out, err = cli(["verify", path, "--sample", "2", "--seed", "0", "--quiet"], capsys)
    assert code == 1
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("task ")] == [
        f"task {task['key']} (tiny-fedsgd, seed 1): entry_accuracy: entry 0.5, re-run {true_accuracy!r}",
        f"task {task['key']} (tiny-fedsgd, seed 1): status: entry 'failed: edited', re-run 'ok'",
    ]
    # The summary, left as it was, no longer follows from the edited tasks: each figure is named.
    assert "summary: tasks: entry 2, its tasks give 1" in lines and "summary: failed: entry 0, its tasks give 1" in lines
    assert f"error: {len(lines)} score(s) differ in 2 of 2 tasks" in err


@pytest.mark.parametrize("name, column, shift, matches", [
    ("none", "test_accuracy", lambda v: v + 0.001, True),
    ("none", "test_accuracy", lambda v: v + 0.02, False),
    ("dp", "epsilon_amplified", lambda v: v * (1 + 4e-11), True),  # as far as two processors' accountants were
    ("dp", "epsilon_amplified", lambda v: v * (1 + 1e-6), False),
    ("none", "update_cosine", lambda v: v * (1 - 2e-16), True),  # none's entry against a re-run without AVX-512
    ("none", "attack_success", lambda v: v - 0.01, False),
])
def test_verify_notes_values_within_another_processors_rounding_and_fails_beyond_it(entries: Path, capsys, name, column,
                                                                                     shift, matches) -> None:
    """Torch's CPU kernels and numpy's exp/log round differently across processors: a utility value or an epsilon a
    little off is a note, not a failure; farther off it is a difference."""
    path = entries / f"{name}.json"
    entry = read(path)
    task = entry["tasks"][1]
    stored = task["result"][column]
    task["result"][column] = shift(stored)
    task["sha256"] = result_hash(task["result"])
    entry["summary"] = entry_summary(entry)
    write(path, entry)
    code, out, err = cli(["verify", path, "--sample", "2", "--seed", "0", "--quiet"], capsys)
    line = f"task {task['key']} (tiny-fedsgd, seed 1): {column}: entry {shift(stored)!r}, re-run {stored!r}"
    if matches:
        assert code == 0 and "every score matches (1 value(s) within the rounding of another processor)" in out
        assert f"note: {line} (within " in err
    else:
        assert code == 1 and out.splitlines() == [line]


@pytest.mark.parametrize("dropped_from", ["every task", "one task"])
def test_verify_leaves_out_only_a_newer_column_no_task_of_the_entry_holds(entries: Path, capsys, dropped_from) -> None:
    """An entry made before a scoring column existed still verifies; a column one of its tasks lost is a difference."""
    path = entries / "dp.json"
    entry = read(path)
    true_value = entry["tasks"][0]["result"]["epsilon_utility"]
    for task in entry["tasks"] if dropped_from == "every task" else entry["tasks"][:1]:
        del task["result"]["epsilon_utility"]
        task["sha256"] = result_hash(task["result"])
    entry["summary"] = entry_summary(entry)
    if dropped_from == "every task":  # as written before the column existed: its summary has no such score either
        del entry["summary"]["scores"]["epsilon_utility"]
    write(path, entry)
    code, out, err = cli(["verify", path, "--sample", "2", "--seed", "0", "--quiet"], capsys)
    if dropped_from == "every task":
        assert code == 0 and "every score matches" in out
        assert "note: epsilon_utility: written by newer scoring code, in no task of the entry: not compared" in err
    else:
        assert code == 1 and [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("task ")] == [
            f"epsilon_utility: entry '<missing>', re-run {true_value!r}"]


def test_verify_checks_the_summary_against_the_tasks(entries: Path, capsys) -> None:
    path = entries / "dp.json"
    entry = read(path)
    true_mean = entry["summary"]["scores"]["attack_success"]["mean"]
    entry["summary"]["scores"]["attack_success"]["mean"] = true_mean + 0.25
    write(path, entry)
    code, out, err = cli(["verify", path, "--sample", "1", "--seed", "0", "--quiet"], capsys)
    assert code == 1 and out.splitlines() == [f"summary: attack_success mean: entry {true_mean + 0.25!r}, its tasks give {true_mean!r}"]


def test_an_entry_is_verified_from_another_folder_with_its_plugin(submitted: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "standard.toml").write_text(SUITE)
    (tmp_path / "work" / "mine.py").write_text(
        "from defenses.base import Defense\n\nclass Mine(Defense):\n    name = 'mine'\n"
    )
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = cli(["submit", "mine.py:Mine", "--name", "mine", "--suite", "standard.toml", "--entries", "entries",
                        "--results", "r", "--quiet"], capsys)
    assert code == 0, err
    entry = read(tmp_path / "work" / "entries" / "mine.json")
    assert entry["defense"]["name"] == "../mine.py:Mine" and entry["defense"]["label"] == "mine"
    assert {task["result"]["defense"] for task in entry["tasks"]} == {"mine"}
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["verify", "work/entries/mine.json", "--sample", "1", "--seed", "0", "--quiet"], capsys)
    assert code == 0, err + out


def test_an_entry_of_a_plugin_its_suite_lists_is_verified(tmp_path: Path, capsys, monkeypatch) -> None:
    """The suite spells the plugin's path from where it runs, the entry from its own folder: verify matched neither
    and found none of the entry's tasks ("not a task of its suite and defense here")."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mine.py").write_text(
        "from defenses.base import Defense\n\nclass Mine(Defense):\n    name = 'mine'\n"
    )
    (tmp_path / "work" / "listed.toml").write_text(
        SUITE.replace('[[defenses]]\nname = "none"', '[[defenses]]\nname = "mine.py:Mine"\nlabel = "Mine 50%"', 1))
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = cli(["submit", "mine.py:Mine", "--name", "mine", "--suite", "listed.toml", "--entries", "entries",
                        "--results", "r", "--quiet"], capsys)
    assert code == 0, err
    assert read(tmp_path / "work" / "entries" / "mine.json")["defense"]["label"] == "Mine 50%"
    for folder in (tmp_path / "work", tmp_path):
        monkeypatch.chdir(folder)
        code, out, err = cli(["verify", tmp_path / "work" / "entries" / "mine.json", "--sample", "1", "--seed", "0",
                              "--quiet"], capsys)
        assert code == 0 and "every score matches" in out, err + out


def test_the_seed_picks_the_sample(entries: Path, capsys) -> None:
    path = entries / "none.json"
    entry = read(path)
    for task in entry["tasks"]:
        task["result"]["update_cosine"] = -1.0
        task["sha256"] = result_hash(task["result"])
    write(path, entry)
    seeds = {}
    for seed in range(6):
        code, out, _ = cli(["verify", path, "--sample", "1", "--seed", seed, "--quiet"], capsys)
        task_lines = [line for line in out.splitlines() if line.startswith("task ")]
        assert code == 1 and len(task_lines) == 1
        seeds[seed] = task_lines[0].split()[1]
    assert len(set(seeds.values())) == 2  # both tasks get picked by some seed
    out = cli(["verify", path, "--sample", "1", "--seed", 4, "--quiet"], capsys)[1]
    assert [line for line in out.splitlines() if line.startswith("task ")][0].split()[1] == seeds[4]


def _edit(field: str, value: object):
    def edit(entry: dict) -> dict:
        entry[field] = value
        return entry
    return edit


def _retamper(entry: dict) -> dict:
    entry["tasks"][0]["result"]["psnr_recovered"] = 1.0
    return entry


@pytest.mark.parametrize("edit, message", [
    (_edit("format", 2), "invalid at format"),
    (_edit("name", "../escape"), "invalid at name"),
    (_edit("name", "other"), "the file must be other.json"),
    (lambda e: {k: v for k, v in e.items() if k != "tasks"}, "'tasks' is a required property"),
    (_edit("tasks", []), "invalid at tasks"),
    (_retamper, "sha256 does not match its result"),
    (lambda e: {**e, "packages": {**e["packages"], "disaggbench": "0.0.1"}}, "made with disaggbench 0.0.1"),
    (lambda e: {**e, "suite": {**e["suite"], "version": "8"}}, "ran suite standard version 8"),
    (lambda e: {**e, "defense": {**e["defense"], "parameters": {"noise_multiplier": 3, "clip_norm": 1.0}}},
     "is not a task of its suite and defense here"),
])
def test_a_bad_entry_exits_2_with_one_line(entries: Path, capsys, edit, message) -> None:
    path = entries / "dp.json"
    write(path, edit(read(path)))
    code, out, err = cli(["verify", path, "--quiet"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


@pytest.mark.parametrize("content", ["{not json", "\xff\xfe", "[]"])
def test_an_unreadable_entry_exits_2(tmp_path: Path, capsys, content: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content.encode("latin-1"))
    code, _, err = cli(["verify", path], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: entry")
    code, _, err = cli(["verify", tmp_path / "missing.json"], capsys)
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("args, message", [
    (["none", "--name", "bad name"], "entry name 'bad name' must be"),
    (["none", "--name", "../up"], "entry name '../up' must be"),
    (["none", "--name", "none"], "exists; choose another --name or pass --overwrite"),
    (["dp-gaussian", "--name", "x", "--param", "noise=2"], "does not take parameters"),
    (["dp-gaussian", "--name", "x", "--param", "noise_multiplier=-1"], "needs noise_multiplier >= 0"),
    (["dp-gaussian", "--name", "x", "--param", "clip_norm"], "must look like NAME=VALUE"),
    (["no-such-defense", "--name", "x"], "unknown defense"),
    (["none", "--name", "x", "--suite", "no-such-suite"], "unknown suite"),
    (["none", "--name", "x", "--workers", "0"], "--workers must be between 1 and"),
])
def test_bad_submissions_exit_2_and_write_nothing(submitted: Path, entries: Path, tmp_path: Path, capsys, args, message) -> None:
    before = sorted(p.name for p in entries.iterdir())
    suite = ["--suite", submitted / "standard.toml"] if "--suite" not in args else []
    code, out, err = cli(["submit", *args, *suite, "--entries", entries, "--results", tmp_path / "r", "--quiet"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert sorted(p.name for p in entries.iterdir()) == before and not (tmp_path / "r").exists()


def test_parameters_are_parsed_as_toml_values_and_completed_with_defaults() -> None:
    assert parse_parameters(["a=1", "b=0.5", "c=true", "d=[1, 2]", 'e="x y"', "f=plain"]) == {
        "a": 1, "b": 0.5, "c": True, "d": [1, 2], "e": "x y", "f": "plain"}
    with pytest.raises(BenchmarkError, match="given twice"):
        parse_parameters(["a=1", "a=2"])
    for big in ("x=99999999999999999999999", "x=[1, 99999999999999999999999]"):  # the entry could not be read back
        with pytest.raises(BenchmarkError, match="beyond 64 bits"):
            parse_parameters([big])
    assert full_parameters("dp-gaussian", {"clip_norm": 2}) == {"noise_multiplier": 1.0, "clip_norm": 2}
    assert full_parameters("none", {}) == {}
    with pytest.raises(BenchmarkError, match="finite JSON values"):
        full_parameters("dp-gaussian", {"clip_norm": float("inf")})


def test_readme_ranks_the_entries_and_names_missing_builtins(entries: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "README.md"
    code, printed, err = cli(["leaderboard", "--readme", "--entries", entries, "--out", out], capsys)
    assert code == 0, err
    assert printed == f"wrote {out}\n"
    text = out.read_text()
    assert "## Suite `standard` (version 3)" in text
    table = [line for line in text.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    # dp: lower attack success, but its accuracy cost puts it in a lower utility tier than none.
    assert table[0].startswith("| 1 | <=1 | none | 1.00 ")
    assert re.match(r"\| 2 \| (<=3|<=5|>5) \| dp \| 0 ", table[1])
    assert '| dp | dp-gaussian | clip_norm=1.0, noise_multiplier=2 | 0.2.0 |' in text
    assert "| none | none | (none) | 0.2.0 |" in text
    others = sorted(set(BUILTIN_DEFENSES) - {"none", "dp-gaussian"})
    assert "without an entry on the `standard` suite: " + ", ".join(f"`{name}`" for name in others) + "." in text
    cli(["leaderboard", "--readme", "--entries", entries, "--out", tmp_path / "again.md"], capsys)
    assert (tmp_path / "again.md").read_text() == text


def test_readme_refuses_a_bad_entry_folder(entries: Path, tmp_path: Path, capsys) -> None:
    (entries / "broken.json").write_text("{}")
    code, _, err = cli(["leaderboard", "--readme", "--entries", entries, "--out", tmp_path / "R.md"], capsys)
    assert code == 2 and "broken.json is invalid" in err and not (tmp_path / "R.md").exists()
    code, _, err = cli(["leaderboard", "--readme", "--entries", tmp_path / "empty", "--out", tmp_path / "R.md"], capsys)
    assert code == 2 and "does not exist" in err


def test_a_defense_whose_tasks_fail_gets_an_entry_that_counts_them_and_exit_1(submitted: Path, tmp_path: Path, capsys) -> None:
    defense = tmp_path / "broken.py"
    defense.write_text(
        "from defenses.base import Defense\n\n"
        "class Broken(Defense):\n"
        "    def transform_update(self, update, rng):\n"
        "        raise ValueError('no update for you')\n\n"
        "class BrokenLater(Defense):\n"
        "    def choose_participants(self, selected, round_index, rng):\n"
        "        if round_index == 20:\n"
        "            raise ValueError('no update for you')\n"
        "        return selected, selected\n"
    )
    code, out, err = cli(["submit", f"{defense}:Broken", "--name", "broken", "--suite", submitted / "standard.toml",
                          "--entries", tmp_path / "entries", "--results", tmp_path / "r", "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "hook transform_update raised ValueError" in err  # refused up front
    assert not (tmp_path / "entries").exists()
    code, out, err = cli(["submit", f"{defense}:BrokenLater", "--name", "broken", "--suite", submitted / "standard.toml",
                          "--entries", tmp_path / "entries", "--results", tmp_path / "r", "--quiet"], capsys)
    assert code == 1 and err.count("\n") == 1 and "2 task(s) failed" in err and "no update for you" in err
    entry = read(tmp_path / "entries" / "broken.json")
    assert entry["summary"]["tasks"] == 0 and entry["summary"]["failed"] == 2
    assert entry["summary"]["scores"]["exact_column_rate"] == {"mean": None, "low": None, "high": None}
    assert all(task["result"]["status"].startswith("failed: ") for task in entry["tasks"])
    code, out, _ = cli(["verify", tmp_path / "entries" / "broken.json", "--sample", "1", "--quiet"], capsys)
    assert code == 0 and "every score matches" in out
    code, _, _ = cli(["leaderboard", "--readme", "--entries", tmp_path / "entries", "--out", tmp_path / "R.md"], capsys)
    assert code == 0 and "| 1 | ? | broken | \u2014 |" in (tmp_path / "R.md").read_text()


def test_readme_warns_when_a_builtin_suite_moved_past_its_entries(entries: Path, tmp_path: Path, capsys) -> None:
    """The fixture entries say `standard` version 3; the built-in standard is another version: their verdicts are stale."""
    out = tmp_path / "README.md"
    code, _, err = cli(["leaderboard", "--readme", "--entries", entries, "--out", out], capsys)
    assert code == 0, err
    assert f"**Stale:** the built-in `standard` suite is now version {load_suite('standard').version}; these entries were made with version 3" in out.read_text()
    assert "still re-runs their tasks" not in out.read_text()  # no version-3 suite file kept beside the entries

    kept = entries.parent / "suites" / "standard-v3.toml"
    kept.parent.mkdir(exist_ok=True)
    kept.write_text("")
    code, _, err = cli(["leaderboard", "--readme", "--entries", entries, "--out", out], capsys)
    assert code == 0 and "`disaggbench verify entries/NAME.json --suite suites/standard-v3.toml` still re-runs" in out.read_text()


def test_readme_shows_the_current_suite_version_before_stale_ones(entries: Path, tmp_path: Path, capsys) -> None:
    current = load_suite("standard").version
    for name, version in (("old", "2"), ("older", "10"), ("fresh", current)):
        entry = read(entries / "none.json")
        entry["name"], entry["suite"]["version"] = name, version
        write(entries / f"{name}.json", entry)
    out = tmp_path / "README.md"
    code, _, err = cli(["leaderboard", "--readme", "--entries", entries, "--out", out], capsys)
    assert code == 0, err
    headers = [line for line in out.read_text().splitlines() if line.startswith("## Suite `standard`")]
    versions = [h.split("(version ")[1].rstrip(")") for h in headers]
    assert versions == [current, "10", "3", "2"]  # the current one, then stale ones from the newest (numerically)
    text = out.read_text()
    assert text.index(f"(version {current})") < text.index("**Stale:**")


def test_verify_says_when_a_re_run_was_stopped_by_a_clock(entries: Path, capsys, monkeypatch) -> None:
    """A score a clock safety net decided can differ with the machine's load: verify names such tasks."""
    from dataclasses import replace

    import attacks.recovery

    real = attacks.recovery.run_attacks

    def clock_limited(observation, settings):
        return [replace(r, disaggregation=replace(r.disaggregation, clock_limited=True)) for r in real(observation, settings)]

    monkeypatch.setattr(attacks.recovery, "run_attacks", clock_limited)
    path = entries / "none.json"
    entry = read(path)
    task = entry["tasks"][0]
    task["result"]["unique_rate"] = 0.123
    task["sha256"] = result_hash(task["result"])
    write(path, entry)
    code, out, err = cli(["verify", path, "--sample", "2", "--seed", "0", "--quiet"], capsys)
    assert code == 1 and f"task {task['key']} (tiny-fedsgd, seed 0): unique_rate: entry 0.123" in out
    notes = [line for line in err.splitlines() if "clock-limited" in line]
    assert len(notes) == 2 and notes[0].startswith(f"note: task {entry['tasks'][0]['key']}")


def test_verify_adds_no_clock_note_where_no_clock_stopped_work(entries: Path, capsys) -> None:
    path = entries / "none.json"
    entry = read(path)
    entry["tasks"][0]["result"]["unique_rate"] = 0.123
    entry["tasks"][0]["sha256"] = result_hash(entry["tasks"][0]["result"])
    write(path, entry)
    code, out, err = cli(["verify", path, "--sample", "2", "--seed", "0", "--quiet"], capsys)
    assert code == 1 and "unique_rate" in out and "clock-limited" not in err


def test_every_committed_entry_of_a_kept_suite_version_finds_all_its_task_keys() -> None:
    """Task keys hash the attack settings. Version-7 entries were made before the lattice stage existed; v7 pins it
    off, and a later setting at its earlier value stays out of the key (LATER_SETTINGS), so every task of such an
    entry is still found (verify had said 'task ... is not a task of its suite and defense here'). Each entry is
    checked against its own suite version: the built-in file for the current one, leaderboard/suites/ for earlier
    ones (entries of versions whose file is not kept are stale and not verifiable, so left out)."""
    root = Path(__file__).resolve().parents[1]
    current = load_suite("standard")
    kept = {int(path.stem.rsplit("-v", 1)[1]): path for path in (root / "leaderboard" / "suites").glob("standard-v*.toml")}
    assert load_suite(kept[7]).attack.lattice is False and current.attack.lattice is True
    checked = set()
    for path in sorted((root / "leaderboard" / "entries").glob("*.json")):
        entry = json.loads(path.read_text())
        version = int(entry["suite"]["version"])
        if version != int(current.version) and version not in kept:
            continue
        suite_file = None if version == int(current.version) else str(kept[version])
        tasks = _entry_tasks(entry, suite_file, path.parent)  # what verify matches: BenchmarkError on a lost key
        assert {task["key"] for task in entry["tasks"]} <= set(tasks), path.name
        checked.add(version)
    assert checked == {7, int(current.version)}  # entries of both versions are committed today


def _rewrite(path: Path, edit) -> dict:
    """Edit an entry as a hand-editor would: every task's sha256 and, where the rows still allow it, the summary
    recomputed, so only the checks of what the entry holds can tell."""
    entry = read(path)
    edit(entry)
    for task in entry["tasks"]:
        task["sha256"] = result_hash(task["result"])
    try:
        entry["summary"] = entry_summary(entry)
    except Exception:  # noqa: BLE001 - rows too broken to summarize: the summary stays as it was
        pass
    write(path, entry)
    return entry


def _readme(entries: Path, out: Path, capsys) -> tuple[int, str]:
    code, _, err = cli(["leaderboard", "--readme", "--entries", entries, "--out", out], capsys)
    return code, err


def _other_cell(entry: dict, index: int, scenario: str = "other") -> None:
    """A copy of the entry's task `index` in a cell its suite lacks, under a key of its own."""
    task = json.loads(json.dumps(entry["tasks"][index]))
    task["scenario"] = task["result"]["scenario"] = scenario
    task["key"] = "f" * 20
    entry["tasks"].append(task)


def _twice(entry: dict) -> None:
    task = json.loads(json.dumps(entry["tasks"][0]))
    task["key"] = "e" * 20
    entry["tasks"].append(task)


@pytest.mark.parametrize("edit, message", [
    (lambda e: e["tasks"].pop(1), "tasks: 1 of the 2 tasks of suite standard version 3 are missing (the first: cell "
                                  "tiny-fedsgd, seed 1, n_rounds 24); an entry holds every task of its suite"),
    (lambda e: _other_cell(e, 0), f"task {'f' * 20} (cell other, seed 0, n_rounds 24) is not a task of suite standard version 3"),
    (_twice, "appears twice"),
])
def test_an_entry_whose_tasks_are_not_its_suites_is_refused(entries: Path, tmp_path: Path, capsys, edit, message) -> None:
    """A cherry-picked entry (a task deleted, its summary recomputed) verified 'every score matches' and was ranked."""
    path = entries / "dp.json"
    _rewrite(path, edit)
    code, out, err = cli(["verify", path, "--sample", "2", "--seed", "0", "--quiet"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and f"entry {path}: " in err and message in err, err
    code, err = _readme(entries, tmp_path / "R.md", capsys)
    assert code == 2 and err.count("\n") == 1 and f"entry {path}: " in err and message in err, err
    assert not (tmp_path / "R.md").exists()


def test_without_its_suite_file_an_entry_must_still_span_its_seeds_x_cells_grid(entries: Path, tmp_path: Path, capsys) -> None:
    (entries.parent / "standard.toml").unlink()  # the suite the entries name is gone: their own grid is checked
    assert _readme(entries, tmp_path / "R.md", capsys)[0] == 0
    path = entries / "none.json"
    _rewrite(path, lambda e: _other_cell(e, 1))  # cell "other" with seed 1 only
    code, err = _readme(entries, tmp_path / "R2.md", capsys)
    assert code == 2 and err.count("\n") == 1 and f"entry {path}: tasks: (cell other, seed 0, n_rounds 24) is missing" in err
    assert "suite standard version 3 was not found to check against" in err


def _row(column: str, value: object, index: int = 0):
    def edit(entry: dict) -> None:
        entry["tasks"][index]["result"][column] = value
    return edit


def _field(part: str, key: str, value: object):
    def edit(entry: dict) -> None:
        entry[part][key] = value
    return edit


@pytest.mark.parametrize("name, edit, message", [
    ("dp", _row("horizon", -4), "task {key}: column horizon holds values that are not positive numbers"),
    ("dp", _row("horizon", "abc"), "task {key}: horizon must be a number, got 'abc'"),
    ("dp", _row("horizon", 2), "task {key}: horizon is 2, but n_rounds / n_users is 4.0"),
    ("dp", _row("n_users", -6), "task {key}: column n_users holds -6, not a number in [2, inf]"),
    ("dp", _row("participation", 2.0), "task {key}: column participation holds 2.0, not a number in (0.0, 1.0]"),
    ("dp", _row("window", 4), "task {key}: window is 4, but suite standard version 3 gives cell tiny-fedsgd 3"),
    ("dp", _row("bogus_col", 1), "task {key}: column 'bogus_col' is not a column a task writes"),
    ("dp", _row("status", "not applicable: x"), "task {key}: status is 'not applicable: x', but attack_success holds a value"),
    ("none", _row("epsilon_amplified", "inf"), "task {key}: epsilon_amplified is 'inf' without an epsilon"),
    ("dp", _row("defense", "none"), "task {key}: defense is 'none', but the entry's defense is 'dp(z=2)'"),
    ("dp", _row("suite", "other"), "task {key}: suite is 'other', but the entry's suite.name is 'standard'"),
    ("dp", _field("defense", "name", "none"), "defense.parameters {{'clip_norm': 1.0, 'noise_multiplier': 2}} are not "
                                              "those of defense 'none'"),
    ("dp", lambda e: e["defense"].update(name="none", parameters={}),
     "defense.label is 'dp(z=2)', but suite standard version 3 labels none with these parameters ''"),
    ("dp", _field("defense", "label", "a\nb"), "defense.label 'a\\nb' has surrounding spaces or control characters"),
    ("none", _field("defense", "label", "dp-gaussian"), "defense.label 'dp-gaussian' is a built-in defense's name"),
    ("dp", lambda e: e.update(created="2026-13-45T99:99:99Z"), "created '2026-13-45T99:99:99Z' is not a UTC time"),
])
def test_readme_and_verify_refuse_rows_and_fields_no_run_writes(entries: Path, tmp_path: Path, capsys, name, edit,
                                                                 message) -> None:
    """Hand-edited entries, each sha256 recomputed, were ranked by --readme: rows a results table refuses
    (check_table), columns and statuses no task writes, rows of another defense, bad labels and times."""
    path = entries / f"{name}.json"
    entry = _rewrite(path, edit)
    expected = f"error: entry {path}: " + message.format(key=entry["tasks"][0]["key"])
    code, err = _readme(entries, tmp_path / "R.md", capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(expected), err
    code, out, err = cli(["verify", path, "--sample", "1", "--seed", "0", "--quiet"], capsys)
    assert code == 2 and out == "" and err.startswith(expected), err


def test_verify_names_a_summary_score_its_tasks_do_not_give(entries: Path, capsys) -> None:
    path = entries / "dp.json"
    entry = read(path)
    entry["summary"]["scores"]["bogus"] = {"mean": 0.5}
    write(path, entry)
    code, out, err = cli(["verify", path, "--sample", "1", "--seed", "0", "--quiet"], capsys)
    assert code == 1 and out.splitlines() == ["summary: bogus: entry {'mean': 0.5}, its tasks give no such score"]


@pytest.mark.parametrize("number, readable", [(2**63 - 1, True), (-(2**63), True), (2**63, False), (-(2**63) - 1, False),
                                              (10**19, False)])
def test_an_entry_holds_integers_of_the_whole_int64_range(entries: Path, tmp_path: Path, capsys, number, readable) -> None:
    """Suites take seeds up to 2^63 - 1 and --param such integers; the reader refused 19 digits."""
    path = entries / "none.json"
    text = path.read_text()
    mean = f'"mean": {json.dumps(read(path)["summary"]["scores"]["attack_success"]["mean"])}'
    path.write_text(text.replace(mean, f'"mean": {number}', 1))  # the summary is informational: only the reader checks it
    code, err = _readme(entries, tmp_path / "R.md", capsys)
    if readable:
        assert code == 0, err
    else:
        assert code == 2 and err.count("\n") == 1 and f"entry {path} is not valid JSON: integer" in err
        assert "outside the 64-bit range" in err


def test_an_entry_of_a_suite_with_the_largest_seed_is_read_back(tmp_path: Path, capsys) -> None:
    (tmp_path / "big.toml").write_text(f"""
name = "big"
version = "1"
seeds = [{2**63 - 1}]

[[defenses]]
name = "none"

[[cells]]
name = "tiny-synthetic"
n_users = 6
n_rounds = 24
participation = 0.4
window = 3
update_kind = "synthetic"
""")
    code, _, err = cli(["submit", "rounded-counts", "--param", "bucket=2", "--suite", tmp_path / "big.toml", "--name", "big",
                        "--results", tmp_path / "r", "--entries", tmp_path / "entries", "--quiet"], capsys)
    assert code == 0, err
    code, out, err = cli(["verify", tmp_path / "entries" / "big.json", "--sample", "1", "--seed", "0", "--quiet"], capsys)
    assert code == 0 and "every score matches" in out, err
    assert _readme(tmp_path / "entries", tmp_path / "R.md", capsys)[0] == 0
