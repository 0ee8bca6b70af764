"""One federation run serves every horizon of a cell: shorter horizons are bit-identical prefixes of the longest."""

from dataclasses import fields, replace

import numpy as np
import pytest

from benchmark import simulation
from benchmark.runner import run_suite
from benchmark.scenario import Scenario
from benchmark.simulation import prefix_consistent, simulate, simulate_horizons
from benchmark.suite import expand, load_suite
from defenses.base import Defense
from defenses.guard import GuardedDefense
from defenses.registry import make_defense

# Every built-in, with parameters that make each hook act (the quick suite's list holds them all, composed too).
DEFENSES = [(spec.name, dict(spec.parameters)) for spec in load_suite("quick").defenses] + [
    ("model-refresh", {"every": 1, "min_relative_change": 0.01}),
    ("structured-participation", {"group_size": 2}),
]
CELLS = {
    "mlp-fedavg": Scenario(name="h", n_users=8, n_rounds=24, participation=0.5, window=4, samples_per_user=4,
                           local_training="fedavg", local_epochs=2, batch_size=2, learning_rate=0.1, seed=5),
    "synthetic": Scenario(name="h", n_users=8, n_rounds=24, participation=0.5, window=4, update_kind="synthetic",
                          synthetic_dim=12, seed=5),
}


def _differences(a, b) -> list[str]:
    out = []
    for field in fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        equal = (x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)) if isinstance(x, np.ndarray) else x == y
        if not equal:
            out.append(field.name)
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name, parameters", DEFENSES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(DEFENSES)])
def test_each_horizon_cut_from_the_longest_run_is_its_own_run_bit_for_bit(cell, name, parameters):
    scenario = CELLS[cell]
    defense = GuardedDefense(make_defense(name, parameters))
    assert prefix_consistent(defense)
    simulation._shared.clear()
    cut = simulate_horizons(scenario, defense, (8, 24, 16))
    for horizon in (8, 16, 24):
        simulation._shared.clear()
        alone = simulate(replace(scenario, n_rounds=horizon), GuardedDefense(make_defense(name, parameters)))
        assert _differences(cut[horizon][0], alone[0]) == [] and _differences(cut[horizon][1], alone[1]) == []


class ReadsTheHorizon(Defense):
    """A plugin whose hooks may read scenario.n_rounds: its horizons must run apart."""

    name = "reads-the-horizon"

    def local_update(self, model, x, y, scenario, rng):
        return None


def test_a_plugin_runs_each_horizon_apart_and_gets_its_own_runs():
    defense = GuardedDefense(ReadsTheHorizon())
    assert not prefix_consistent(defense)
    scenario = CELLS["synthetic"]
    cut = simulate_horizons(scenario, defense, (8, 24))
    alone = simulate(replace(scenario, n_rounds=8), GuardedDefense(ReadsTheHorizon()))
    assert _differences(cut[8][0], alone[0]) == []


SUITE = """
name = "horizons"
version = "1"
seeds = [0, 1]

[[defenses]]
name = "none"

[[defenses]]
name = "ldp-gaussian"
noise_multiplier = 0.01
clip_norm = 10.0

[[cells]]
name = "synthetic"
n_users = 6
horizons = [2, 4, 8]
participation = 0.5
window = 3
update_kind = "synthetic"
synthetic_dim = 10
"""


def test_a_suite_runs_one_federation_per_cell_seed_and_defense_and_scores_as_separate_runs(tmp_path, monkeypatch):
    path = tmp_path / "horizons.toml"
    path.write_text(SUITE)
    tasks = expand(load_suite(str(path)))
    calls = []
    real = simulation._federation_run
    monkeypatch.setattr(simulation, "_federation_run", lambda *args: calls.append(args[0].n_rounds) or real(*args))
    table = run_suite(tasks, tmp_path / "results", progress=False)
    assert (table["status"] == "ok").all() and len(table) == 12
    assert sorted(calls) == [48] * 4  # 2 seeds x 2 defenses, each run once, at the longest horizon (8 x 6 rounds)
    monkeypatch.setattr(simulation, "_federation_run", real)
    simulation._shared.clear()
    from benchmark.runner import run_task

    alone = [run_task(task) for task in tasks]
    for row, own in zip(table.to_dict("records"), alone):
        assert row["attack_success"] == own["attack_success"] and row["exact_column_rate"] == own["exact_column_rate"]


MONOTONE = """
name = "monotone"
version = "1"
seeds = [0, 1]

[attack]
time_limit = 0.5

[[defenses]]
name = "none"

[[defenses]]
name = "rounded-counts"
bucket = 2

[[defenses]]
name = "participation-padding"
rate = 0.1

[[defenses]]
name = "coarse-analytics"
factor = 2

[[cells]]
name = "digits"
n_users = 12
horizons = [4, 8]
participation = 0.4
window = 4
"""


