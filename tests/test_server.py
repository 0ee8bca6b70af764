"""What the malicious server controls: the step of a forced refresh, the horizon, and (not) the groups."""

import numpy as np
import pytest

from attacks.adaptive import read_defense
from attacks.settings import AttackSettings
from benchmark.errors import BenchmarkError
from benchmark.runner import _row
from benchmark.scenario import Scenario
from benchmark.simulation import INVARIANT_REACH, SMALLEST_RELATIVE_CHANGE, nearest_accepted, simulate
from benchmark.suite import expand, load_suite
from defenses.base import Defense
from defenses.guard import GuardedDefense
from defenses.participation import ModelRefresh, ParticipationPadding, StructuredParticipation
from defenses.registry import make_defense

BUSY = Scenario(name="busy", n_users=8, n_rounds=24, participation=0.6, window=4, learning_rate=1.0)


def _scenario(**changes) -> Scenario:
    return Scenario(**{**BUSY.to_dict(), **changes})


def _relative_changes(weights: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(weights, axis=0), axis=1) / np.linalg.norm(weights[:-1], axis=1)


@pytest.mark.parametrize("step", ["invariant", "smallest"])
def test_the_smallest_step_leaves_a_refreshed_model_all_but_frozen(step):
    observation, _ = simulate(_scenario(server_step=step), GuardedDefense(ModelRefresh(every=1)))
    changes = _relative_changes(observation.weights)
    assert np.all(changes > 0) and changes.max() < 10 * SMALLEST_RELATIVE_CHANGE  # a new model every round, barely moved
    honest, _ = simulate(_scenario(server_step="honest"), GuardedDefense(ModelRefresh(every=1)))
    assert _relative_changes(honest.weights).min() > 1e3 * changes.max()


@pytest.mark.parametrize("step", ["invariant", "smallest", "honest", 1e-4])
def test_min_relative_change_forces_the_server_to_move_the_model(step):
    observation, truth = simulate(_scenario(server_step=step), GuardedDefense(ModelRefresh(every=1, min_relative_change=0.01)))
    weights = observation.weights
    # every client sees a model at least 1% away from the last one it accepted, or that same model
    for user in range(BUSY.n_users):
        rounds = np.flatnonzero(truth.participants[:, user])
        for before, after in zip(rounds, rounds[1:]):
            change = np.linalg.norm(weights[after] - weights[before]) / np.linalg.norm(weights[before])
            assert change == 0 or change >= 0.01 * (1 - 1e-9)
    if step == "smallest":  # and no more than needed: the least change over consecutive models is the minimum
        assert _relative_changes(weights).min() == pytest.approx(0.01, rel=1e-6)
    assert observation.defense_parameters == {"model_refresh": 1, "min_relative_change": 0.01}


@pytest.mark.parametrize("step, min_change, broken", [
    ("smallest", 0.0, True), ("honest", 0.0, False), ("smallest", 0.1, False), ("invariant", 0.1, True)])
def test_a_refreshed_model_protects_only_until_the_server_moves_it_where_no_update_changes(step, min_change, broken):
    """Never trust a 0: model-refresh every round scores 0 against the honest step, and the smallest step breaks it;
    a 10% change along the aggregates protects, and the same 10% along the logits' common shift does not."""
    from attacks.recovery import run_attacks
    from benchmark.scoring import score_recovery

    scenario = Scenario(n_users=20, n_rounds=60, participation=0.3, window=5, learning_rate=1.0, server_step=step)
    observation, truth = simulate(scenario, GuardedDefense(ModelRefresh(every=1, min_relative_change=min_change)))
    success = max(
        score_recovery(recovery, truth)["attack_success"]
        for recovery in run_attacks(observation, AttackSettings(time_limit=1.0, budget=4.0))
    )
    assert success >= 0.9 if broken else success <= 0.1


