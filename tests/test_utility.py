"""The utility track (benchmark/utility.py) and DP done right (defenses/privacy.py, defenses/accounting.py)."""

import json
from dataclasses import replace
import math

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.scoring import DELTA
from benchmark.utility import UtilityTask, split, train, trains_like_undefended, utility_epsilon, utility_scores
from defenses.accounting import Privacy, gaussian_privacy
from defenses.base import Defense
from defenses.guard import GuardedDefense
from defenses.registry import make_defense
from tests.conftest import TINY_CELL

# A few seconds: 60 clients, ~10 a round, 12 rounds.
TINY = UtilityTask(name="tiny", n_clients=60, cohort=10, n_rounds=12, samples_per_client=30, batch_size=10)


def scores(name: str, parameters: dict, seed: int = 0, task: UtilityTask = TINY) -> dict:
    defense = GuardedDefense(make_defense(name, parameters))
    return utility_scores(task, seed, json.dumps([name, parameters]), defense)


def test_the_task_learns_and_dp_noise_costs_utility() -> None:
    clean = scores("none", {})
    assert clean["test_accuracy"] > 0.4  # ten classes: chance is 0.1
    noisy = scores("ldp-gaussian", {"noise_multiplier": 1.0, "clip_norm": 1.0})
    assert noisy["test_accuracy"] < clean["test_accuracy"] - 0.1
    assert noisy["utility_drop"] == pytest.approx(noisy["test_accuracy_undefended"] - noisy["test_accuracy"])
    assert noisy["test_accuracy_undefended"] == clean["test_accuracy"]  # paired: same task, same seed
    assert noisy["utility_task"].startswith("tiny: fashion-mnist, 60 clients")


def test_same_seed_same_accuracy_and_seeds_differ() -> None:
    defense = make_defense("dp-fedavg", {"noise_multiplier": 1.0, "noise_cohort": 100})
    first = train(TINY, GuardedDefense(defense), 3)
    assert train(TINY, GuardedDefense(make_defense("dp-fedavg", {"noise_multiplier": 1.0, "noise_cohort": 100})), 3) == first
    assert train(TINY, Defense(), 3) != train(TINY, Defense(), 4)


def test_dp_sgd_trains_batched_and_costs_utility() -> None:
    clean, private = scores("none", {}), scores("dp-sgd", {"noise_multiplier": 3.0, "clip_norm": 0.1})
    assert 0.1 < private["test_accuracy"] < clean["test_accuracy"]


def test_only_defenses_that_touch_training_get_their_own_run() -> None:
    untouched = [("none", {}), ("model-refresh", {"every": 2}), ("noisy-counts", {}), ("totals-only", {}),
                 ("composed", {"defenses": [{"name": "rounded-counts"}, {"name": "model-refresh"}]})]
    touched = [("dp-fedavg", {}), ("ldp-gaussian", {}), ("dp-sgd", {}), ("participation-padding", {}),
               ("structured-participation", {}), ("composed", {"defenses": [{"name": "ldp-gaussian"}, {"name": "rounded-counts"}]})]
    assert all(trains_like_undefended(GuardedDefense(make_defense(n, p))) for n, p in untouched)
    assert not any(trains_like_undefended(GuardedDefense(make_defense(n, p))) for n, p in touched)
    assert scores("noisy-counts", {"scale": 1.0})["utility_drop"] == 0.0


def test_the_split_is_label_skewed_and_seeded() -> None:
    labels = np.repeat(np.arange(10), 100)
    task = UtilityTask(n_clients=50, samples_per_client=20, dirichlet_alpha=0.1)
    index = split(labels, 10, task, np.random.default_rng(0))
    assert index.shape == (50, 20)
    assert np.array_equal(index, split(labels, 10, task, np.random.default_rng(0)))
    dominant = [np.bincount(labels[row], minlength=10).max() / 20 for row in index]
    assert np.mean(dominant) > 0.6  # alpha 0.1: most of a client's samples share one class


def test_utility_task_rejects_bad_fields() -> None:
    from benchmark.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match="cohort must be between"):
        UtilityTask(n_clients=10, cohort=20)
    with pytest.raises(BenchmarkError, match="unknown utility task field"):
        UtilityTask.from_dict({"clients": 3})


