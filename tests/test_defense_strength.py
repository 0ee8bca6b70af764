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


# Coarser analytics only hide names: the anonymous attack recovers every update without counts, so what such a
# family protects is attribution (linkability), not the updates. Padding up to rate 0.3 protects neither here:
# columns are found without counts and named by the binomial likelihood of the padded counts.
PROTECTS = {"coarse-analytics": "attributed_success", "rounded-counts": "attributed_success"}
PROTECTS_NOTHING = {"participation-padding"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_stronger_setting_never_helps_the_attack(table, family):
    success = _by_strength(table, family, "attack_success")
    assert all(later <= earlier for earlier, later in zip(success, success[1:])), success
    protected = _by_strength(table, family, PROTECTS.get(family, "attack_success"))
    assert all(later <= earlier for earlier, later in zip(protected, protected[1:])), protected
    if family not in PROTECTS_NOTHING:
        assert protected[0] > protected[-1], protected  # the family does something at its strongest


@pytest.mark.parametrize("defense", ["rounded-counts:2", "participation-padding:0.1"])
def test_the_adaptive_attack_beats_the_static_one(table, defense):
    rows = table[table["defense"] == defense]
    assert rows["attack_success_adaptive"].mean() > rows["attack_success_static"].mean() + 0.3
    attacks = ["attack_success_static", "attack_success_adaptive", "attack_success_anonymous"]
    assert (rows["attack_success"] == rows[attacks].max(axis=1)).all()


HORIZON_SUITE = """name = "horizons"
version = "1"
seeds = [0, 1]

[attack]
time_limit = 1.0
budget = 4.0

[[defenses]]
name = "dp-aggregate"
label = "dp-aggregate:0.2"
noise_multiplier = 0.2
clip_norm = 1.0

[[defenses]]
name = "dp-aggregate"
label = "dp-aggregate:0.1"
noise_multiplier = 0.1
clip_norm = 1.0

[[cells]]
name = "synthetic-16"
n_users = 16
horizons = [3, 6, 12]
participation = 0.3
window = 4
update_kind = "synthetic"
"""


# z = 0.03 no longer tells horizons apart: every one recovers every column since the exchanges (attacks/polish.py).
@pytest.mark.parametrize("defense", ["dp-aggregate:0.1", "dp-aggregate:0.2"])
def test_recovery_under_aggregate_noise_never_falls_with_the_horizon(tmp_path, defense):
    """The server's longer horizon averages DP noise away: exact columns never fall as rounds per user grow."""
    (tmp_path / "horizons.toml").write_text(HORIZON_SUITE)
    suite = load_suite(str(tmp_path / "horizons.toml"))
    table = run_suite(expand(suite, tuple(d for d in suite.defenses if d.display == defense)), tmp_path, progress=False)
    assert (table["status"] == "ok").all() and set(table["scenario"]) == {"synthetic-16"}
    rate = table.groupby("horizon")["exact_column_rate"].mean()
    assert list(rate.index) == [3, 6, 12]
    assert all(later >= earlier for earlier, later in zip(rate, rate.iloc[1:])), rate.tolist()
    assert rate[12] > rate[3], rate.tolist()


WEAK_LOCAL_NOISE_SUITE = HORIZON_SUITE[HORIZON_SUITE.index("[[cells]]"):]


def test_a_zero_at_a_short_freeze_is_not_the_defenses(tmp_path):
    """The server chooses how long the model stays frozen, and a least-squares update's error falls like
    1 / sqrt(rounds joined): weak local noise that stops every attack at 3 rounds per user loses every user at 12
    (standard v8 runs its designed cell at 12, 24 and 48 for this reason)."""
    (tmp_path / "weak.toml").write_text('name = "weak"\nversion = "1"\nseeds = [0]\n\n[attack]\ntime_limit = 1.0\n'
                                        'budget = 4.0\n\n[[defenses]]\nname = "ldp-gaussian"\nnoise_multiplier = 0.1\n'
                                        'clip_norm = 1.0\n\n' + WEAK_LOCAL_NOISE_SUITE)
    suite = load_suite(str(tmp_path / "weak.toml"))
    table = run_suite(expand(suite, suite.defenses), tmp_path, progress=False)
    success = table.set_index("horizon")["attack_success"].sort_index()
    assert list(success.index) == [3, 6, 12] and (table["status"] == "ok").all()
    assert success[3] == 0 and success[12] == 1.0, success.tolist()
    assert all(later >= earlier for earlier, later in zip(success, success.iloc[1:])), success.tolist()

LENET_CELL = """
[[cells]]
name = "{name}"
n_users = 30
n_rounds = 180
participation = 0.3
window = 10
dataset = "fashion-mnist"
model = "cnn"
samples_per_user = 4
learning_rate = 1.0
initial_model = "{initial}"
"""
DESIGNED_SUITE = """name = "designed"
version = "1"
seeds = [0]

[attack]
time_limit = 1.0
budget = 4.0
inverted_users = 1

[[defenses]]
name = "dp-aggregate"
noise_multiplier = 0.01
clip_norm = 1.0
""" + LENET_CELL.format(name="lenet-default", initial="default") + LENET_CELL.format(name="lenet-designed", initial="designed")


def test_a_server_that_designs_its_frozen_model_recovers_what_pytorchs_initialisation_hides(tmp_path):
    """The server picks the weights it freezes: at PyTorch's initialisation LeNet updates differ in about nine
    directions and dp-aggregate(z=0.01) hides every user; on the designed weights every update is recovered."""
    (tmp_path / "designed.toml").write_text(DESIGNED_SUITE)
    table = run_suite(expand(load_suite(str(tmp_path / "designed.toml"))), tmp_path, progress=False)
    assert (table["status"] == "ok").all()
    success = table.set_index("scenario")["attack_success"]
    assert success["lenet-default"] <= 0.1  # measured 0.0
    assert success["lenet-designed"] >= 0.9  # measured 1.0
