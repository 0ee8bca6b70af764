import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.models import build_model
from benchmark.scenario import Scenario
from benchmark.simulation import local_update, simulate
from benchmark.columns import EPSILON_COLUMNS, EPSILON_TEXT_COLUMNS
from defenses.accounting import Privacy, gaussian_privacy
from defenses.analytics import CoarseAnalytics, NoAnalytics, NoisyCounts, RoundedCounts, TotalsOnly
from benchmark.observation import window_counts, window_lengths
from defenses.base import Defense
from defenses.builtin import BUILTIN_DEFENSES, NoDefense
from defenses.guard import GuardedDefense
from defenses.participation import ModelRefresh, ParticipationPadding, StructuredParticipation
from defenses.privacy import AggregateNoise, DPFedAvg, DPSGD, LDPGaussian as DPGaussian
from defenses.registry import make_defense
from defenses.validate import validate_defense

SMALL = Scenario(name="small", n_users=8, n_rounds=24, participation=0.4, window=4)
FEDAVG = replace(SMALL, local_training="fedavg", samples_per_user=4, batch_size=2, local_epochs=4)
DELTA = 1e-5


def true_counts(truth, window: int) -> np.ndarray:
    return window_counts(truth.participants.astype(bool), window)


def test_existing_names_keep_their_parameters_and_publish_the_new_keys():
    assert make_defense("dp-gaussian", {"noise_multiplier": 0.5, "clip_norm": 2.0}).public_parameters() == {
        "update_noise_std": 1.0, "clip_norm": 2.0}
    assert make_defense("coarse-analytics", {"factor": 4}).public_parameters() == {"window_factor": 4}
    assert make_defense("participation-padding", {"rate": 0.1}).public_parameters() == {
        "padding_rate": 0.1, "padding_masked": False}
    assert BUILTIN_DEFENSES["none"] is NoDefense


def test_rounded_counts_are_multiples_of_the_bucket_never_above_the_truth():
    observation, truth = simulate(SMALL, RoundedCounts(bucket=2))
    exact = true_counts(truth, SMALL.window)
    assert np.all(observation.counts % 2 == 0) and np.all(observation.counts <= exact)
    assert np.all(exact - observation.counts < 2) and observation.totals is None
    assert np.any(observation.counts != exact)
    assert observation.defense_parameters == {"count_bucket": 2}


def test_noisy_counts_stay_in_range_differ_from_the_truth_and_report_their_epsilon():
    observation, truth = simulate(SMALL, NoisyCounts(scale=2.0))
    again, _ = simulate(SMALL, NoisyCounts(scale=2.0))
    assert np.array_equal(observation.counts, again.counts) and observation.counts.dtype == np.int64
    assert observation.counts.min() >= 0 and np.all(observation.counts <= window_lengths(SMALL.n_rounds, SMALL.window))
    assert np.mean(observation.counts != true_counts(truth, SMALL.window)) > 0.3 and observation.totals is None
    guarantee = NoisyCounts(scale=2.0).privacy(24, 0.4, 10, DELTA)
    assert guarantee.epsilon_analytics == 10.0 and math.isnan(guarantee.epsilon)  # user level: 2 x 10 participations / 2


def test_noisy_counts_noise_is_discrete_laplace_of_the_given_scale():
    nobody = np.zeros((200, 20000), dtype=bool)  # 40000 true counts of 0, windows of 100 rounds
    published = NoisyCounts(scale=3.0).transform_analytics(nobody, 100, np.random.default_rng(0)).counts
    # Clipped at 0: P(count > 0) = a / (1 + a), and above 0 the count is geometric with mean 1 / (1 - a), a = e^(-1/3).
    a = math.exp(-1.0 / 3.0)
    assert np.mean(published > 0) == pytest.approx(a / (1 + a), abs=0.01)
    assert np.mean(published[published > 0]) == pytest.approx(1.0 / (1.0 - a), abs=0.1)


@pytest.mark.parametrize("defense, totals", [(TotalsOnly(), True), (NoAnalytics(), False)])
def test_totals_only_and_no_analytics_publish_no_counts(defense, totals):
    observation, truth = simulate(SMALL, GuardedDefense(defense))
    assert observation.counts is None and observation.n_users == SMALL.n_users
    if totals:
        assert np.array_equal(observation.totals, truth.participants.sum(axis=1))
    else:
        assert observation.totals is None


