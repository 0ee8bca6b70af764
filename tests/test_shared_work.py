"""Work a suite shares: one simulation per scenario for the defenses that leave training alone, and one
utility training per (utility task, defense, seed), stored before the attack tasks run."""

import json
from collections import OrderedDict
from dataclasses import fields

import numpy as np
import pytest

import benchmark.utility as utility
from benchmark import simulation
from benchmark.runner import run_suite
from benchmark.scenario import Scenario
from benchmark.simulation import simulate
from benchmark.store import ResultStore
from benchmark.suite import expand, load_suite
from benchmark.utility import UtilityRun, UtilityTask, cached_accuracy, utility_scores
from defenses.base import Defense
from defenses.guard import GuardedDefense
from defenses.registry import make_defense

SCENARIO = Scenario(name="shared", n_users=8, n_rounds=30, participation=0.4, window=3, seed=1)
TRAINED = Scenario(name="trained", n_users=5, n_rounds=8, participation=0.5, window=2, model_policy="trained",
                   local_training="fedavg", samples_per_user=4, batch_size=2, seed=2)
ANALYTICS_ONLY = [("none", {}), ("no-analytics", {}), ("totals-only", {}), ("noisy-counts", {"scale": 1.0}),
                  ("rounded-counts", {"bucket": 2}), ("coarse-analytics", {"factor": 3})]


@pytest.fixture
def runs(monkeypatch) -> list[str]:
    """An empty memo, and the defense of every federation run, in order."""
    monkeypatch.setattr(simulation, "_shared", OrderedDict())
    calls = []
    original = simulation._Federation.run

    def counted(self, *args, **kwargs):
        calls.append(self.defense)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(simulation._Federation, "run", counted)
    return calls


def _arrays(observation, truth) -> dict:
    out = {}
    for record in (observation, truth):
        for field in fields(record):
            value = getattr(record, field.name)
            out[f"{type(record).__name__}.{field.name}"] = value.copy() if isinstance(value, np.ndarray) else value
    return out


