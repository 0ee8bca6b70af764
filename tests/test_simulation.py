import numpy as np
import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.scenario import Scenario
from benchmark.simulation import simulate
from defenses.base import Defense
from defenses.builtin import CoarseAnalytics, LDPGaussian as DPGaussian, NoDefense, ParticipationPadding
from defenses.guard import GuardedDefense

SMALL = Scenario(name="small", n_users=8, n_rounds=24, participation=0.4, window=4)


def test_same_seed_same_arrays_bit_for_bit():
    first, truth_a = simulate(SMALL, DPGaussian(0.5, 1.0))
    second, truth_b = simulate(SMALL, DPGaussian(0.5, 1.0))
    assert first.aggregates.tobytes() == second.aggregates.tobytes()
    assert np.array_equal(first.counts, second.counts)
    assert np.array_equal(truth_a.participants, truth_b.participants)
    third, _ = simulate(Scenario(**{**SMALL.to_dict(), "seed": 1}), DPGaussian(0.5, 1.0))
    assert not np.array_equal(first.aggregates, third.aggregates)


def test_observation_is_the_sum_of_true_updates_and_holds_no_truth():
    observation, truth = simulate(SMALL, NoDefense())
    assert np.allclose(observation.aggregates, truth.participants.astype(float) @ truth.updates, atol=1e-12)
    assert not hasattr(observation, "participants") and not hasattr(observation, "images")
    assert observation.counts.shape == (8, 6)
    assert np.array_equal(observation.counts.sum(axis=1), truth.participants.sum(axis=0))


def test_a_trained_model_takes_each_rounds_mean_aggregate_with_the_learning_rate():
    scenario = Scenario(**{**SMALL.to_dict(), "local_training": "fedavg", "samples_per_user": 4, "batch_size": 2,
                           "model_policy": "trained", "learning_rate": 0.5})
    observation, truth = simulate(scenario, NoDefense())
    weights, per_round = observation.weights, truth.participants.sum(axis=1)
    for t in range(scenario.n_rounds - 1):
        step = 0.5 * observation.aggregates[t] / per_round[t] if per_round[t] else 0.0
        assert np.allclose(weights[t + 1], weights[t] - step, rtol=0, atol=1e-12)
    assert np.any(per_round > 0) and not np.array_equal(weights[0], weights[-1])


def test_dp_gaussian_clips_and_noises_each_update():
    clean, truth = simulate(SMALL, NoDefense())
    noisy, _ = simulate(SMALL, DPGaussian(noise_multiplier=0.0, clip_norm=1e-3))
    per_round = truth.participants.sum(axis=1)
    assert np.all(np.linalg.norm(noisy.aggregates, axis=1) <= per_round * 1e-3 + 1e-12)
    noised, _ = simulate(SMALL, DPGaussian(noise_multiplier=1.0, clip_norm=1.0))
    assert np.linalg.matrix_rank(noised.aggregates) > np.linalg.matrix_rank(clean.aggregates)
    epsilon = DPGaussian(1.0, 1.0).privacy(24, 0.4, 10, 1e-5).epsilon
    assert np.isfinite(epsilon) and epsilon > DPGaussian(4.0, 1.0).privacy(24, 0.4, 10, 1e-5).epsilon


def test_coarse_analytics_publishes_longer_windows():
    observation, truth = simulate(SMALL, CoarseAnalytics(factor=3))
    assert observation.window == 12 and observation.counts.shape == (8, 2)
    assert np.array_equal(observation.counts.sum(axis=1), truth.participants.sum(axis=0))


def test_padding_counts_users_who_contribute_nothing():
    plain, truth_plain = simulate(SMALL, NoDefense())
    padded, truth = simulate(SMALL, ParticipationPadding(rate=0.5))
    assert padded.counts.sum() > truth.participants.sum()
    assert np.allclose(padded.aggregates, truth.participants.astype(float) @ truth.updates, atol=1e-12)


def test_synthetic_updates_have_the_requested_dimension():
    scenario = Scenario(**{**SMALL.to_dict(), "update_kind": "synthetic", "synthetic_dim": 30})
    observation, truth = simulate(scenario, NoDefense())
    assert observation.aggregates.shape == (24, 30) and truth.images.size == 0


@pytest.mark.parametrize(
    "field, value",
    [("n_users", 1), ("participation", 0.0), ("participation", 1.5), ("window", 0), ("window", 100),
     ("dataset", "imagenet"), ("model", "resnet"), ("local_training", "sgd"), ("model_policy", "x"), ("seed", -1),
     ("server_step", "tiny"), ("server_step", 0.0), ("server_step", True)],
)
def test_invalid_scenario_values_raise_one_clear_error(field, value):
    with pytest.raises(BenchmarkError, match=field.split("_")[0]):
        Scenario(**{**SMALL.to_dict(), field: value})


class Exploding(Defense):
    name = "exploding"

    def transform_aggregate(self, aggregate, rng):
        raise RuntimeError("boom")


class WrongShape(Defense):
    name = "wrong-shape"

    def transform_update(self, update, rng):
        return update[:-1]


class NotFinite(Defense):
    name = "not-finite"

    def transform_update(self, update, rng):
        return update * np.nan


class MutatingClient(Defense):
    name = "mutating-client"

    def local_update(self, model, x, y, scenario, rng):
        with torch.no_grad():
            next(model.parameters()).add_(1.0)


class ShortUpload(Defense):
    name = "short-upload"

    def choose_participants(self, selected, round_index, rng):
        return selected, np.ones_like(selected)

    def padded_uploads(self, count, dim, rng):
        return np.zeros((count, dim - 1))


class ShortGroups(Defense):
    name = "short-groups"

    def public_parameters(self):
        return {"groups": [0, 0, 1, 1]}  # 4 users' groups for the scenario's 8: the adaptive attack had ignored them


@pytest.mark.parametrize("defense, message", [
    (ShortGroups(), "public_parameters gives groups for 4 users; the scenario has 8"),
    (Exploding(), "hook transform_aggregate raised RuntimeError: boom"),
    (WrongShape(), "hook transform_update must return a numeric array"),
    (NotFinite(), "hook transform_update returned NaN"),
    (MutatingClient(), "hook local_update changed the global model"),
    (ShortUpload(), "hook padded_uploads must return a numeric array of shape"),
])
def test_a_broken_defense_gets_one_error_naming_the_hook(defense, message):
    with pytest.raises(BenchmarkError, match=message):
        simulate(SMALL, GuardedDefense(defense))