def test_coarse_analytics_counts_sum_to_the_truth():
    observation, truth = simulate(SMALL, CoarseAnalytics(factor=3))
    assert observation.window == 12 and np.array_equal(observation.counts, true_counts(truth, 12))


def test_masked_padding_uploads_cancel_in_the_round_sum_and_cost_bytes():
    masks = ParticipationPadding(masked=True).padded_uploads(3, 50, np.random.default_rng(0))
    assert masks.shape == (3, 50) and np.all(masks.sum(axis=0) == 0.0) and np.all(np.abs(masks[0]) > 0)
    observation, truth = simulate(SMALL, GuardedDefense(ParticipationPadding(rate=0.5, masked=True)))
    undefended, _ = simulate(SMALL, NoDefense())  # padding adds check-ins, never contributors
    assert np.array_equal(observation.aggregates, undefended.aggregates)  # exactly (-0.0 may become 0.0)
    padded = observation.counts.sum() - truth.participants.sum()
    assert padded > 0 and truth.extra_checkins == pytest.approx(padded / truth.participants.sum())
    dim = observation.aggregates.shape[1]
    assert truth.extra_upload_bytes_per_round == pytest.approx(8 * dim * padded / SMALL.n_rounds)
    _, plain = simulate(SMALL, ParticipationPadding(rate=0.5))
    assert plain.extra_checkins > 0 and plain.extra_upload_bytes_per_round == 0


def test_masks_leave_the_round_sum_exactly_unchanged():
    aggregate = np.random.default_rng(1).standard_normal(50)
    masks = ParticipationPadding(masked=True).padded_uploads(4, 50, np.random.default_rng(2))
    assert (aggregate + masks.sum(axis=0)).tobytes() == aggregate.tobytes()


def test_undefended_runs_have_no_overhead():
    _, truth = simulate(SMALL, NoDefense())
    assert truth.extra_checkins == 0 and truth.extra_upload_bytes_per_round == 0


def test_structured_groups_always_participate_together():
    observation, truth = simulate(SMALL, StructuredParticipation(group_size=3))
    participants, groups = truth.participants, np.array(observation.defense_parameters["groups"])
    assert sorted(np.bincount(groups)) == [2, 3, 3]
    for group in range(3):
        members = np.flatnonzero(groups == group)
        assert np.all(participants[:, members] == participants[:, [members[0]]])
        assert np.all(observation.counts[members] == observation.counts[members[0]])
    assert participants.sum() > 0 and observation.defense_parameters["group_size"] == 3


def test_model_refresh_moves_the_model_every_round():
    busy = Scenario(**{**SMALL.to_dict(), "participation": 0.9})
    frozen, _ = simulate(busy, NoDefense())
    assert np.all(frozen.weights == frozen.weights[0])
    refreshed, truth = simulate(busy, GuardedDefense(ModelRefresh()))
    assert np.all(truth.participants.sum(axis=1) > 0)
    assert np.all(np.any(np.diff(refreshed.weights, axis=0) != 0, axis=1))
    assert refreshed.defense_parameters == {"model_refresh": 1, "min_relative_change": 0.0}


def test_model_refresh_every_k_rounds_holds_the_model_in_between():
    busy = Scenario(**{**SMALL.to_dict(), "participation": 0.9})
    observation, _ = simulate(busy, GuardedDefense(ModelRefresh(every=3)))
    moved = np.any(np.diff(observation.weights, axis=0) != 0, axis=1)  # moved[t]: weights differ between t and t + 1
    assert np.array_equal(np.flatnonzero(moved), np.arange(2, busy.n_rounds - 1, 3))
    assert observation.defense_parameters == {"model_refresh": 3, "min_relative_change": 0.0}


def model_and_data(samples: int = 4):
    rng = np.random.default_rng(5)
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    return model, torch.from_numpy(rng.random((samples, 1, 8, 8))), torch.from_numpy(rng.integers(0, 10, samples))


