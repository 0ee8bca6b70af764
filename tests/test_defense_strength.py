"""Whole suites on small synthetic federations: stronger defenses never help the attack, and the adaptive
attack beats the one that takes the analytics at face value."""

import pandas as pd
import pytest

from benchmark.executor import Executor
from benchmark.runner import run_suite
from benchmark.suite import expand, load_suite

CELL = """
[[cells]]
name = "synthetic-16"
n_users = 16
n_rounds = 48
participation = 0.3
window = 4
update_kind = "synthetic"
"""

FAMILIES = {
    "ldp-gaussian": ("noise_multiplier", [0.0, 0.3, 3.0], "clip_norm = 1.0"),
    "dp-aggregate": ("noise_multiplier", [0.0, 0.3, 3.0], "clip_norm = 1.0"),
    "coarse-analytics": ("factor", [1, 3, 12], ""),
    "rounded-counts": ("bucket", [1, 2, 4], ""),
    "participation-padding": ("rate", [0.0, 0.1, 0.3], ""),
    "structured-participation": ("group_size", [1, 2, 4], ""),
}


def _suite_text() -> str:
    blocks = []
    for family, (parameter, strengths, extra) in FAMILIES.items():
        for strength in strengths:
            blocks.append(f'[[defenses]]\nname = "{family}"\nlabel = "{family}:{strength}"\n{parameter} = {strength}\n{extra}\n')
    head = 'name = "strength"\nversion = "1"\ndescription = "families at growing strength"\nseeds = [0, 1]\n\n'
    return head + "[attack]\ntime_limit = 1.0\nbudget = 4.0\n\n" + "".join(blocks) + CELL


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("strength")
    (root / "strength.toml").write_text(_suite_text())
    tasks = expand(load_suite(str(root / "strength.toml")))
    table = run_suite(tasks, root / "results", Executor(workers=2), progress=False)
    assert (table["status"] == "ok").all(), table.loc[table["status"] != "ok", "status"].tolist()
    return table


def _by_strength(table: pd.DataFrame, family: str, column: str) -> list[float]:
    parameter, strengths, _ = FAMILIES[family]
    means = table.groupby("defense")[column].mean()
    return [float(means[f"{family}:{strength}"]) for strength in strengths]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_stronger_setting_never_helps_the_attack(table, family):
    success = _by_strength(table, family, "attack_success")
    assert all(later <= earlier for earlier, later in zip(success, success[1:])), success
    assert success[0] > success[-1], success  # the family does something at its strongest


@pytest.mark.parametrize("defense", ["rounded-counts:2", "participation-padding:0.1"])
def test_the_adaptive_attack_beats_the_static_one(table, defense):
    rows = table[table["defense"] == defense]
    assert rows["attack_success_adaptive"].mean() > rows["attack_success_static"].mean() + 0.3
    assert (rows["attack_success"] == rows[["attack_success_static", "attack_success_adaptive"]].max(axis=1)).all()
