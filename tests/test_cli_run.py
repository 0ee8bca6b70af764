import re
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.columns import RESULT_COLUMNS
from tests.conftest import TINY_CELL

README = Path(__file__).resolve().parents[1] / "README.md"

TINY_SUITE = """
name = "tiny"
version = "1"
description = "two defenses, one cell, one seed"
seeds = [0]

[attack]
time_limit = 0.2

[[defenses]]
name = "none"

[[defenses]]
name = "dp-gaussian"
noise_multiplier = 1.0
""" + TINY_CELL


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE)
    return path


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_has_help(capsys):
    for args in (["--help"], ["run", "--help"], ["disaggregate", "--help"], ["list", "--help"], ["leaderboard", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 0
        assert "usage: disaggbench" in capsys.readouterr().out


def test_run_writes_the_table_and_a_second_run_reuses_it(tmp_path, suite_file, capsys):
    results = tmp_path / "results"
    code, first, _ = run(["run", "--suite", str(suite_file), "--results", str(results), "--quiet"], capsys)
    assert code == 0
    board = first.split("\n\n")[0].splitlines()  # the ranking, before the legend
    assert board[0].split()[:3] == ["rank", "tier", "defense"]
    ranked = {line.split()[2] for line in board[1:]}
    assert ranked == {"none", "ldp-gaussian"}  # the old name's rows carry the new one
    table = pd.read_parquet(results / "tiny" / "results.parquet")
    assert list(table.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert set(table["defense"]) == {"none", "ldp-gaussian"} and set(table["status"]) == {"ok"}
    none = table[table["defense"] == "none"].iloc[0]
    assert none["exact_column_rate"] == 1.0 and none["psnr_recovered"] > none["psnr_aggregate"]
    dp = table[table["defense"] == "ldp-gaussian"].iloc[0]
    assert dp["epsilon"] > 0 and dp["exact_column_rate"] < none["exact_column_rate"]
    task_files = sorted((results / "tiny" / "tasks").glob("*.json"))
    assert len(task_files) == 2
    pictures = sorted((results / "tiny" / "pictures").glob("*.png"))
    assert [p.stem for p in pictures] == [f.stem for f in task_files]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pictures)
    stamps = [f.stat().st_mtime_ns for f in task_files]
    code, second, _ = run(["run", "--suite", str(suite_file), "--results", str(results), "--quiet"], capsys)
    assert code == 0 and second == first
    assert [f.stat().st_mtime_ns for f in task_files] == stamps


def test_a_lost_task_is_recomputed_to_the_same_numbers(tmp_path, suite_file, capsys):
    results = tmp_path / "results"
    _, first, _ = run(["run", "--suite", str(suite_file), "--results", str(results), "--quiet"], capsys)
    before = pd.read_parquet(results / "tiny" / "results.parquet")
    next(iter((results / "tiny" / "tasks").glob("*.json"))).unlink()
    _, second, _ = run(["run", "--suite", str(suite_file), "--results", str(results), "--quiet"], capsys)
    after = pd.read_parquet(results / "tiny" / "results.parquet")
    assert second == first
    pd.testing.assert_frame_equal(before.drop(columns=["attack_seconds", "task_seconds"]), after.drop(columns=["attack_seconds", "task_seconds"]))


def test_readme_example_defense_runs_through_the_plugin_path(tmp_path, suite_file, capsys):
    text = README.read_text()
    code = re.search(r"<!-- example-defense -->\n```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) < 40
    defense_file = tmp_path / "my_defense.py"
    defense_file.write_text(code)
    exit_code, out, err = run(["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
                               "--defense", f"{defense_file}:TopKSparsification"], capsys)
    assert exit_code == 0, err
    table = pd.read_parquet(tmp_path / "r" / "tiny" / "results.parquet")
    assert list(table["defense"]) == ["top-k"] and table["status"].iloc[0] == "ok"  # the class's name, not the path


def test_a_broken_defense_is_refused_before_any_task_runs(tmp_path, suite_file, capsys):
    defense_file = tmp_path / "broken.py"
    defense_file.write_text(
        "from defenses.base import Defense\n\n"
        "class Broken(Defense):\n"
        "    name = 'broken'\n\n"
        "    def transform_update(self, update, rng):\n"
        "        raise ValueError('no update for you')\n"
    )
    code, out, err = run(["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
                          "--defense", "none", "--defense", f"{defense_file}:Broken"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "hook transform_update raised ValueError: no update for you" in err
    assert not (tmp_path / "r" / "tiny" / "tasks").exists()


def test_a_defense_that_fails_during_a_task_is_recorded_and_reported_in_one_line(tmp_path, suite_file, capsys):
    """Validation runs a few rounds; a hook that breaks later fails its task, and the suite goes on."""
    defense_file = tmp_path / "late.py"
    defense_file.write_text(
        "from defenses.base import Defense\n\n"
        "class Late(Defense):\n"
        "    name = 'late'\n\n"
        "    def choose_participants(self, selected, round_index, rng):\n"
        "        if round_index == 20:\n"
        "            raise ValueError('round 20 is cursed')\n"
        "        return selected, selected\n"
    )
    code, out, err = run(["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
                          "--defense", "none", "--defense", f"{defense_file}:Late"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and "hook choose_participants raised ValueError: round 20 is cursed" in err
    table = pd.read_parquet(tmp_path / "r" / "tiny" / "results.parquet")
    assert table.set_index("defense").loc["none", "status"] == "ok"
    assert table["status"].str.startswith("failed:").sum() == 1


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("n_users = 6", "n_users = 1"), "n_users must be at least 2"),
    (lambda s: s.replace("participation = 0.4", "participation = 2.0"), "participation must be in"),
    (lambda s: s.replace("window = 3", "windw = 3"), "unknown scenario field"),
    (lambda s: s.replace('name = "dp-gaussian"', 'name = "no-such-defense"'), "unknown defense"),
    (lambda s: s + "\n[[[", "invalid TOML"),
])
def test_bad_suites_exit_2_with_one_line(tmp_path, capsys, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(TINY_SUITE))
    code, out, err = run(["run", "--suite", str(path), "--results", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "tiny" / "tasks").exists()


def test_list_and_leaderboard(tmp_path, suite_file, capsys):
    code, out, _ = run(["list"], capsys)
    assert code == 0 and "quick" in out and "dp-gaussian" in out and "disaggregation" in out
    results = tmp_path / "results"
    run(["run", "--suite", str(suite_file), "--results", str(results), "--quiet"], capsys)
    for fmt, marker in (("markdown", "| rank |"), ("latex", "\\begin{table}"), ("csv", "defense,"), ("html", "<table"), ("json", '"rows"')):
        code, out, _ = run(["leaderboard", "--suite", "tiny", "--results", str(results), "--format", fmt], capsys)
        assert code == 0 and marker in out and "dp-gaussian" in out
    code, _, err = run(["leaderboard", "--suite", "nothing", "--results", str(results)], capsys)
    assert code == 2 and "no results" in err


def test_a_defense_that_zeroes_every_sum_still_scores(tmp_path, suite_file, capsys):
    defense_file = tmp_path / "silence.py"
    defense_file.write_text(
        "from defenses.base import Defense\n\n"
        "class Silence(Defense):\n"
        "    name = 'silence'\n\n"
        "    def transform_aggregate(self, aggregate, rng):\n"
        "        return aggregate * 0.0\n"
    )
    code, out, err = run(["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
                          "--defense", f"{defense_file}:Silence"], capsys)
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "r" / "tiny" / "results.parquet")
    assert table["status"].iloc[0] == "ok" and table["exact_column_rate"].iloc[0] < 1.0


def test_a_task_past_its_timeout_is_recorded_as_failed(tmp_path, suite_file, capsys):
    code, out, err = run(["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
                          "--defense", "none", "--task-timeout", "0.001"], capsys)
    assert code == 1 and "timed out after 0.001 s" in err and err.count("\n") == 1
    table = pd.read_parquet(tmp_path / "r" / "tiny" / "results.parquet")
    assert table["status"].iloc[0] == "failed: timed out after 0.001 s"
    # A failure is not a result: the next run, without the limit, runs the task again (the stored timeout had come
    # back on every later run, whatever the limit, until its file was deleted).
    code, out, err = run(["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
                          "--defense", "none"], capsys)
    assert code == 0, err
    assert pd.read_parquet(tmp_path / "r" / "tiny" / "results.parquet")["status"].iloc[0] == "ok"


def test_grid_axes_expand_into_cells(tmp_path):
    from benchmark.suite import expand, load_suite

    path = tmp_path / "grid.toml"
    path.write_text(TINY_SUITE.split("[[cells]]")[0] + """
[[grids]]
name = "g"
n_users = [6, 8]
rounds_per_user = [3, 4]
window = 3
update_kind = "synthetic"
""")
    suite = load_suite(str(path))
    assert sorted((c.n_users, c.n_rounds) for c in suite.cells) == [(6, 18), (6, 24), (8, 24), (8, 32)]
    assert {c.name for c in suite.cells} >= {"g-n_users=6-rounds_per_user=3"}
    assert len(expand(suite)) == 4 * 2 * 1


NOT_APPLICABLE_SUITE = """
name = "tiny-synthetic"
version = "1"
seeds = [0]

[attack]
time_limit = 0.2

[[defenses]]
name = "dp-sgd"
noise_multiplier = 1.0

[[defenses]]
name = "model-refresh"
every = 1

[[defenses]]
name = "composed"
defenses = [{name = "rounded-counts", bucket = 2}, {name = "dp-sgd", noise_multiplier = 1.0}]

[[defenses]]
name = "rounded-counts"
bucket = 2
""" + TINY_CELL + """
[[cells]]
name = "tiny-synthetic"
n_users = 6
n_rounds = 24
participation = 0.4
window = 3
update_kind = "synthetic"
"""


def test_a_defense_that_cannot_act_on_synthetic_updates_is_not_applicable_there_not_scored(tmp_path, capsys):
    """DP-SGD trains, model refresh moves the model: neither touches synthetic updates, so scoring the attack there
    scored a defense that never ran (dp-sgd: attack success 1.0 on standard's synthetic cell, 0 on every image cell,
    and 1.0 became its verdict). Those tasks are `not applicable` with every score NaN, neither results nor failures."""
    path = tmp_path / "suite.toml"
    path.write_text(NOT_APPLICABLE_SUITE)
    results = tmp_path / "results"
    code, out, err = run(["run", "--suite", str(path), "--results", str(results), "--quiet"], capsys)
    assert code == 0, err
    table = pd.read_parquet(results / "tiny-synthetic" / "results.parquet")
    synthetic = table[table["scenario"] == "tiny-synthetic"].set_index("defense")
    for defense, reason in [("dp-sgd", "dp-sgd acts in the clients' local training"),
                            ("model-refresh", "model-refresh acts by moving the model"),
                            ("composed", "dp-sgd acts in the clients' local training")]:
        row = synthetic.loc[defense]
        assert row["status"].startswith(f"not applicable: {reason}"), row["status"]
        assert pd.isna(row["attack_success"]) and pd.isna(row["exact_column_rate"])
    assert synthetic.loc["rounded-counts", "status"] == "ok"
    assert set(table.loc[table["scenario"] == "tiny-fedsgd", "status"]) == {"ok"}
    board = out.split("\n\n")[0].splitlines()[1:]
    assert len(board) == 4 and not any("!" in line.split()[0] for line in board)  # nobody marked as failing
    # tasks ok / run, then the inapplicable ones, counted apart
    assert all(re.search(r" (1/1|2/2)( \+1 n/a)?$", line) for line in board)
    assert sum(line.endswith("+1 n/a") for line in board) == 3


def test_a_defense_run_alone_under_a_label_the_suite_gives_other_parameters_is_refused(tmp_path, suite_file, capsys):
    # A suite's `dp-gaussian` row of noise_multiplier 2: `--defense dp-gaussian` (its defaults) had replaced that row
    # with other parameters' scores under the same label.
    other = tmp_path / "other.toml"
    other.write_text(TINY_SUITE.replace("noise_multiplier = 1.0", "noise_multiplier = 2.0"))
    for name in ("dp-gaussian", "ldp-gaussian"):  # the old name's rows are the new name's: one label, one defense
        code, out, err = run(["run", "--suite", str(other), "--results", str(tmp_path / "r"), "--quiet",
                              "--defense", name], capsys)
        assert code == 2 and err.count("\n") == 1
        assert "the suite gives the label 'ldp-gaussian' to dp-gaussian with noise_multiplier=2.0" in err
        assert not (tmp_path / "r").exists()
    both = tmp_path / "both.toml"  # both names, unlabelled: two rows of one label
    both.write_text(TINY_SUITE.replace('[[defenses]]\nname = "none"', '[[defenses]]\nname = "ldp-gaussian"'))
    code, _, err = run(["run", "--suite", str(both), "--results", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 2 and "'ldp-gaussian'" in err and err.count("\n") == 1 and not (tmp_path / "r").exists()
    # The suite's noise_multiplier = 1.0 is the default: the same defense, which runs (here into its timeout).
    code, out, err = run(["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
                          "--defense", "dp-gaussian", "--task-timeout", "0.001"], capsys)
    assert code == 1 and "gives the label" not in err


def test_the_board_of_a_suite_file_refuses_rows_its_labels_did_not_make(tmp_path, suite_file, capsys):
    # The same suite, with the defense's parameters edited under the same label: its board had shown the old rows.
    results = tmp_path / "r"
    code, _, err = run(["run", "--suite", str(suite_file), "--results", str(results), "--quiet"], capsys)
    assert code == 0, err
    edited = tmp_path / "edited.toml"
    edited.write_text(TINY_SUITE.replace("noise_multiplier = 1.0", "noise_multiplier = 3.0"))
    code, out, err = run(["leaderboard", "--suite", str(edited), "--results", str(results)], capsys)
    assert code == 2 and err.count("\n") == 1 and "holds rows of 'ldp-gaussian' made with other parameters" in err
    code, out, err = run(["leaderboard", "--suite", str(suite_file), "--results", str(results)], capsys)
    assert code == 0 and "ldp-gaussian" in out  # the file that made them
    code, _, err = run(["run", "--suite", str(suite_file), "--results", str(results), "--quiet", "--defense",
                        "ldp-gaussian", "--task-timeout", "0.001"], capsys)  # the suite's dp-gaussian, by its new name
    code, out, err = run(["leaderboard", "--suite", str(suite_file), "--results", str(results)], capsys)
    assert code == 0, err  # one defense under two names: its rows had been refused as another defense's
    code, _, err = run(["run", "--suite", str(edited), "--results", str(results), "--quiet", "--defense", "none"], capsys)
    assert code == 0, err  # the table now holds the edited suite's rows: none's, and no stale ldp-gaussian row
    code, out, err = run(["leaderboard", "--suite", str(edited), "--results", str(results)], capsys)
    assert code == 0 and "ldp-gaussian" not in out.split("\n\n")[0] and "none" in out


def test_the_board_of_a_suite_file_refuses_results_another_version_or_other_cells_wrote(tmp_path, suite_file, capsys):
    results = tmp_path / "r"
    code, _, err = run(["run", "--suite", str(suite_file), "--results", str(results), "--quiet", "--defense", "none"], capsys)
    assert code == 0, err
    code, out, _ = run(["leaderboard", "--suite", str(suite_file), "--results", str(results), "--format", "csv"], capsys)
    assert code == 0 and "none" in out
    other_version = tmp_path / "v2.toml"
    other_version.write_text(TINY_SUITE.replace('version = "1"', 'version = "2"'))
    other_cells = tmp_path / "cells.toml"
    other_cells.write_text(TINY_SUITE.replace("seeds = [0]", "seeds = [1]"))
    for path, message in ((other_version, "holds rows of version '1' of suite 'tiny', but"), (other_cells, "with other cells, seeds")):
        code, out, err = run(["leaderboard", "--suite", str(path), "--results", str(results), "--format", "csv"], capsys)
        assert code == 2 and message in err and err.count("\n") == 1 and out == ""
    # An entry of version 2 stores its tasks there and leaves version 1's table: that table is still version 1's.
    code, _, err = run(["submit", "none", "--name", "n2", "--suite", str(other_version), "--results", str(results),
                        "--entries", str(tmp_path / "entries"), "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run(["leaderboard", "--suite", str(other_version), "--results", str(results), "--format", "csv"], capsys)
    assert code == 2 and "holds rows of version '1'" in err
    code, out, _ = run(["leaderboard", "--suite", str(suite_file), "--results", str(results), "--format", "csv"], capsys)
    assert code == 0 and "none" in out