@pytest.mark.parametrize("scenario", [SMALL, replace(FEDAVG, batch_size=4)])  # full batches: the order drawn is moot
def test_dp_sgd_without_noise_or_clipping_is_the_clean_local_update(scenario):
    model, x, y = model_and_data()
    clean = local_update(model, x, y, scenario, np.random.default_rng(3))
    private = DPSGD(noise_multiplier=0.0, clip_norm=1e9).local_update(model, x, y, scenario, np.random.default_rng(3))
    assert np.allclose(private, clean, rtol=1e-9, atol=1e-12)


def test_dp_sgd_clips_each_example_and_leaves_the_model_alone():
    model, x, y = model_and_data()
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    clipped = DPSGD(noise_multiplier=0.0, clip_norm=1e-3).local_update(model, x, y, SMALL, np.random.default_rng(0))
    assert np.linalg.norm(clipped) <= 1e-3 + 1e-12
    assert torch.equal(before, torch.cat([p.detach().reshape(-1) for p in model.parameters()]))


def test_dp_sgd_sends_a_noised_update_deterministic_under_the_seed():
    observation, truth = simulate(SMALL, GuardedDefense(DPSGD(noise_multiplier=1.0, clip_norm=1.0)))
    again, truth_again = simulate(SMALL, DPSGD(noise_multiplier=1.0, clip_norm=1.0))
    assert observation.aggregates.tobytes() == again.aggregates.tobytes()
    clean_sums = truth.participants.astype(float) @ truth.updates
    assert not np.allclose(observation.aggregates, clean_sums, atol=1e-3)
    _, undefended = simulate(SMALL, NoDefense())
    assert truth.updates.tobytes() == undefended.updates.tobytes()  # the truth stays the clean update
    assert observation.defense_parameters == {"example_noise_multiplier": 1.0, "example_clip_norm": 1.0}


def test_dp_sgd_accounts_every_local_epoch_at_example_level():
    defense = DPSGD(noise_multiplier=2.0, clip_norm=1.0)
    untrained = defense.privacy(24, 0.4, 10, DELTA)
    assert math.isnan(untrained.epsilon) and untrained.level == "example"  # no client trained yet
    model, x, y = model_and_data()
    defense.local_update(model, x, y, FEDAVG, np.random.default_rng(0))  # 4 epochs: 4 steps per round
    assert defense.privacy(24, 0.4, 10, DELTA).epsilon == pytest.approx(DPGaussian(1.0).privacy(24, 0.4, 10, DELTA).epsilon)


def test_aggregate_noise_clips_updates_and_noises_each_sum():
    clipped, truth = simulate(SMALL, AggregateNoise(noise_multiplier=0.0, clip_norm=1e-3))
    assert np.all(np.linalg.norm(clipped.aggregates, axis=1) <= truth.participants.sum(axis=1) * 1e-3 + 1e-12)
    noised, _ = simulate(SMALL, AggregateNoise(noise_multiplier=2.0, clip_norm=1e-3))
    assert np.std(noised.aggregates - clipped.aggregates) == pytest.approx(2e-3, rel=0.05)
    assert noised.defense_parameters == {"aggregate_noise_std": 2e-3, "clip_norm": 1e-3}


def test_central_dp_fedavg_hides_nothing_from_the_server():
    """The server adds central DP's noise itself, after it has the sum: it observes the clipped sums whole, at any z."""
    clipped, _ = simulate(SMALL, AggregateNoise(noise_multiplier=0.0, clip_norm=1e-3))
    for cohort in (0, 1000):
        central, _ = simulate(SMALL, DPFedAvg(noise_multiplier=8.0, clip_norm=1e-3, noise_cohort=cohort))
        assert central.aggregates.tobytes() == clipped.aggregates.tobytes()
        assert "aggregate_noise_std" not in central.defense_parameters  # nothing for the adaptive attack to read


@pytest.mark.parametrize("cls", [DPGaussian, AggregateNoise, DPFedAvg])
def test_epsilons_fall_with_noise_and_amplification_never_hurts(cls):
    low, high = (cls(z).privacy(60, 0.3, 25, DELTA) for z in (0.5, 2.0))
    assert math.isnan(low.epsilon_analytics) and low.level == "user"
    for key in ("epsilon", "epsilon_amplified", "epsilon_rdp"):
        assert high.figures[key] < low.figures[key]
    for guarantee in (low, high):
        assert guarantee.epsilon_amplified < guarantee.epsilon
        assert guarantee.epsilon <= guarantee.epsilon_rdp <= 1.1 * guarantee.epsilon  # RDP: a looser cross-check