def test_dp_fedavg_noise_on_the_average_is_z_c_over_noise_cohort_and_the_server_receives_the_clipped_sum() -> None:
    rng, dim, m = np.random.default_rng(0), 20000, 10
    stds = {}
    for cohort in (100, 1000):
        defense = make_defense("dp-fedavg", {"noise_multiplier": 2.0, "clip_norm": 0.5, "noise_cohort": cohort})
        total = sum(defense.transform_update(np.zeros(dim), rng) for _ in range(m))
        received = defense.transform_aggregate(total, rng)
        assert np.array_equal(received, total)  # central DP: the server adds the noise after it has the sum
        stds[cohort] = float(np.std(defense.transform_step(received, rng) / m))
    assert stds[100] == pytest.approx(2.0 * 0.5 / 100, rel=0.03)
    assert stds[1000] == pytest.approx(stds[100] / 10, rel=0.05)
    plain = make_defense("dp-fedavg", {"noise_multiplier": 2.0, "clip_norm": 0.5})
    total = plain.transform_aggregate(sum(plain.transform_update(np.zeros(dim), rng) for _ in range(m)), rng)
    assert float(np.std(plain.transform_step(total, rng))) == pytest.approx(1.0, rel=0.03)  # zC on the sum


def test_replace_one_epsilon_matches_the_issue_and_beats_add_remove() -> None:
    guarantee = gaussian_privacy(1.0, "user", 60, 0.3, 26, DELTA)
    assert 90 < guarantee.epsilon < 100  # replace-one: sensitivity 2C (add/remove would give about 36)
    assert guarantee.epsilon_rdp == pytest.approx(guarantee.epsilon, rel=0.1)  # opacus' RDP, a looser cross-check
    assert guarantee.epsilon_rdp >= guarantee.epsilon
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    add_remove = PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    add_remove.compose(dp_accounting.GaussianDpEvent(1.0), 26)
    assert guarantee.epsilon > 2 * add_remove.get_epsilon(DELTA)


@pytest.mark.parametrize("z", [0.001, 0.05, 0.3, 1.0, 4.0])
@pytest.mark.parametrize("participation", [0.05, 0.3, 0.9])
def test_amplified_never_above_epsilon(z: float, participation: float) -> None:
    guarantee = gaussian_privacy(z, "user", 60, participation, 26, DELTA)
    assert 0 < guarantee.epsilon_amplified <= guarantee.epsilon


def test_epsilons_carry_their_level() -> None:
    fedavg = make_defense("dp-fedavg", {"noise_multiplier": 8.0, "noise_cohort": 1000})
    guarantee = GuardedDefense(fedavg).privacy(60, 0.3, 26, DELTA)
    assert guarantee.epsilon < 8  # the quick suite's grid point
    assert guarantee.level == "user" and "replace-one" in guarantee.accounting
    assert "cohort of 1000" in guarantee.accounting and "q=0.3" in guarantee.accounting
    assert make_defense("dp-sgd", {}).privacy(60, 0.3, 26, DELTA).level == "example"
    assert make_defense("none", {}).privacy(60, 0.3, 26, DELTA).level == "—"
    composed = make_defense("composed", {"defenses": [{"name": "ldp-gaussian"}, {"name": "rounded-counts"}]})
    assert composed.privacy(60, 0.3, 26, DELTA).level == "user"


def test_noisy_counts_user_level_epsilon_grows_with_participations() -> None:
    counts = make_defense("noisy-counts", {"scale": 2.0})
    assert counts.privacy(60, 0.3, 10, DELTA).epsilon_analytics == pytest.approx(10.0)  # replace-one: 2 x 10 / 2
    assert counts.privacy(60, 0.3, 26, DELTA).epsilon_analytics == pytest.approx(26.0)
    assert counts.privacy(60, 0.3, 26, DELTA).level == "user"


def test_dp_gaussian_is_an_alias_of_ldp_gaussian() -> None:
    assert type(make_defense("dp-gaussian", {})).name == "ldp-gaussian"


UTILITY_SUITE = """
name = "tiny-utility"
version = "1"
seeds = [0]

[attack]
time_limit = 0.2

[utility]
name = "tiny"
n_clients = 60
cohort = 10
n_rounds = 12
samples_per_client = 30
batch_size = 10

[[defenses]]
name = "none"

[[defenses]]
name = "dp-fedavg"
noise_multiplier = 2.0
noise_cohort = 50

[[defenses]]
name = "noisy-counts"
""" + TINY_CELL


def test_run_rows_carry_paired_utility_and_epsilon_notes(tmp_path, capsys) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(UTILITY_SUITE)
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--quiet"]) == 0
    table = pd.read_parquet(tmp_path / "r" / "tiny-utility" / "results.parquet").set_index("defense")
    assert set(table["status"]) == {"ok"}
    assert np.allclose(table["utility_drop"], table["test_accuracy_undefended"] - table["test_accuracy"])
    assert table.loc["none", "utility_drop"] == 0 and table.loc["noisy-counts", "utility_drop"] == 0
    assert table.loc["dp-fedavg", "utility_drop"] > 0
    assert table.loc["dp-fedavg", "epsilon_level"] == "user" and math.isfinite(table.loc["dp-fedavg", "epsilon"])
    assert table.loc["none", "epsilon_level"] == "—" and table["utility_task"].str.startswith("tiny:").all()
    # the utility run's own guarantee (12 rounds of ~10 of 60 clients), not the attack scenario's
    fedavg = GuardedDefense(make_defense("dp-fedavg", {"noise_multiplier": 2.0, "noise_cohort": 50}))
    assert table.loc["dp-fedavg", "epsilon_utility"] == utility_epsilon(TINY, 0, fedavg, DELTA)
    assert table.loc["dp-fedavg", "epsilon_utility"] != table.loc["dp-fedavg", "epsilon"]
    assert table[["epsilon_utility"]].drop(index="dp-fedavg").isna().all().all()