def test_more_rounds_never_make_the_attack_weaker(tmp_path):
    """At 8 rounds per user the prefix attack runs the 4-round task's named attacks on the same first rounds: it
    recovers what that task recovered, so the longer horizon scores at least as high, seed by seed."""
    path = tmp_path / "monotone.toml"
    path.write_text(MONOTONE)
    table = run_suite(expand(load_suite(str(path))), tmp_path / "results", progress=False)
    assert (table["status"] == "ok").all()
    for (_, _), pair in table.groupby(["defense", "seed"]):
        short, long = (pair[pair["n_rounds"] == n].iloc[0] for n in sorted(pair["n_rounds"]))
        named = np.nanmax([short["attack_success_static"], short["attack_success_adaptive"]])
        assert long["attack_success_prefix"] == pytest.approx(named)
        assert long["attack_success"] >= long["attack_success_prefix"]
        assert long["attack_success"] >= short["attack_success"] or short["attack"] == "anonymous"


DP_SGD_SUITE = """
name = "dp-sgd-horizons"
version = "1"
seeds = [0]

[attack]
time_limit = 0.5

[[defenses]]
name = "dp-sgd"

[[cells]]
name = "digits-fedavg"
n_users = 6
horizons = [2, 4]
participation = 0.5
window = 3
samples_per_user = 2
local_training = "fedavg"
local_epochs = 2
batch_size = 2
"""


def test_a_shorter_horizon_cut_from_a_shared_run_gets_the_epsilons_of_its_own_run(tmp_path):
    # DP-SGD learns its steps a round from the clients' training: the shorter horizon's task, whose defense had run
    # nothing, reported NaN epsilons ("amplification not computed") while the same task alone reported them.
    path = tmp_path / "dp.toml"
    path.write_text(DP_SGD_SUITE)
    tasks = expand(load_suite(str(path)))
    for row in _suite_rows_against_own_runs(tasks, tmp_path, ("epsilon", "epsilon_amplified", "epsilon_rdp",
                                                                "epsilon_accounting")):
        assert np.isfinite(row["epsilon_amplified"]) and "amplified" in row["epsilon_accounting"]


def _suite_rows_against_own_runs(tasks: list, tmp_path, columns: tuple[str, ...]) -> list[dict]:
    """The suite's rows of `tasks`, each asserted equal in `columns` to the same task run alone (as verify runs it)."""
    from benchmark.runner import run_task

    rows = run_suite(tasks, tmp_path / "results", progress=False).to_dict("records")
    simulation._shared.clear()
    for row, task in zip(rows, tasks):
        own = run_task(task)
        for column in columns:
            assert row[column] == own[column], (task.scenario.n_rounds, column)
    return rows


LEARNS_ACROSS_ROUNDS = '''
import numpy as np
from defenses.base import Defense


class AdaptiveClip(Defense):
    """Adaptive clipping (a clip norm moved towards the median update norm each round) and local noise: state."""
    name = "adaptive-clip"

    def __init__(self):
        self.clip, self.below = 1.0, []

    def public_parameters(self):
        return {"update_noise_std": 0.05}

    def transform_update(self, update, rng):
        norm = float(np.linalg.norm(update))
        self.below.append(norm <= self.clip)
        return update * min(1.0, self.clip / max(norm, 1e-12)) + rng.normal(0.0, 0.05, update.shape)

    def transform_aggregate(self, aggregate, rng):
        if self.below:
            self.clip *= float(np.exp(-0.5 * (np.mean(self.below) - 0.5)))
            self.below = []
        return aggregate
'''


def test_a_stateful_plugin_runs_each_horizon_from_its_own_start(tmp_path):
    # Its horizons shared one defense object: the shorter run started from the clip norm the longer one ended with
    # (attack success 1.0 and cosine 0.998 on seed 0 at horizon 3 beside horizon 6, 0.583 and 0.71 alone).
    plugin = tmp_path / "clip.py"
    plugin.write_text(LEARNS_ACROSS_ROUNDS)
    scenario = replace(CELLS["synthetic"], n_rounds=24)
    fresh = lambda: GuardedDefense(make_defense(f"{plugin}:AdaptiveClip"))  # noqa: E731
    cut = simulate_horizons(scenario, fresh(), (24, 8))
    assert _differences(cut[8][0], simulate(replace(scenario, n_rounds=8), fresh())[0]) == []
    suite = SUITE.replace('[[defenses]]\nname = "none"\n', f'[[defenses]]\nname = "{plugin}:AdaptiveClip"\n')
    path = tmp_path / "plugin.toml"
    path.write_text(suite.replace("horizons = [2, 4, 8]", "horizons = [4, 8]"))
    tasks = [task for task in expand(load_suite(str(path))) if task.defense.name.endswith(":AdaptiveClip")]
    _suite_rows_against_own_runs(tasks, tmp_path, ("attack_success", "update_cosine"))