def test_epsilon_edge_cases_are_documented_values():
    tiny = DPGaussian(0.001).privacy(60, 0.3, 25, DELTA)
    assert math.isfinite(tiny.epsilon) and tiny.epsilon_amplified == tiny.epsilon  # no PLD below z = 0.1
    assert "amplification not computed (noise multiplier per participation 0.001 < 0.1)" in tiny.accounting
    none = DPGaussian(0.0).privacy(60, 0.3, 25, DELTA)
    assert (none.epsilon, none.epsilon_amplified, none.epsilon_rdp) == (math.inf,) * 3
    assert DPGaussian(1.0).privacy(60, 0.3, 0, DELTA).epsilon == 0.0


def test_a_plugin_overrides_one_privacy_hook_and_the_row_gets_every_column():
    class Fixed(Defense):
        def privacy(self, n_rounds, participation, max_participations, delta):
            return Privacy(epsilon=3, level="event", accounting="test")

    columns = GuardedDefense(Fixed()).privacy(10, 0.5, 4, DELTA).columns()
    assert tuple(columns) == EPSILON_COLUMNS + EPSILON_TEXT_COLUMNS
    assert columns["epsilon"] == 3.0 and type(columns["epsilon"]) is float and math.isnan(columns["epsilon_rdp"])
    assert (columns["epsilon_level"], columns["epsilon_accounting"]) == ("event", "test")
    assert NoDefense().privacy(10, 0.5, 4, DELTA).columns()["epsilon_level"] == "—"