class _Busiest(Defense):
    """Keeps every other selected client (by id parity on odd rounds) and reports, as its 'epsilon', the most
    contributions any client made: what utility_epsilon must hand the privacy hook."""

    name = "busiest"

    def __init__(self) -> None:
        self.contributions: np.ndarray | None = None

    def choose_participants(self, selected, round_index, rng):
        kept = selected & ((np.arange(len(selected)) % 2 == 0) | (round_index % 2 == 0))
        self.contributions = (0 if self.contributions is None else self.contributions) + kept
        return kept, kept

    def privacy(self, n_rounds, participation, max_participations, delta):
        return Privacy(epsilon=float(max_participations), level="user", accounting="the busiest client's count")


def test_the_utility_epsilon_counts_the_training_runs_own_contributions() -> None:
    trained = _Busiest()
    train(TINY, trained, seed=3)  # the run whose accuracy a row reports; the hook saw every round's selection
    assert utility_epsilon(TINY, 3, _Busiest(), DELTA) == trained.contributions.max() > 0
    assert math.isnan(utility_epsilon(None, 3, _Busiest(), DELTA))  # no utility task


def test_the_utility_epsilon_grows_with_the_runs_length_and_dp_sgd_counts_its_epochs() -> None:
    fedavg = make_defense("dp-fedavg", {"noise_multiplier": 8.0, "noise_cohort": 1000})
    from benchmark.suite import load_suite

    standard = load_suite("standard").utility
    assert utility_epsilon(standard, 0, fedavg, DELTA) <= 8  # a user-level epsilon <= 8 on standard's utility task
    assert utility_epsilon(replace(TINY, n_rounds=48), 0, fedavg, DELTA) > utility_epsilon(TINY, 0, fedavg, DELTA)
    dp_sgd = make_defense("dp-sgd", {"noise_multiplier": 1.0})
    one, four = (utility_epsilon(replace(TINY, local_epochs=k), 0, dp_sgd, DELTA) for k in (1, 4))
    assert four > one  # four Gaussian steps an example a round
    assert utility_epsilon(replace(TINY, local_epochs=4), 0, fedavg, DELTA) == utility_epsilon(TINY, 0, fedavg, DELTA)


def test_a_bad_utility_table_fails_in_one_line(tmp_path, capsys) -> None:
    suite = tmp_path / "bad.toml"
    suite.write_text(UTILITY_SUITE.replace("cohort = 10", "cohort = 100"))
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cohort must be between" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_local_update_override_runs_per_client_on_the_global_model() -> None:
    class Frozen(Defense):
        """Every client sends a zero update: the model must stay at its initialisation."""

        calls = 0

        def local_update(self, model, x, y, scenario, rng):
            Frozen.calls += 1
            assert scenario.local_training == "fedavg" and x.dtype == torch.float64
            return np.zeros(sum(p.numel() for p in model.parameters()))

    import torch

    short = UtilityTask(name="short", n_clients=20, cohort=5, n_rounds=3, samples_per_client=10, batch_size=10)
    frozen = train(short, GuardedDefense(Frozen()), 0)
    assert Frozen.calls > 0 and frozen == train(replace(short, learning_rate=1e-12), Defense(), 0)


def test_under_padding_the_server_divides_by_its_target_cohort_not_the_true_contributors() -> None:
    # Masked padded devices upload zero-sum masks: the sum is the unpadded one, and the simulated server had
    # divided it by the true number of contributors, which it cannot tell from the check-ins (drop exactly 0).
    from benchmark.observation import expected_contributors
    from benchmark.protocol import server_divisor

    assert expected_contributors(np.array([10, 40, 2]), 0.0, 60).tolist() == [10, 40, 2]
    assert expected_contributors(np.array([10, 40, 2]), 0.1, 60).tolist() == [4, 38, 0]  # (m - 6) / 0.9, in [0, m]
    assert server_divisor(7, 10.0, 0.0) == 7.0 and server_divisor(7, 10.0, 0.1) == 10.0
    light, heavy = (scores("participation-padding", {"rate": rate, "masked": True}) for rate in (0.1, 0.5))
    assert light["utility_drop"] != 0.0 and light["test_accuracy_undefended"] == scores("none", {})["test_accuracy"]
    assert heavy["test_accuracy"] == light["test_accuracy"]  # the step never reads who, or how many, contributed
