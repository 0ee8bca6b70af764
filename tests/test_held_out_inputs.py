"""Held-out bad inputs a probe found past the checks of test_bad_inputs.py: each exits 2 with one line naming the
field or file, before any work, writing nothing; a category-typed results column is read as its plain values."""

from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from defenses.registry import defense_class
from tests.conftest import TINY_CELL, TINY_SUITE
from tests.test_bad_inputs import check_refused

# The smallest suite that runs: conftest's, its cell made one synthetic cell of 4 users, 12 rounds.
SUITE = TINY_SUITE.replace(TINY_CELL, """
[[cells]]
name = "syn"
n_users = 4
n_rounds = 12
window = 3
participation = 0.5
update_kind = "synthetic"
""")

PLUGIN_HEAD = "from benchmark.observation import Analytics, window_counts\nfrom defenses.base import Defense\n\n"


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    return path


def _plugin(tmp_path: Path, body: str) -> str:
    path = tmp_path / "plugin.py"
    path.write_text(PLUGIN_HEAD + body)
    return f"{path}:X"


def _run(suite: Path, tmp_path: Path, defense: str | None = None) -> list:
    return ["run", "--suite", suite, "--results", tmp_path / "r", "--quiet", *(["--defense", defense] if defense else [])]


def _submit(suite: Path, tmp_path: Path, defense: str) -> list:
    return ["submit", defense, "--name", "x", "--suite", suite, "--results", tmp_path / "r", "--entries", tmp_path / "e",
            "--quiet"]


@pytest.mark.parametrize("command", [_run, _submit])
def test_a_plugin_window_too_long_to_count_is_refused(tmp_path, capsys, suite_file, command):
    defense = _plugin(tmp_path, "class X(Defense):\n    name = 'huge-window'\n"
                                "    def transform_analytics(self, checked_in, window, rng):\n"
                                "        return Analytics(window_counts(checked_in, checked_in.shape[0]), 10**30, None)\n")
    check_refused(tmp_path, capsys, command(suite_file, tmp_path, defense),
                  "defense 'huge-window': hook transform_analytics must return a window of 1 to 10^9 rounds")


def test_a_plugin_raising_generator_exit_on_import_is_refused_but_ctrl_c_interrupts(tmp_path, capsys, suite_file):
    plugin = tmp_path / "genexit.py"
    plugin.write_text("raise GeneratorExit('bye')\n")
    for command in (_run, _submit):
        check_refused(tmp_path, capsys, command(suite_file, tmp_path, f"{plugin}:X"), "genexit.py failed to load: GeneratorExit: bye")
    plugin = tmp_path / "interrupts.py"
    plugin.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        defense_class(f"{plugin}:X")


NAME_PROBLEM = "has surrounding spaces or control characters"


@pytest.mark.parametrize("edit, names", [
    (lambda s: s.replace('name = "syn"', 'name = "s\\u001b[31my"'), "cell name 's\\x1b[31my' " + NAME_PROBLEM),
    (lambda s: s.replace('name = "syn"', 'name = "s\\ny"'), "cell name 's\\ny' " + NAME_PROBLEM),
    (lambda s: s.replace('name = "syn"', 'name = " syn"'), "cell name ' syn' " + NAME_PROBLEM),
    (lambda s: s.replace("[[cells]]", "[[grids]]").replace('name = "syn"', 'name = "g\\u001b"').replace("n_users = 4", "n_users = [4]"),
     "grid name 'g\\x1b' " + NAME_PROBLEM),
    (lambda s: s + '\n[utility]\nname = "u\\nv"\n', "[utility] name 'u\\nv' " + NAME_PROBLEM),
])
def test_a_suite_name_tables_would_not_show_is_refused(tmp_path, capsys, suite_file, edit, names):
    suite_file.write_text(edit(SUITE))
    check_refused(tmp_path, capsys, _run(suite_file, tmp_path), names)


