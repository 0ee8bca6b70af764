"""The adaptive attack reads a defense's public parameters and beats the attack that takes analytics at face value."""

import numpy as np
import pytest

from dataclasses import replace

from attacks.adaptive import read_defense, recover
from attacks.recovery import run_attacks
from benchmark.observation import Observation
from benchmark.scoring import score_recovery
from attacks.disaggregation import disaggregate
from attacks.settings import AttackSettings
from benchmark.synthetic import make_instance
from benchmark.observation import window_counts

SETTINGS = AttackSettings(time_limit=2.0, budget=8.0)
N_USERS, N_ROUNDS, WINDOW = 20, 60, 5


@pytest.fixture(scope="module")
def instance():
    return make_instance(N_USERS, N_ROUNDS, WINDOW, 0.3, seed=1)


def _published(instance, kind: str, strength: float) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(0)
    participants = instance.participants.astype(bool)
    if kind == "rounded":
        return strength * (instance.counts // strength), {"count_bucket": strength}
    padding = (rng.random(participants.shape) < strength) & ~participants
    return window_counts(participants | padding, WINDOW), {"padding_rate": strength}


def _exact_rate(instance, counts: np.ndarray, parameters: dict, adaptive: bool) -> float:
    if adaptive:
        reading = read_defense(parameters, counts, N_ROUNDS, WINDOW, None, SETTINGS)
        result = disaggregate(instance.aggregates, reading.counts, WINDOW, None, reading.settings, counts_high=reading.counts_high)
    else:
        result = disaggregate(instance.aggregates, counts, WINDOW, None, SETTINGS)
    return float((result.participants == instance.participants).all(axis=0).mean())


@pytest.mark.parametrize(("kind", "strength"), [("rounded", 2), ("padding", 0.1)])
def test_adaptive_attack_beats_the_static_one(instance, kind, strength):
    counts, parameters = _published(instance, kind, strength)
    static = _exact_rate(instance, counts, parameters, adaptive=False)
    adaptive = _exact_rate(instance, counts, parameters, adaptive=True)
    assert static <= 0.1
    assert adaptive >= 0.9


@pytest.mark.parametrize(("kind", "strength", "coverage"), [("rounded", 2, 1.0), ("rounded", 3, 1.0), ("padding", 0.1, 0.99), ("padding", 0.3, 0.99)])
def test_count_bounds_contain_the_true_counts(instance, kind, strength, coverage):
    """Rounding gives certain bounds; padding's lower bounds hold with probability COUNT_CONFIDENCE (0.99)."""
    counts, parameters = _published(instance, kind, strength)
    reading = read_defense(parameters, counts, N_ROUNDS, WINDOW, instance.totals, SETTINGS)
    inside = (reading.counts <= instance.counts) & (instance.counts <= reading.counts_high)
    assert inside.mean() >= coverage
    assert reading.counts_high.max() <= WINDOW


def test_no_parameters_means_exact_counts(instance):
    reading = read_defense({}, instance.counts, N_ROUNDS, WINDOW, instance.totals, SETTINGS)
    assert reading.counts_high is None
    assert np.array_equal(reading.counts, instance.counts)
    assert reading.totals is instance.totals
    assert reading.settings == SETTINGS


def test_declared_noise_searches_and_keeps_best_candidates(instance):
    """Declared noise switches to noise mode with a finite tolerance: the search runs (it used to be skipped)."""
    reading = read_defense({"aggregate_noise_std": 0.1}, instance.counts, N_ROUNDS, WINDOW, None, SETTINGS)
    assert reading.settings.noise and reading.settings.accepted_residual < 1.0
    observation = _observation(instance, instance.aggregates, {"aggregate_noise_std": 1e-9})
    result = recover(observation, replace(SETTINGS, adaptive=True))
    assert all(status in ("unique", "found") for status in result.status)
    assert (result.participants == instance.participants).all(axis=0).mean() >= 0.9


def _observation(instance, aggregates, parameters, counts=None) -> Observation:
    return Observation(
        aggregates=aggregates, n_users=N_USERS, counts=instance.counts if counts is None else counts, window=WINDOW,
        totals=None, weights=np.zeros((0, 0)), model="none", image_shape=(0, 0, 0), n_classes=0, samples_per_user=1,
        local_training="fedsgd", learning_rate=1.0, local_epochs=1, batch_size=1, defense_parameters=parameters,
    )


def test_padding_drops_inflated_totals(instance):
    counts, parameters = _published(instance, "padding", 0.2)
    reading = read_defense(parameters, counts, N_ROUNDS, WINDOW, instance.totals, SETTINGS)
    assert reading.totals is None


def test_bounds_never_accept_the_empty_column(instance):
    """Every user's lower bounds are 0 here, so the empty column fits everything; it must not be the answer."""
    low = np.zeros_like(instance.counts)
    result = disaggregate(instance.aggregates, low, WINDOW, None, SETTINGS, counts_high=instance.counts)
    found = [user for user, status in enumerate(result.status) if status == "found"]
    assert found
    assert np.all(result.participants[:, found].sum(axis=0) > 0)


def test_without_per_user_counts_nothing_is_attributed():
    from benchmark.scenario import Scenario
    from benchmark.simulation import simulate
    from defenses.analytics import TotalsOnly

    scenario = Scenario(n_users=8, n_rounds=24, window=3, participation=0.4, update_kind="synthetic")
    observation, _ = simulate(scenario, TotalsOnly())
    for adaptive in (False, True):
        result = recover(observation, AttackSettings(adaptive=adaptive))
        assert result.status == ("unattributed",) * 8
        assert not result.participants.any() and result.participants.shape == (24, 8)


def test_fixed_groups_recover_each_group_sum_split_evenly():
    from benchmark.scenario import Scenario
    from benchmark.simulation import simulate
    from defenses.participation import StructuredParticipation

    scenario = Scenario(n_users=12, n_rounds=48, window=4, participation=0.4, update_kind="synthetic")
    observation, truth = simulate(scenario, StructuredParticipation(group_size=3))
    result = recover(observation, AttackSettings(adaptive=True, time_limit=1.0))
    assert np.array_equal(result.participants, truth.participants)
    groups = np.asarray(observation.defense_parameters["groups"])  # random, seeded, published
    assert sorted(np.bincount(groups)) == [3, 3, 3, 3]
    group_sums = np.stack([truth.updates[groups == g].sum(axis=0) for g in range(4)])
    assert np.allclose(result.updates, group_sums[groups] / 3)


def test_published_groups_are_read_in_any_order():
    """`groups` (each user's group index) overrides consecutive ids: members share one column and one sum."""
    from benchmark.scenario import Scenario
    from benchmark.simulation import simulate
    from defenses.base import Defense

    groups = np.array([2, 0, 1, 0, 3, 1, 2, 3])

    class Shuffled(Defense):
        def public_parameters(self) -> dict:
            return {"group_size": 2, "groups": groups.tolist()}

        def choose_participants(self, selected, round_index, rng):
            leader = np.array([np.flatnonzero(groups == g)[0] for g in groups])
            return selected[leader], selected[leader]

    scenario = Scenario(n_users=8, n_rounds=40, window=4, participation=0.4, update_kind="synthetic")
    observation, truth = simulate(scenario, Shuffled())
    result = recover(observation, AttackSettings(adaptive=True, time_limit=1.0))
    assert np.array_equal(result.participants, truth.participants)
    sums = np.stack([truth.updates[groups == g].sum(axis=0) for g in groups])
    assert np.allclose(result.updates, sums / 2)


SYNTHETIC = dict(n_users=12, n_rounds=48, window=4, participation=0.35, update_kind="synthetic", synthetic_dim=30)
EXPLOITED = ("rounded-counts", "participation-padding", "noisy-counts", "totals-only", "no-analytics")


@pytest.mark.parametrize(("name", "parameters"), [
    ("none", {}),
    ("dp-gaussian", {"noise_multiplier": 0.001, "clip_norm": 100.0}),
    ("dp-aggregate", {"noise_multiplier": 0.001, "clip_norm": 100.0}),
    ("coarse-analytics", {"factor": 3}),
    ("rounded-counts", {"bucket": 2}),
    ("noisy-counts", {"scale": 1.0}),
    ("totals-only", {}),
    ("no-analytics", {}),
    ("participation-padding", {"rate": 0.1}),
    ("structured-participation", {"group_size": 2}),
    ("model-refresh", {"every": 1}),
])
def test_the_adaptive_attacks_never_score_below_the_static_one(name, parameters):
    """Defense by defense: what reads the public parameters (adaptive, anonymous) is never weaker than the static
    attack, and beats it by far where a parameter (or the absence of counts) is there to exploit."""
    from benchmark.scenario import Scenario
    from benchmark.simulation import simulate
    from defenses.registry import make_defense

    observation, truth = simulate(Scenario(**SYNTHETIC), make_defense(name, parameters))
    success = {r.attack: score_recovery(r, truth)["attack_success"] for r in run_attacks(observation, SETTINGS)}
    static = success.pop("static", 0.0)  # no counts: the static attack has nothing to run on
    assert max(success.values()) >= static
    if name in EXPLOITED:
        assert max(success.values()) >= static + 0.3


def test_every_attack_shares_one_decomposition_of_the_aggregates_with_the_same_answers(monkeypatch):
    """Under noise the static, adaptive and anonymous attacks (and the adaptive refinement) read one SVD of the
    aggregates; the prefix attack one of its own rounds."""
    from attacks import geometry, recovery
    from benchmark.scenario import Scenario
    from benchmark.simulation import simulate
    from defenses.registry import make_defense

    observation, _ = simulate(Scenario(n_users=12, n_rounds=48, participation=0.4, window=4, seed=3),
                              make_defense("rounded-counts", {"bucket": 2}))
    calls = []
    original = geometry.left_singular

    def counting(aggregates, rank_bound=None):
        calls.append(aggregates.shape)
        return original(aggregates, rank_bound)

    monkeypatch.setattr(geometry, "left_singular", counting)
    monkeypatch.setattr(recovery, "left_singular", counting)
    shared = run_attacks(observation, SETTINGS)
    assert calls == [(48, observation.aggregates.shape[1]), (24, observation.aggregates.shape[1])]
    # The prefix runs static and adaptive on the first 24 rounds (1/4 of 48 is not over 12 users)
    assert [r.attack for r in shared] == ["static", "adaptive", "anonymous", "prefix", "prefix"]
    monkeypatch.setattr(recovery, "recover", lambda o, s, subspace=None, plain=None: recover(o, s))  # each its own SVD
    alone = run_attacks(observation, SETTINGS)
    assert len(calls) > 2
    for one, other in zip(shared, alone):
        assert np.array_equal(one.columns, other.columns) and np.array_equal(one.updates, other.updates)


def test_the_adaptive_attack_reuses_the_static_search_where_the_reading_changes_nothing(monkeypatch):
    """Under DP noise the static attack already assumes noise: the adaptive one refines its search rather than
    running the same search again, with the same answer as running it again."""
    from attacks import adaptive
    from benchmark.scenario import Scenario
    from benchmark.simulation import simulate
    from defenses.registry import make_defense

    observation, _ = simulate(Scenario(**SYNTHETIC), make_defense("ldp-gaussian", {"noise_multiplier": 0.01, "clip_norm": 1.0}))
    settings = replace(SETTINGS, noise=True)
    static = recover(observation, settings)
    searches = []
    original = adaptive.disaggregate
    monkeypatch.setattr(adaptive, "disaggregate", lambda *a, **k: searches.append(1) or original(*a, **k))
    reused = recover(observation, replace(settings, adaptive=True), plain=static)
    assert searches == []
    again = recover(observation, replace(settings, adaptive=True))
    assert searches == [1]
    assert np.array_equal(reused.participants, again.participants) and np.allclose(reused.updates, again.updates)
    rounded, _ = simulate(Scenario(**SYNTHETIC), make_defense("rounded-counts", {"bucket": 2}))
    plain = recover(rounded, SETTINGS)
    searches.clear()
    recover(rounded, replace(SETTINGS, adaptive=True), plain=plain)  # the reading widens the counts: a search of its own
    assert searches == [1]