def test_the_invariant_server_changes_no_update_and_stays_near_its_first_model():
    scenario = _scenario(n_rounds=200)
    observation, truth = simulate(scenario, GuardedDefense(ModelRefresh(every=1, min_relative_change=0.1)))
    frozen, frozen_truth = simulate(scenario, GuardedDefense(Defense()))
    assert np.array_equal(truth.participants, frozen_truth.participants)
    assert np.allclose(observation.aggregates, frozen.aggregates, rtol=0, atol=1e-12)  # the same updates, 200 new models
    assert not observation.updates_drift  # the server knows it: the adaptive attack reads no noise into the refreshes
    assert read_defense(observation.defense_parameters, observation.counts, 200, scenario.window, observation.totals,
                        AttackSettings(), observation.updates_drift).settings.noise is False
    drifting, _ = simulate(_scenario(n_rounds=200, server_step="smallest"), GuardedDefense(ModelRefresh(every=1, min_relative_change=0.1)))
    assert drifting.updates_drift and read_defense(drifting.defense_parameters, drifting.counts, 200, scenario.window,
                                                   drifting.totals, AttackSettings(), drifting.updates_drift).settings.noise
    moved = observation.weights - observation.weights[0]
    classes = 10
    assert np.all(moved[:, :-classes] == 0)  # only the last layer's bias moves, every logit by the same amount
    assert np.allclose(moved[:, -classes:], moved[:, -classes:][:, :1], rtol=0, atol=1e-12)
    # the clients' refusal balls are reused as clients move on: bounded, not a drift that grows every round
    assert np.abs(moved).max() < 3 * np.linalg.norm(observation.weights[0])


def test_where_the_line_runs_out_the_invariant_server_leaves_it_and_says_the_updates_drift():
    """m = 1: each refusal interval holds the line's point nearest the first model, so the points would run away
    (a bias of 2.8e11 after 120 rounds); past INVARIANT_REACH norms the server steps along the aggregates."""
    observation, truth = simulate(_scenario(n_rounds=120), GuardedDefense(ModelRefresh(every=1, min_relative_change=1.0)))
    weights = observation.weights
    assert observation.updates_drift
    for user in range(BUSY.n_users):  # the clients' rule still holds
        rounds = np.flatnonzero(truth.participants[:, user])
        for before, after in zip(rounds, rounds[1:]):
            change = np.linalg.norm(weights[after] - weights[before]) / np.linalg.norm(weights[before])
            assert change == 0 or change >= 1.0 - 1e-9
    moved = np.linalg.norm(weights - weights[0], axis=1) / np.linalg.norm(weights[0])
    first_off = int(np.argmax(moved > INVARIANT_REACH + 1))
    assert 0 < first_off and np.all(moved[:first_off] <= INVARIANT_REACH + 1)


def test_nearest_accepted_takes_the_point_nearest_zero_outside_every_ball():
    assert nearest_accepted([], []) == 0.0
    assert nearest_accepted([0.0], [1.0]) == pytest.approx(1.0)
    assert nearest_accepted([0.0, 1.0], [1.0, 1.0]) == pytest.approx(-1.0)
    assert nearest_accepted([0.0, 1.0, -1.0], [1.0, 1.0, 1.0]) == pytest.approx(2.0)
    assert nearest_accepted([5.0], [1.0]) == 0.0


def test_a_chosen_step_is_used_as_given_when_the_clients_accept_it():
    observation, truth = simulate(_scenario(server_step=1e-3), GuardedDefense(ModelRefresh(every=1)))
    per_round = truth.participants.sum(axis=1)
    t = int(np.flatnonzero(per_round)[0])
    expected = observation.weights[t] - 1e-3 * observation.aggregates[t] / per_round[t]
    assert np.allclose(observation.weights[t + 1], expected, rtol=0, atol=1e-15)


def test_without_a_refreshing_defense_the_model_never_moves():
    observation, _ = simulate(_scenario(server_step="honest"), GuardedDefense(make_defense("dp-gaussian", {})))
    assert np.all(observation.weights == observation.weights[0])


def test_masked_and_unmasked_padding_pick_the_same_participants():
    plain, truth_plain = simulate(BUSY, ParticipationPadding(rate=0.3))
    masked, truth_masked = simulate(BUSY, ParticipationPadding(rate=0.3, masked=True))
    assert np.array_equal(truth_plain.participants, truth_masked.participants)
    assert np.array_equal(plain.counts, masked.counts) and np.array_equal(plain.totals, masked.totals)
    assert np.array_equal(plain.aggregates, masked.aggregates)  # the masks sum to exactly zero
    assert truth_masked.extra_upload_bytes_per_round > 0 == truth_plain.extra_upload_bytes_per_round


def _groups(seed: int, n_users: int = 20, group_size: int = 5) -> np.ndarray:
    observation, _ = simulate(Scenario(n_users=n_users, n_rounds=40, window=4, update_kind="synthetic", seed=seed),
                              StructuredParticipation(group_size))
    return np.array(observation.defense_parameters["groups"])