def test_readme_privacy_example_reports_the_ldp_gaussian_account(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"<!-- example-privacy -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) < 40
    path = tmp_path / "my_defense.py"
    path.write_text(code)
    validate_defense(lambda: make_defense(f"{path}:ClippedNoise", {"z": 0.5}))
    columns = GuardedDefense(make_defense(f"{path}:ClippedNoise", {"z": 0.5})).privacy(60, 0.3, 25, DELTA).columns()
    assert columns == DPGaussian(0.5).privacy(60, 0.3, 25, DELTA).columns() and columns["epsilon"] > 0


# Every built-in's privacy columns at (n_rounds, participation, max_participations) = (60, 0.3, 25), delta 1e-5,
# recorded from the three hooks (epsilon, epsilons, accounting) the one `privacy` hook replaced: rows must not change.
AMPLIFIED = "Poisson q=0.3 amplified"
GAUSSIAN = f"PLD, replace-one, no amplification (participation observable); {AMPLIFIED}; RDP cross-check"
UNAMPLIFIED = GAUSSIAN.replace(AMPLIFIED, "Poisson q=0.3, amplification not computed ({})")
COUNTS = "discrete Laplace on counts, replace-one: L1 sensitivity = 2 x max participations; updates not DP"
CENTRAL = "; central: the server adds the noise after it has the sum, so the epsilon binds the models' observers, not the server"
COHORT = CENTRAL + "; noise calibrated for a cohort of {}, a smaller one simulated"
NO_DP = (math.nan, math.nan, math.nan, math.nan, "—", "no DP guarantee")
RECORDED = [
    ("none", {}, NO_DP),
    ("participation-padding", {"rate": 0.1}, NO_DP),
    ("composed", {"defenses": [{"name": "rounded-counts", "bucket": 2}]}, NO_DP),
    ("dp-fedavg", {"noise_multiplier": 0.8, "noise_cohort": 1000},
     (130.5767822265625, 37.50349081702045, 136.06337010237715, math.nan, "user", GAUSSIAN + COHORT.format(1000))),
    ("ldp-gaussian", {"noise_multiplier": 0.5},
     (284.39208984375, 76.39158765462537, 294.8612600716533, math.nan, "user", GAUSSIAN)),
    ("ldp-gaussian", {"noise_multiplier": 0.05},
     (20852.0, 20852.0, 22111.778257578855, math.nan, "user",
      UNAMPLIFIED.format("noise multiplier per participation 0.05 < 0.1"))),
    ("dp-aggregate", {"noise_multiplier": 2.0},
     (33.103759765625, 11.754876834845275, 35.08175401905626, math.nan, "user", GAUSSIAN)),
    ("dp-sgd", {"noise_multiplier": 1.0},
     (math.nan, math.nan, math.nan, math.nan, "example", UNAMPLIFIED.format("no noise multiplier"))),
    ("noisy-counts", {"scale": 4.0}, (math.nan, math.nan, math.nan, 12.5, "user", COUNTS)),
    ("composed", {"defenses": [{"name": "ldp-gaussian", "noise_multiplier": 1.0},
                               {"name": "dp-aggregate", "noise_multiplier": 2.0}, {"name": "noisy-counts", "scale": 4.0}]},
     (33.103759765625, 11.754876834845275, 35.08175401905626, 12.5, "user",
      f"dp-aggregate: {GAUSSIAN}; the other DP parts: ldp-gaussian (user, epsilon 91.82); epsilon_analytics: the "
      "counts' noise")),
    ("composed", {"defenses": [{"name": "dp-sgd", "noise_multiplier": 1.0},
                               {"name": "dp-fedavg", "noise_multiplier": 1.0, "noise_cohort": 100}]},
     (91.81732177734375, 27.842182111117634, 96.11630842505602, math.nan, "user",  # dp-sgd's steps unknown here
      f"dp-fedavg: {GAUSSIAN}{COHORT.format(100)}")),
    ("composed", {"defenses": [{"name": "ldp-gaussian", "noise_multiplier": 1.0}, {"name": "rounded-counts", "bucket": 2}]},
     (91.81732177734375, 27.842182111117634, 96.11630842505602, math.nan, "user", f"ldp-gaussian: {GAUSSIAN}")),
]


def same_number(value: object, recorded: object) -> bool:
    """Equal, or (floats) within a relative 1e-9: the accountants' numpy exp/log round differently on processors with
    AVX-512 (epsilon_amplified of dp-fedavg below: 37.50349081702045 recorded, 37.50349081764904 on one without)."""
    if isinstance(recorded, float) and math.isnan(recorded):
        return isinstance(value, float) and math.isnan(value)
    if isinstance(recorded, float):
        return isinstance(value, float) and math.isclose(value, recorded, rel_tol=1e-9, abs_tol=0.0)
    return value == recorded


@pytest.mark.parametrize("name, parameters, expected", RECORDED)
def test_builtin_privacy_columns_are_the_recorded_values(name, parameters, expected):
    columns = GuardedDefense(make_defense(name, parameters)).privacy(60, 0.3, 25, DELTA).columns()
    assert tuple(columns) == EPSILON_COLUMNS + EPSILON_TEXT_COLUMNS
    for column, value in zip(columns, expected):
        assert same_number(columns[column], value), (column, columns[column], value)


def composed(*entries: dict) -> Defense:
    return make_defense("composed", {"defenses": list(entries)})


def test_composition_applies_both_defenses():
    defense = composed({"name": "dp-gaussian", "noise_multiplier": 0.5}, {"name": "rounded-counts", "bucket": 2})
    observation, truth = simulate(SMALL, GuardedDefense(defense))
    noisy, _ = simulate(SMALL, DPGaussian(0.5))
    assert np.all(observation.counts % 2 == 0) and observation.totals is None
    assert observation.aggregates.tobytes() == noisy.aggregates.tobytes()
    assert observation.defense_parameters == {"update_noise_std": 0.5, "clip_norm": 1.0, "count_bucket": 2}


def test_composition_pipes_participants_and_unions_check_ins():
    defense = composed({"name": "structured-participation", "group_size": 2}, {"name": "participation-padding", "rate": 0.5})
    observation, truth = simulate(SMALL, defense)
    groups = np.array(observation.defense_parameters["groups"])
    assert all(np.all(truth.participants[:, groups == g] == truth.participants[:, groups == g][:, :1]) for g in range(4))
    assert np.all(observation.counts >= true_counts(truth, SMALL.window)) and truth.extra_checkins > 0


def test_composition_takes_the_smallest_epsilon_of_its_parts():
    defense = composed({"name": "dp-gaussian", "noise_multiplier": 1.0}, {"name": "dp-aggregate", "noise_multiplier": 2.0},
                       {"name": "noisy-counts", "scale": 4.0})
    guarantee = defense.privacy(60, 0.3, 25, DELTA)
    assert guarantee.figures == {**DPGaussian(2.0).privacy(60, 0.3, 25, DELTA).figures, "epsilon_analytics": 2 * 25 / 4.0}
    assert "updates not DP" not in guarantee.accounting and guarantee.accounting.startswith("dp-aggregate: ")


def test_a_composition_reports_one_level_and_what_binds_the_server():
    # dp-sgd's example-level 8.4 beside dp-aggregate's user-level 52.8 had read "8.4 example/user"; a central
    # dp-fedavg's 3.7, which binds only the models' observers, had headed ldp-gaussian's 154 against the server.
    sgd = composed({"name": "dp-sgd", "noise_multiplier": 4.0}, {"name": "dp-aggregate", "noise_multiplier": 1.0})
    sgd.parts[0].count_steps(replace(SMALL, local_training="fedsgd"))
    guarantee = sgd.privacy(40, 0.3, 12, DELTA)
    user = make_defense("dp-aggregate", {"noise_multiplier": 1.0}).privacy(40, 0.3, 12, DELTA)
    assert (guarantee.epsilon, guarantee.level) == (user.epsilon, "user") and "dp-sgd (example" in guarantee.accounting
    central = composed({"name": "dp-fedavg", "noise_multiplier": 8.0, "noise_cohort": 1000},
                       {"name": "ldp-gaussian", "noise_multiplier": 0.5}).privacy(40, 0.3, 12, DELTA)
    local = make_defense("ldp-gaussian", {"noise_multiplier": 0.5}).privacy(40, 0.3, 12, DELTA)
    assert central.epsilon == local.epsilon and central.binds_server and "not binding the server" in central.accounting
    alone = composed({"name": "dp-fedavg", "noise_multiplier": 8.0}, {"name": "rounded-counts"}).privacy(40, 0.3, 12, DELTA)
    assert not alone.binds_server and alone.epsilon < local.epsilon  # nothing else: the central figure, marked


def test_huge_or_absent_noise_gives_finite_figures():
    assert make_defense("dp-aggregate", {"noise_multiplier": 1e160}).privacy(40, 0.3, 12, DELTA).epsilon == 0.0  # overflowed
    assert gaussian_privacy(0.0, "user", 40, 0.3, 0, DELTA).epsilon == 0.0  # nobody took part: no loss (was inf)


@pytest.mark.parametrize("entries, message", [
    ([{"name": "dp-gaussian", "clip_norm": 1.0}, {"name": "dp-aggregate", "clip_norm": 2.0}], "'clip_norm' is both 1.0 and 2.0"),
    ([{"name": "coarse-analytics"}, {"name": "rounded-counts"}], "coarse-analytics and rounded-counts both change"),
    ([], "at least one"),
    ([{"name": "no-such-defense"}], "unknown defense"),
])
def test_composition_rejects_clashes(entries, message):
    with pytest.raises(BenchmarkError, match=message):
        composed(*entries)


COMPOSED = {"defenses": [{"name": "dp-sgd"}, {"name": "participation-padding", "masked": True}, {"name": "model-refresh"}]}


@pytest.mark.parametrize("name", sorted(BUILTIN_DEFENSES))
def test_validate_defense_passes_every_builtin(name):
    validate_defense(lambda: make_defense(name, COMPOSED if name == "composed" else None))


PLUGINS = {  # a method of the plugin class, and the error it must get
    "broken": ("def transform_aggregate(self, aggregate, rng):\n        return aggregate[:1]",
               "hook transform_aggregate must return"),
    "nan": ("def padded_uploads(self, count, dim, rng):\n        return np.full((count, dim), np.nan)",
            "hook padded_uploads returned NaN"),
    "random": ("def transform_update(self, update, rng):\n        return update + np.random.default_rng().normal()",
               "hook transform_update is not deterministic"),
    "privacy-dict": ("def privacy(self, n_rounds, participation, max_participations, delta):\n        return {'epsilon': 1.0}",
                     "hook privacy must return defenses.accounting.Privacy"),
    "privacy-text": ("def privacy(self, n_rounds, participation, max_participations, delta):\n"
                     "        return Privacy(epsilon='1', level='user')", "hook privacy must report every epsilon as a number"),
    "privacy-level": ("def privacy(self, n_rounds, participation, max_participations, delta):\n"
                      "        return Privacy(epsilon=1.0)", "hook privacy reports an epsilon without its level"),
    "privacy-amplified-alone": ("def privacy(self, n_rounds, participation, max_participations, delta):\n"
                                "        return Privacy(epsilon_amplified=2.0, level='user')",
                                "hook privacy reports epsilon_amplified or epsilon_rdp without epsilon"),
    "privacy-raises": ("def privacy(self, n_rounds, participation, max_participations, delta):\n        return 1 / 0",
                       "hook privacy raised ZeroDivisionError"),
    "privacy-random": ("def privacy(self, n_rounds, participation, max_participations, delta):\n"
                       "        return Privacy(epsilon=np.random.default_rng().random(), level='user')",
                       "hook privacy is not deterministic"),
}
PLUGIN_FILE = "import numpy as np\n\nfrom defenses.accounting import Privacy\nfrom defenses.base import Defense\n\n\nclass Bad(Defense):\n    name = 'bad'\n\n    {}\n"


@pytest.mark.parametrize("kind", sorted(PLUGINS))
def test_validate_defense_names_the_bad_hook_of_a_plugin(tmp_path, kind):
    body, message = PLUGINS[kind]
    path = tmp_path / f"{kind}.py"
    path.write_text(PLUGIN_FILE.format(body))
    with pytest.raises(BenchmarkError, match=f"defense 'bad': {message}"):
        validate_defense(lambda: make_defense(f"{path}:Bad"))


def test_a_vanishing_noise_multiplier_has_infinite_epsilon_not_an_error():
    """ldp-gaussian(noise_multiplier=1e-320) stopped the run: its privacy hook divided by the subnormal multiplier
    (ZeroDivisionError, scipy overflow warnings on stderr); epsilon is infinite there, as at 0."""
    import warnings

    from defenses.accounting import gaussian_privacy

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for z in (1e-320, 1e-12, 0.0):
            columns = gaussian_privacy(z, "user", 1200, 0.3, 40, 1e-5).columns()
            assert columns["epsilon"] == columns["epsilon_amplified"] == math.inf


def test_the_task_clock_firing_inside_a_hook_is_the_tasks_timeout_not_the_defenses_failure():
    """The runner's --task-timeout raises TaskTimeout wherever the task is; inside user code the guard used to turn
    it into "hook ... raised TaskTimeout" (a failed defense, the task's timeout unreported as such)."""
    import signal
    import time

    from benchmark.errors import TaskTimeout

    class Slow(Defense):
        name = "slow"

        def transform_aggregate(self, aggregate, rng):
            time.sleep(5)
            return aggregate

    def expire(signum, frame):
        raise TaskTimeout("timed out after 0.1 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    try:
        with pytest.raises(TaskTimeout):
            GuardedDefense(Slow()).transform_aggregate(np.zeros(3), np.random.default_rng(0))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Reported(Defense):
    """A plugin-like part that reports a fixed guarantee."""

    name = "reported"

    def __init__(self, epsilon: float, level: str) -> None:
        self.guarantee = Privacy(epsilon=epsilon, epsilon_amplified=epsilon, epsilon_rdp=epsilon, level=level,
                                 accounting="reported")

    def privacy(self, n_rounds, participation, max_participations, delta):
        return self.guarantee


def test_a_composition_prefers_a_finite_epsilon_and_reads_a_joined_level_at_each_level():
    from defenses.composition import Composed

    dp = make_defense("dp-aggregate", {"noise_multiplier": 1.0})
    finite = dp.privacy(40, 0.3, 12, DELTA)
    guarantee = Composed([_Reported(math.inf, "user"), dp]).privacy(40, 0.3, 12, DELTA)
    assert guarantee.epsilon == finite.epsilon  # it had reported inf
    joined = Composed([_Reported(1.0, "example/user"), dp]).privacy(40, 0.3, 12, DELTA)
    assert (joined.epsilon, joined.level) == (1.0, "user")  # it holds at both levels: it had lost to 52.8