@pytest.mark.parametrize("name", ["my\x1b[31mdef", "my\ndefense", "mine "])
@pytest.mark.parametrize("command", [_run, _submit])
def test_a_plugin_name_tables_would_not_show_is_refused(tmp_path, capsys, suite_file, command, name):
    defense = _plugin(tmp_path, f"class X(Defense):\n    name = {name!r}\n")
    check_refused(tmp_path, capsys, command(suite_file, tmp_path, defense), f"defense {defense!r}: name {name!r} {NAME_PROBLEM}")


def test_a_category_typed_results_column_is_read_as_its_values(tmp_path, capsys, suite_file):
    assert main([str(a) for a in _run(suite_file, tmp_path)]) == 0
    capsys.readouterr()
    args = ["leaderboard", "--suite", "tiny", "--results", str(tmp_path / "r"), "--format", "csv"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    path = tmp_path / "r" / "tiny" / "results.parquet"
    results = pd.read_parquet(path)
    results[["defense", "scenario", "status"]] = results[["defense", "scenario", "status"]].astype("category")
    results.to_parquet(path)
    assert main(args) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out == plain


@pytest.mark.parametrize("column, value", [("n_users", -3), ("n_rounds", 0), ("window", 0), ("participation", 0.0),
                                           ("participation", 1.5)])
def test_a_stored_table_with_an_impossible_cell_is_refused(tmp_path, capsys, suite_file, column, value):
    """A row whose cell no suite can declare (it rendered normally: n_users = -3 on the board)."""
    assert main([str(a) for a in _run(suite_file, tmp_path)]) == 0
    capsys.readouterr()
    path = tmp_path / "r" / "tiny" / "results.parquet"
    results = pd.read_parquet(path)
    results[column] = value
    results.to_parquet(path)
    check_refused(tmp_path, capsys, ["leaderboard", "--suite", "tiny", "--results", tmp_path / "r"],
                  f"column {column} holds {value}")


@pytest.mark.parametrize("edit, cell", [
    (lambda s: s.replace("window = 3", "window = 3\nseed = 7"), "'syn'"),
    (lambda s: s.replace("[[cells]]", "[[grids]]").replace("window = 3", "window = 3\nseed = [1, 2]"), "'syn-seed=1'"),
])
def test_a_seed_in_a_cell_or_grid_is_refused(tmp_path, capsys, suite_file, edit, cell):
    """expand() gives every task one of the suite's seeds: a cell's own seed was ignored, a seed axis made copies."""
    suite_file.write_text(edit(SUITE))
    check_refused(tmp_path, capsys, _run(suite_file, tmp_path), f"cell {cell}: seed is not a cell field; seeds come "
                                                                 "from the suite's top-level seeds list")


@pytest.mark.parametrize("version", ['""', '"  "', '"2 "', '"2\\u00a0b"'])
def test_an_empty_suite_version_is_refused_before_the_run(tmp_path, capsys, suite_file, version):
    """Only submit refused it, after the whole run: an entry needs a version it can print (no surrounding spaces,
    no control or non-printing characters)."""
    suite_file.write_text(SUITE.replace('version = "1"', f"version = {version}"))
    check_refused(tmp_path, capsys, _run(suite_file, tmp_path), f"suite {suite_file}: version")


def test_synthetic_updates_with_fewer_coordinates_than_users_are_refused(tmp_path, capsys, suite_file):
    """No attack can tell 4 users apart in 3 coordinates: the undefended cell scored 0, as if fully protected."""
    suite_file.write_text(SUITE.replace("window = 3", "window = 3\nsynthetic_dim = 3"))
    check_refused(tmp_path, capsys, _run(suite_file, tmp_path), "synthetic_dim (3) must be 0 or at least n_users (4)")


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_a_seed_outside_int64_is_refused(tmp_path, capsys, suite_file, seed):
    """Entry files hold seeds as int64: a suite's seed must fit one."""
    suite_file.write_text(SUITE.replace("seeds = [0]", f"seeds = [0, {seed}]"))
    check_refused(tmp_path, capsys, _run(suite_file, tmp_path), "seeds must be a non-empty list of integers in [0, 2^63)")