def test_structured_groups_are_random_seeded_and_independent_of_user_ids():
    groups = _groups(0)
    assert np.array_equal(groups, _groups(0)) and not np.array_equal(groups, _groups(1))
    assert np.array_equal(np.bincount(groups), [5] * 4)
    # consecutive ids (whose data share a class pattern) meet in one group only by chance: (g - 1) / (n - 1) = 0.21
    together = np.mean([np.mean(g[:-1] == g[1:]) for g in map(_groups, range(30))])
    assert 0.12 < together < 0.32


def _suite(tmp_path, cell: str) -> str:
    path = tmp_path / "h.toml"
    path.write_text('name = "h"\nversion = "1"\nseeds = [0]\n[[defenses]]\nname = "none"\n' + cell)
    return str(path)


def test_horizons_expand_a_cell_into_one_task_each_under_its_own_name(tmp_path):
    suite = load_suite(_suite(tmp_path, '[[cells]]\nname = "c"\nn_users = 10\nwindow = 5\nhorizons = [3, 6, 12]\n'))
    tasks = expand(suite)
    assert [t.scenario.n_rounds for t in tasks] == [30, 60, 120] and len({t.key() for t in tasks}) == 3
    rows = [_row(task) for task in tasks]
    assert [r["horizon"] for r in rows] == [3, 6, 12] and {r["scenario"] for r in rows} == {"c"}


def test_a_cell_without_horizons_has_its_rounds_per_user_and_grids_keep_working(tmp_path):
    cell = '[[cells]]\nname = "c"\nn_users = 20\nn_rounds = 50\n[[grids]]\nname = "g"\nn_users = 10\nrounds_per_user = [2, 4]\n'
    rows = [_row(task) for task in expand(load_suite(_suite(tmp_path, cell)))]
    assert [(r["scenario"], r["horizon"]) for r in rows] == [("c", 2.5), ("g-rounds_per_user=2", 2), ("g-rounds_per_user=4", 4)]


def test_a_grid_crosses_its_axes_and_offers_every_horizon_under_each_cells_name(tmp_path):
    grid = '[[grids]]\nname = "g"\nn_users = [10, 20]\nwindow = 2\nhorizons = [2, 4]\n'
    rows = [_row(task) for task in expand(load_suite(_suite(tmp_path, grid)))]
    assert [(r["scenario"], r["horizon"], r["n_rounds"]) for r in rows] == [
        ("g-n_users=10", 2, 20), ("g-n_users=10", 4, 40), ("g-n_users=20", 2, 40), ("g-n_users=20", 4, 80)]


@pytest.mark.parametrize("cell, message", [
    ('n_rounds = 30\nhorizons = [3]', "horizons or n_rounds"),
    ("horizons = []", "non-empty list of distinct positive numbers"),
    ("horizons = [3, 3]", "non-empty list of distinct positive numbers"),
    ("horizons = [0]", "non-empty list of distinct positive numbers"),
    ('horizons = ["3"]', "non-empty list of distinct positive numbers"),
    ("horizons = [2.55]", "not a whole number of rounds"),
])
def test_bad_horizons_get_one_error_naming_the_cell(tmp_path, cell, message):
    with pytest.raises(BenchmarkError, match=f"cell 'c': .*{message}"):
        load_suite(_suite(tmp_path, f'[[cells]]\nname = "c"\nn_users = 10\n{cell}\n'))


@pytest.mark.parametrize("make, message", [
    (lambda: make_defense("model-refresh", {"min_relative_change": -0.1}), "finite min_relative_change >= 0"),
    (lambda: make_defense("model-refresh", {"min_relative_change": "big"}), "min_relative_change must be a number"),
    (lambda: GuardedDefense(type("Odd", (Defense,), {"min_relative_change": float("nan")})()), "must be a finite number"),
    # booleans are ints to Python: a plugin's True had been read as 1
    (lambda: GuardedDefense(type("Odd", (Defense,), {"min_relative_change": True})()), "must be a finite number"),
    (lambda: GuardedDefense(type("Odd", (Defense,), {"refresh_every": True})()), "refresh_every must be an integer"),
])
def test_a_bad_min_relative_change_gets_one_clear_error(make, message):
    with pytest.raises(BenchmarkError, match=message):
        make()
