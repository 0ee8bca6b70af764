"""A round's clients trained together (vmapped) give what training them one at a time gives, with the same draws."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmark import simulation
from benchmark.models import build_model
from benchmark.scenario import Scenario
from benchmark.simulation import local_update, local_updates, simulate
from defenses.base import Defense, batched_local_training
from defenses.composition import Composed
from defenses.guard import GuardedDefense
from defenses.registry import make_defense
from defenses.private_training import dp_sgd_update, dp_sgd_updates

FEDSGD = Scenario(name="fives", n_users=6, n_rounds=12, participation=0.5, window=3, samples_per_user=4, seed=2)
FEDAVG = replace(FEDSGD, local_training="fedavg", local_epochs=2, batch_size=2, learning_rate=0.1)


def _clients(scenario: Scenario, k: int = 5):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(k, scenario.samples_per_user, 1, 8, 8, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 10, (k, scenario.samples_per_user), generator=generator)
    return build_model("mlp", (1, 8, 8), 10, 0), x, y


@pytest.mark.parametrize("scenario", [FEDSGD, FEDAVG], ids=["fedsgd", "fedavg"])
def test_clients_trained_together_match_one_at_a_time(scenario):
    model, x, y = _clients(scenario)
    together = local_updates(model, x, y, scenario, np.random.default_rng(1))
    rng = np.random.default_rng(1)
    alone = np.stack([local_update(model, x[i], y[i], scenario, rng) for i in range(len(y))])
    assert np.allclose(together, alone, rtol=0, atol=1e-13)
    assert not np.allclose(together[0], together[1])


@pytest.mark.parametrize("scenario", [FEDSGD, FEDAVG], ids=["fedsgd", "fedavg"])
def test_dp_sgd_together_matches_one_at_a_time_and_its_cache_changes_nothing(scenario):
    model, x, y = _clients(scenario)
    rng = np.random.default_rng(3)
    alone = np.stack([dp_sgd_update(model, x[i], y[i], scenario, 0.5, 1.0, rng) for i in range(len(y))])
    cache: dict = {}
    first = dp_sgd_updates(model, x, y, scenario, 0.5, 1.0, np.random.default_rng(3), cache)
    again = dp_sgd_updates(model, x, y, scenario, 0.5, 1.0, np.random.default_rng(3), cache)
    assert np.allclose(first, alone, rtol=0, atol=1e-13) and np.array_equal(first, again)
    fresh = dp_sgd_updates(model, x, y, scenario, 0.5, 1.0, np.random.default_rng(4), cache)
    assert not np.allclose(fresh, first)  # new draws, new noise


def test_the_simulation_trains_dp_sgd_clients_together_with_the_one_at_a_time_answer(monkeypatch):
    defense = GuardedDefense(make_defense("dp-sgd", {"noise_multiplier": 0.3}))
    assert batched_local_training(defense) is not None
    together, _ = simulate(FEDAVG, defense)
    monkeypatch.setattr(simulation, "batched_local_training", lambda defense: None)
    monkeypatch.setattr(simulation, "CLIENT_CHUNK", 1)
    alone_defense = GuardedDefense(make_defense("dp-sgd", {"noise_multiplier": 0.3}))
    alone, _ = simulate(FEDAVG, alone_defense)
    assert np.allclose(together.aggregates, alone.aggregates, rtol=0, atol=1e-12)
    assert alone_defense.privacy(12, 0.5, 6, 1e-5).columns() == defense.privacy(12, 0.5, 6, 1e-5).columns()


def test_only_a_part_that_provides_the_local_training_trains_together():
    dp_sgd = make_defense("dp-sgd", {})
    assert batched_local_training(Defense()) is None
    assert batched_local_training(Composed([make_defense("noisy-counts", {}), dp_sgd])) is dp_sgd

    class OwnTraining(Defense):
        def local_update(self, model, x, y, scenario, rng):
            return None

    assert batched_local_training(Composed([OwnTraining(), dp_sgd])) is None  # the first part's training comes first