def _assert_identical(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        a, b = first[name], second[name]
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
        else:
            assert a == b, name


def test_an_analytics_only_defense_reuses_the_undefended_run_bit_for_bit(runs) -> None:
    undefended = _arrays(*simulate(SCENARIO, GuardedDefense(Defense())))
    observation, truth = simulate(SCENARIO, GuardedDefense(make_defense("noisy-counts", {"scale": 1.0})))
    assert len(runs) == 1  # the second simulation reused the first one's federation run
    assert observation.aggregates.tobytes() == undefended["Observation.aggregates"].tobytes()
    assert truth.participants.tobytes() == undefended["GroundTruth.participants"].tobytes()
    assert truth.updates.tobytes() == undefended["GroundTruth.updates"].tobytes()
    assert not np.array_equal(observation.counts, undefended["Observation.counts"])  # its own analytics


@pytest.mark.parametrize("scenario", [SCENARIO, TRAINED], ids=["frozen", "trained"])
def test_shared_runs_give_what_a_fresh_run_gives_whichever_defense_asks_first(scenario, runs, monkeypatch) -> None:
    """Every analytics-only defense, after another one filled the memo, equals its own run without the memo."""
    shared = {}
    for name, parameters in reversed(ANALYTICS_ONLY):  # "none" asks last: the memo was filled by another defense
        observation, truth = simulate(scenario, GuardedDefense(make_defense(name, parameters)))
        shared[name] = _arrays(observation, truth)
        observation.aggregates[:] = np.nan  # a caller writing into its arrays does not reach the memo
        truth.updates[:] = np.nan
    assert len(runs) == 1 and type(runs[0].inner) is Defense  # computed undefended, guarded as the asking defense is
    monkeypatch.setattr(simulation, "_leaves_training_alone", lambda defense: False)
    for name, parameters in ANALYTICS_ONLY:
        _assert_identical(shared[name], _arrays(*simulate(scenario, GuardedDefense(make_defense(name, parameters)))))
    assert len(runs) == 1 + len(ANALYTICS_ONLY)


def test_defenses_that_touch_training_or_the_model_run_their_own_federation(runs) -> None:
    touching = [("ldp-gaussian", {"noise_multiplier": 0.1, "clip_norm": 1.0}), ("model-refresh", {"every": 5}),
                ("model-refresh", {"every": 1, "min_relative_change": 0.01}), ("participation-padding", {"rate": 0.2})]
    plain, _ = simulate(SCENARIO, Defense())
    for name, parameters in touching:
        simulate(SCENARIO, GuardedDefense(make_defense(name, parameters)))
    assert len(runs) == 1 + len(touching)
    doubling = Defense()
    doubling.transform_update = lambda update, rng: 2 * update  # a hook replaced on the instance counts too
    doubled, _ = simulate(SCENARIO, GuardedDefense(doubling))
    assert len(runs) == 2 + len(touching) and np.array_equal(doubled.aggregates, 2 * plain.aggregates)


def test_the_memo_keeps_the_latest_scenarios_only(runs) -> None:
    others = [Scenario(**{**SCENARIO.to_dict(), "seed": seed}) for seed in (2, 3, 4)]
    for scenario in [SCENARIO, *others, SCENARIO]:
        simulate(scenario, Defense())
    assert len(runs) == 5  # SCENARIO was pushed out by later ones
    simulate(others[-1], Defense())
    assert len(runs) == 5


# A second or so per training: 20 clients, ~5 a round, 4 rounds.
TINY_TASK = UtilityTask(name="tiny", n_clients=20, cohort=5, n_rounds=4, samples_per_client=10, batch_size=10)
SUITE = """
name = "shared"
version = "1"
seeds = [0, 1]

[attack]
time_limit = 0.2

[utility]
name = "tiny"
n_clients = 20
cohort = 5
n_rounds = 4
samples_per_client = 10
batch_size = 10

[[defenses]]
name = "none"

[[defenses]]
name = "noisy-counts"
scale = 1.0

[[defenses]]
name = "ldp-gaussian"
label = "ldp"
noise_multiplier = 1.0
clip_norm = 1.0

[[cells]]
name = "one"
n_users = 6
n_rounds = 24
participation = 0.4
window = 3

[[cells]]
name = "two"
n_users = 6
n_rounds = 18
participation = 0.5
window = 3
"""


@pytest.fixture
def trainings(monkeypatch) -> list[tuple]:
    """Every utility training of this process, as (seed, defense name)."""
    cached_accuracy.cache_clear()
    calls = []
    original = utility.train

    def counted(task, defense, seed, *args, **kwargs):
        calls.append((seed, defense.name))
        return original(task, defense, seed, *args, **kwargs)

    monkeypatch.setattr(utility, "train", counted)
    yield calls
    cached_accuracy.cache_clear()


def _tasks(tmp_path):
    (tmp_path / "shared.toml").write_text(SUITE)
    return expand(load_suite(str(tmp_path / "shared.toml")))


def test_a_suite_trains_each_defense_and_seed_once_first_and_never_again(tmp_path, trainings, runs, monkeypatch) -> None:
    monkeypatch.setattr(simulation, "SHARED_RUNS", 1)  # only scenario-major order lets none and noisy-counts share
    tasks = _tasks(tmp_path)
    assert [t.utility for t in tasks] == [TINY_TASK] * len(tasks)
    table = run_suite(tasks, tmp_path / "results", progress=False)
    assert (table["status"] == "ok").all(), table["status"].tolist()
    # the undefended and ldp trainings of each seed, once each though two cells need them; noisy-counts shares none's
    assert sorted(trainings) == [(0, "ldp-gaussian"), (0, "none"), (1, "ldp-gaussian"), (1, "none")]
    assert len(list((tmp_path / "results" / "shared" / "utility").glob("*.json"))) == 4
    # 2 cells x 2 seeds: one shared run for none and noisy-counts, one for ldp
    assert len(runs) == 8
    # the table keeps the tasks' order, and each row the figures the old path (training in the task) gives
    assert list(zip(table["scenario"], table["defense"], table["seed"])) == [
        (t.scenario.name, t.defense.display, t.scenario.seed) for t in tasks]
    cached_accuracy.cache_clear()
    for task, row in zip(tasks, table.to_dict("records")):
        spec = task.defense
        defense = GuardedDefense(make_defense(spec.name, dict(spec.parameters)))
        old = utility_scores(task.utility, task.scenario.seed, json.dumps([spec.name, dict(spec.parameters)]), defense)
        assert {k: row[k] for k in old} == old
    assert table.loc[table["defense"] == "noisy-counts", "utility_drop"].eq(0.0).all()
    assert (table.loc[table["defense"] == "ldp", "utility_drop"] != 0.0).all()

    # A re-run whose tasks are gone trains nothing: the stored trainings are found.
    trainings.clear()
    cached_accuracy.cache_clear()
    for path in (tmp_path / "results" / "shared" / "tasks").glob("*.json"):
        path.unlink()
    again = run_suite(tasks, tmp_path / "results", progress=False)
    assert trainings == []
    assert again[["test_accuracy", "test_accuracy_undefended", "utility_drop"]].equals(
        table[["test_accuracy", "test_accuracy_undefended", "utility_drop"]])


def test_a_failed_training_fails_the_tasks_that_need_it_with_its_reason(tmp_path, trainings, monkeypatch) -> None:
    original = UtilityRun.accuracy

    def broken(self):
        if "ldp" in self.defense_key and self.seed == 1:
            raise RuntimeError("the training diverged\nsecond line")
        return original(self)

    monkeypatch.setattr(UtilityRun, "accuracy", broken)
    table = run_suite(_tasks(tmp_path), tmp_path / "results", progress=False)
    failed = table[(table["defense"] == "ldp") & (table["seed"] == 1)]
    assert len(failed) == 2
    assert (failed["status"] == "failed: utility training (ldp, seed 1) failed: RuntimeError: the training diverged").all()
    assert failed["attack_success"].isna().all() and failed["test_accuracy"].isna().all()
    assert (table.drop(failed.index)["status"] == "ok").all()
    stored = [json.loads(p.read_text()) for p in (tmp_path / "results" / "shared" / "utility").glob("*.json")]
    assert sorted(r["status"] for r in stored) == ["failed: RuntimeError: the training diverged"] + ["ok"] * 3


def test_a_utility_run_key_follows_the_source_task_defense_and_seed() -> None:
    key = json.dumps(["ldp-gaussian", {"clip_norm": 1.0, "noise_multiplier": 1.0}], sort_keys=True)
    run = UtilityRun(TINY_TASK, 0, key)
    assert run.key() == UtilityRun(TINY_TASK, 0, key).key()
    others = [UtilityRun(TINY_TASK, 1, key), UtilityRun(TINY_TASK, 0, ""),
              UtilityRun(UtilityTask(**{**TINY_TASK.__dict__, "n_rounds": 5}), 0, key)]
    assert len({run.key(), *(other.key() for other in others)}) == 4
    assert run.key(source="edited") != run.key()


def test_a_corrupted_stored_training_is_trained_again(tmp_path, capsys) -> None:
    store = ResultStore(tmp_path, "shared")
    store.save_utility("k", {"status": "ok", "test_accuracy": 0.5, "seconds": 1.0})
    assert store.trained("k") and store.load_utility("k")["test_accuracy"] == 0.5
    (store.utility / "k.json").write_text('{"status": "ok"')
    assert not store.trained("k") and "is corrupted" in capsys.readouterr().err
    for edited in ('{"status": "ok", "test_accuracy": 5}', '{"status": "ok", "test_accuracy": NaN}',
                   '{"status": "ok", "test_accuracy": 1e400}', '{"status": "bogus", "test_accuracy": 0.5}'):
        (store.utility / "k.json").write_text(edited)  # each once failed its tasks for good, or gave NaN silently
        assert not store.trained("k") and "is corrupted" in capsys.readouterr().err
