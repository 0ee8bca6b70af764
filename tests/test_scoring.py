"""Scoring against floor and ceiling: shares, matching, property attribution, LPIPS and the --device option."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.disaggregation import Disaggregation
from attacks.pipeline import AttackOutput, Inference, infer_users, run_attack
from attacks.properties import PropertyGuess, guess, holds_property, window_weighted_scores
from attacks.recovery import named_recovery
from attacks.settings import AttackSettings
from benchmark.cli import main
from benchmark.columns import SCORE_COLUMNS
from benchmark.errors import BenchmarkError
from benchmark.metrics import PSNR_CAP, lpips_unavailable, majority_share, property_auc
from benchmark.scenario import Scenario
from benchmark.scoring import SHARE_COLUMNS, score, share, success_ceiling
from benchmark.simulation import GroundTruth, simulate
from benchmark.suite import load_suite
from defenses.base import Defense
from defenses.registry import make_defense
from leaderboard.render import DEFAULT_COLUMNS
from leaderboard.summary import SUMMARY_SCORES
from tests.conftest import TINY_SUITE as SUITE

# Ten users with one digit each hold the labels 0..9 (label-skewed split): five hold a lower-half label.
FEDERATION = Scenario(name="ten", n_users=10, n_rounds=40, participation=0.4, window=4, seed=0)


def _order_of(recovery, truth) -> np.ndarray:
    """Which user's row each recovered update is (its column equals that user's column)."""
    return np.array([int(np.flatnonzero((truth.participants == column[:, None]).all(axis=0))[0]) for column in recovery.columns.T])


@pytest.fixture(scope="module")
def federation():
    return simulate(FEDERATION, Defense())


def test_share_is_zero_at_the_floor_one_at_the_ceiling():
    assert share(75.0, 50.0, 100.0) == 0.5
    assert share(50.0, 50.0, 100.0) == 0.0 and share(100.0, 50.0, 100.0) == 1.0
    assert share(0.2, 0.5, 1.0) == 0.0 and share(0.9, 0.95, 1.0) == 0.0  # below what the sums alone reveal
    assert share(1.2, 0.5, 1.0) == 1.0
    # the true updates reveal less than the sums: no gain to take a share of, however the attack landed
    assert all(math.isnan(share(recovered, 0.5, 0.0)) for recovered in (0.0, 0.25, 0.5, 1.0))
    assert share(1.0, 1.0, 1.0) == 1.0 and share(0.9, 1.0, 1.0) == 0.0  # no range between floor and ceiling
    assert math.isnan(share(math.nan, 0.0, 1.0))


def test_a_perfect_attack_scores_its_ceiling_and_the_floor_stays_below(federation):
    observation, truth = federation
    output = run_attack(observation, AttackSettings(time_limit=1.0), seed=0)
    ceiling = infer_users(observation, truth.updates, truth.participants, seed=0)
    scores = score(output, truth, ceiling)
    assert scores["exact_column_rate"] == 1.0
    for quantity in ("psnr", "ssim", "label_accuracy", "property_auc", "property_accuracy"):
        assert scores[f"{quantity}_recovered"] == pytest.approx(scores[f"{quantity}_ceiling"], abs=1e-9)
        assert scores[SHARE_COLUMNS[quantity]] == 1.0
    assert scores["psnr_ceiling"] == PSNR_CAP and scores["label_accuracy_ceiling"] == 1.0
    assert scores["psnr_aggregate"] < PSNR_CAP - 10.0
    # Property attribution from the true fedsgd updates is exact; the floor has only sums and counts.
    assert scores["property_auc_ceiling"] == 1.0 and scores["property_accuracy_ceiling"] == 1.0
    assert scores["property_auc_chance"] == 0.5 and scores["property_accuracy_chance"] == 0.5
    assert scores["property_accuracy_aggregate"] < 1.0
    assert set(scores) - {"lpips"} <= set(SCORE_COLUMNS)


def test_a_permuted_batch_is_matched_before_it_is_scored():
    observation, truth = simulate(replace(FEDERATION, n_users=4, n_rounds=16, samples_per_user=3), Defense())
    order = [2, 0, 1]
    permuted = Inference(truth.images[:, order], truth.labels[:, order], PropertyGuess(np.zeros(4), np.zeros(4, bool)), np.arange(4))
    assert not np.array_equal(permuted.images, truth.images)
    exact = Inference(truth.images, truth.labels, PropertyGuess(np.zeros(4), np.zeros(4, bool)), np.arange(4))
    disaggregation = Disaggregation(truth.participants, truth.updates, ("unique",) * 4, np.zeros(4), np.zeros(4), 4, 0.0)
    recovery = named_recovery("static", disaggregation, None)
    permuted = replace(permuted, images=permuted.images[_order_of(recovery, truth)], labels=permuted.labels[_order_of(recovery, truth)])
    output = AttackOutput(recovery, observation.n_classes, permuted, np.zeros(0, int),
                          np.zeros((0, 3, 1, 8, 8)), [], PropertyGuess(np.zeros(4), np.zeros(4, bool)), 0.0)
    scores = score(output, truth, exact)
    assert scores["psnr_recovered"] == PSNR_CAP == scores["psnr_ceiling"]
    assert scores["ssim_recovered"] == pytest.approx(1.0) and scores["label_accuracy_recovered"] == 1.0
    assert math.isnan(scores["psnr_aggregate"]) and math.isnan(scores["psnr_share"])  # no round was attacked


def test_the_floor_is_a_count_weighted_mean_of_window_scores():
    round_scores = np.array([1.0, 3.0, 10.0, 10.0, 4.0])  # windows of 2 rounds: means 2, 10, 4
    counts = np.array([[2, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0]])
    expected = [2.0, 6.0, 7.0, 16.0 / 3.0]  # a user that never took part gets the mean over windows
    assert np.allclose(window_weighted_scores(round_scores, counts, 2), expected)


def test_the_floor_is_at_chance_when_counts_carry_no_information():
    rng = np.random.default_rng(0)
    has = rng.random(400) < 0.5
    round_scores = rng.normal(size=60)
    same_counts = np.tile(rng.integers(0, 6, 12), (400, 1))
    floor = guess(window_weighted_scores(round_scores, same_counts, 5))
    assert property_auc(floor.scores, has, floor.predictions) == 0.5
    random_counts = rng.integers(0, 6, (400, 12))  # drawn independently of the property
    floor = guess(window_weighted_scores(round_scores, random_counts, 5))
    assert abs(property_auc(floor.scores, has, floor.predictions) - 0.5) < 0.1


def test_without_published_counts_the_floor_cannot_tell_users_apart(federation):
    _, truth = federation
    observation, _ = simulate(FEDERATION, make_defense("no-analytics", {}))
    assert observation.counts is None
    output = run_attack(observation, AttackSettings(time_limit=1.0), seed=0)
    has = holds_property(truth.labels, observation.n_classes)
    floor = output.aggregate_property
    assert len(set(floor.scores)) == 1 and property_auc(floor.scores, has, floor.predictions) == 0.5


def test_property_auc_is_nan_when_every_user_shares_the_property():
    has = np.ones(4, bool)  # nothing to rank: it had copied property_accuracy (0.75 here) into the AUC column
    assert math.isnan(property_auc(np.array([0.3, 0.2, -0.1, 0.5]), has, np.array([True, True, False, True])))
    assert property_auc(np.array([0.9, 0.1, 0.8]), np.array([True, False, True]), np.zeros(3, bool)) == 1.0
    assert majority_share(np.array([True, False, True, True])) == 0.75
    assert holds_property(np.array([[7, 3], [8, 9]]), 10).tolist() == [True, False]


def test_lpips_is_recorded_as_not_computed_without_its_backbone_on_disk(monkeypatch, tmp_path, federation):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reason = lpips_unavailable()
    assert isinstance(reason, str) and ("torchvision" in reason or str(tmp_path) in reason)
    observation, truth = federation
    exact = infer_users(observation, truth.updates, truth.participants, seed=0)
    disaggregation = Disaggregation(truth.participants, truth.updates, ("unique",) * 10, np.zeros(10), np.zeros(10), 10, 0.0)
    output = AttackOutput(named_recovery("static", disaggregation, None), observation.n_classes, exact, np.zeros(0, int),
                          np.zeros((0, 1, 1, 8, 8)), [], exact.property, 0.0)
    assert score(output, truth, exact)["lpips"] == f"not computed: {reason}"


def test_the_leaderboard_shows_shares_beside_recovered_values():
    assert "psnr_recovered" in DEFAULT_COLUMNS
    for quantity in ("psnr", "label_accuracy", "property_auc"):
        assert SHARE_COLUMNS[quantity] in DEFAULT_COLUMNS
    scores = {*SCORE_COLUMNS, *SUMMARY_SCORES, *(f"{c}_worst" for c in SUMMARY_SCORES)}
    assert set(DEFAULT_COLUMNS) - {"rank", "tier", "defense", "horizon", "epsilon_level", "tasks", "failed",
                                 "not_applicable"} <= scores
    assert not any(column.endswith(("_ceiling", "_aggregate")) for column in DEFAULT_COLUMNS)




def test_auto_resolves_to_the_device_in_the_task_key(tmp_path, capsys):
    """The device is in the key (CPU and GPU scores differ); "auto" is keyed as what it resolves to."""
    import torch

    from benchmark.suite import expand, load_suite

    task = expand(load_suite("quick"))[0]
    assert task.key("cpu") != task.key("cuda")
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--results", str(results), "--quiet", "--device", "cpu"]) == 0
    tasks = sorted((results / "tiny" / "tasks").glob("*.json"))
    stamps = [task.stat().st_mtime_ns for task in tasks]
    assert main(["run", "--suite", str(suite), "--results", str(results), "--quiet", "--device", "auto"]) == 0
    if not torch.cuda.is_available():  # auto is cpu here: same key, the stored task is reused
        assert sorted((results / "tiny" / "tasks").glob("*.json")) == tasks
        assert [task.stat().st_mtime_ns for task in tasks] == stamps
    row = pd.read_parquet(results / "tiny" / "results.parquet").iloc[0]
    assert row["status"] == "ok" and row["psnr_share"] == 1.0 and row["lpips"].startswith("not computed: ")
    capsys.readouterr()
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "other"), "--quiet", "--device", "tpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device must be one of cpu, cuda, auto, got 'tpu'" in err
    assert not (tmp_path / "other").exists()


def test_users_without_a_recovered_update_are_not_inverted(federation):
    """Half the users recovered exactly, the rest not at all: inversion scores average over the recovered half
    (no score for an image never reconstructed), and only they count as attack_success."""
    from attacks.pipeline import infer_from

    observation, truth = federation
    participants = truth.participants.copy()
    participants[:, 5:] = 0
    updates = np.where(np.arange(10)[:, None] < 5, truth.updates, 0.0)
    half = Disaggregation(participants, updates, ("unique",) * 5 + ("timeout",) * 5, np.zeros(10), np.zeros(10), 10, 0.0)
    output = infer_from(observation, named_recovery("static", half, None), seed=0)
    ceiling = infer_users(observation, truth.updates, truth.participants, seed=0)
    scores = score(output, truth, ceiling)
    assert scores["attack_success"] == 0.5 and scores["attributed_success"] == 0.5
    assert scores["psnr_recovered"] == PSNR_CAP and scores["label_accuracy_recovered"] == 1.0


def test_group_sums_are_inverted_as_batches():
    """Under fixed groups the strongest attack holds group sums: inverted as one batch of g * s samples,
    each member scored against its group's batch; no member's own update counts as recovered."""
    from attacks.pipeline import infer_from
    from attacks.recovery import run_attacks

    scenario = replace(FEDERATION, n_users=6, n_rounds=24, window=3)
    observation, truth = simulate(scenario, make_defense("structured-participation", {"group_size": 2}))
    adaptive = next(r for r in run_attacks(observation, AttackSettings(time_limit=1.0)) if r.attack == "adaptive")
    assert adaptive.groups is not None and adaptive.columns.shape[1] == 3
    output = infer_from(observation, adaptive, seed=0)
    assert output.recovered.images.shape[:2] == (3, 2)
    scores = score(output, truth, infer_users(observation, truth.updates, truth.participants, seed=0))
    assert scores["exact_column_rate"] == 1.0 and scores["attack_success"] < 1.0
    assert not math.isnan(scores["psnr_recovered"]) and scores["label_accuracy_recovered"] >= 0.5


NO_COUNTS_SUITE = SUITE.replace('name = "none"', 'name = "no-analytics"')


def test_an_attack_that_did_not_run_scores_nan_not_a_copy(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(NO_COUNTS_SUITE)
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "results"), "--quiet"]) == 0
    row = pd.read_parquet(tmp_path / "results" / "tiny" / "results.parquet").iloc[0]
    assert row["attack"] == "anonymous" and row["attack_success"] == row["attack_success_anonymous"] >= 0.5
    assert math.isnan(row["attack_success_static"]) and math.isnan(row["attack_success_adaptive"])
    assert row["attributed_success"] == 0.0 and row["anonymous_success"] == row["attack_success"]
    capsys.readouterr()


CLOCKED = """
name = "clocked"
version = "1"
seeds = [0]

[attack]
time_limit = {limit}
budget = {limit}

[[defenses]]
name = "none"

[[cells]]
name = "short"
n_users = 12
n_rounds = 36
participation = 0.5
window = 6
update_kind = "synthetic"
"""


def test_a_row_says_when_a_clock_safety_net_stopped_attack_work(tmp_path):
    """Work limits decide answers; where the clock cut work anyway the row says so (its scores may vary by machine)."""
    from benchmark.runner import run_task
    from benchmark.suite import expand, load_suite

    rows = {}
    for limit in (1e-6, 60.0):
        path = tmp_path / f"clocked-{limit}.toml"
        path.write_text(CLOCKED.format(limit=limit))
        rows[limit] = run_task(expand(load_suite(str(path)))[0])
    assert rows[1e-6]["status"] == rows[60.0]["status"] == "ok"
    assert rows[1e-6]["clock_limited"] == 1.0 and rows[60.0]["clock_limited"] == 0.0


def test_a_prefix_attempt_names_users_by_the_rounds_it_claims(federation):
    """A prefix attempt that could not carry its columns to later rounds still names each user it recovered:
    users with near-identical updates (one recovered vector between them) keep counting as recovered."""
    from attacks.recovery import Recovery
    from benchmark.scoring import score_recovery

    _, truth = federation
    twins = truth.updates.copy()
    twins[1] = twins[0]
    truth = replace(truth, updates=twins)
    claimed = truth.participants.shape[0] // 2
    named = np.zeros_like(truth.participants)
    named[:claimed, :2] = truth.participants[:claimed, :2]
    updates = np.zeros_like(truth.updates)
    updates[:2] = truth.updates[:2]
    result = Disaggregation(named, updates, ("found",) * 2 + ("unattributed",) * 8, np.zeros(10), np.zeros(10), 2, 0.0)
    recovery = Recovery("prefix", result, named[:, :1], truth.updates[:1], None, claimed_rounds=claimed)
    assert score_recovery(recovery, truth)["attack_success"] == 0.2  # both twins, named on their first rounds
    assert score_recovery(replace(recovery, claimed_rounds=None), truth)["attack_success"] == 0.1  # all rounds claimed
    wrong = named.copy()
    wrong[0, :2] = 1 - wrong[0, :2]  # a wrong round inside the claimed ones: neither twin is named
    assert score_recovery(replace(recovery, disaggregation=replace(result, participants=wrong)), truth)["attack_success"] == 0.1


def test_the_success_ceiling_is_what_the_true_participants_give():
    """Least squares from the true columns: every update without noise, none under noise far above the updates,
    and never two users who always took part together (only their sum is in the sums)."""
    rng = np.random.default_rng(0)
    participants = (rng.random((200, 20)) < 0.3).astype(np.uint8)
    updates = rng.standard_normal((20, 50))
    updates /= np.linalg.norm(updates, axis=1, keepdims=True)
    truth = GroundTruth(participants, updates, np.zeros((0,)), np.zeros((0,)), 1, 0.0, 0.0)
    aggregates = participants @ updates
    assert success_ceiling(aggregates, truth) == 1.0
    assert success_ceiling(aggregates + 3.0 * rng.standard_normal(aggregates.shape), truth) == 0.0
    together = participants.copy()
    together[:, 1] = together[:, 0]
    paired = replace(truth, participants=together)
    assert success_ceiling(together @ updates, paired) == pytest.approx(18 / 20)


def test_users_who_never_took_part_are_not_counted_as_protected():
    """A user with no round has no update in the sums to lose: success counts the users who took part (it read 0.0,
    a perfect defense, for a cell where nobody took part), and is NaN where nobody did."""
    rng = np.random.default_rng(1)
    participants = (rng.random((200, 20)) < 0.3).astype(np.uint8)
    participants[:, 10:] = 0  # half the users never take part
    updates = rng.standard_normal((20, 50))
    truth = GroundTruth(participants, updates, np.zeros((0,)), np.zeros((0,)), 1, 0.0, 0.0)
    assert success_ceiling(participants @ updates, truth) == 1.0  # every user who took part, not 10 of 20
    nobody = replace(truth, participants=np.zeros_like(participants))
    assert math.isnan(success_ceiling(np.zeros((200, 50)), nobody))


def test_a_cell_where_users_take_part_in_under_one_round_on_average_is_refused(tmp_path):
    suite = tmp_path / "empty.toml"
    suite.write_text(SUITE.replace("participation = 0.4", "participation = 1e-300"))
    with pytest.raises(BenchmarkError, match="participation \\* n_rounds must be at least 1"):
        load_suite(str(suite))


def test_a_task_where_nobody_contributed_is_not_applicable(tmp_path, capsys):
    """Seed 85 of this cell draws nobody in either round (a chance of 1 in 16): its scores would be an empty
    federation's, so the row says so instead of scoring the defense."""
    suite = tmp_path / "empty.toml"
    suite.write_text('name = "empty"\nversion = "1"\nseeds = [85]\n[[defenses]]\nname = "none"\n[[cells]]\nname = "two"\n'
                     'n_users = 2\nn_rounds = 2\nparticipation = 0.5\nwindow = 1\nupdate_kind = "synthetic"\n')
    main(["run", "--suite", str(suite), "--results", str(tmp_path / "results"), "--quiet"])
    row = pd.read_parquet(tmp_path / "results" / "empty" / "results.parquet").iloc[0]
    assert row["status"] == "not applicable: no user contributed to any of the 2 rounds"
    assert math.isnan(row["attack_success"])
    capsys.readouterr()


def test_an_attack_that_recovers_the_true_matrix_scores_its_ceiling_under_fixed_groups():
    """The ceiling is scored as attacks are (one update per distinct column, matched one-to-one): it once counted
    only each user's own least-squares update, and an attack on fixed groups scored above it (0.23 against 0.20
    on a standard cell) by matching a group's sum to a user its own update missed."""
    from attacks.disaggregation import least_squares
    from attacks.recovery import named_recovery
    from benchmark.scoring import score_recovery

    scenario = Scenario(name="groups", n_users=40, n_rounds=240, participation=0.3, window=10, dataset="digits",
                        model="mlp", samples_per_user=4, local_training="fedsgd", seed=3)
    observation, truth = simulate(scenario, make_defense("structured-participation", {"group_size": 2}))
    n_users = truth.participants.shape[1]
    updates = least_squares(truth.participants.astype(np.float64), observation.aggregates)
    exact = Disaggregation(truth.participants, updates, ("unique",) * n_users, np.zeros(n_users), np.zeros(n_users),
                           rank=0, wall_seconds=0.0)
    scores = score_recovery(named_recovery("static", exact, None), truth)
    assert scores["anonymous_success"] > 0  # a group sum matched to a user its own update missed
    assert success_ceiling(observation.aggregates, truth) == scores["attack_success"] == 0.125


def test_matching_counts_the_most_users_at_the_success_cosine_before_the_total_cosine():
    from benchmark.scoring import SUCCESS_COSINE, match_updates

    # cosines (recovered x true): [[0.96, 1.0], [0.93, 0.955]]; the largest total (1.0 + 0.93) passes one user,
    # the other pairing (0.96 + 0.955) both.
    true = np.array([[1.0, 0.0, 0.0], [0.96, 0.28, 0.0]])
    second = np.array([0.93, (0.955 - 0.96 * 0.93) / 0.28, 0.0])
    second[2] = math.sqrt(1.0 - second[0] ** 2 - second[1] ** 2)
    owner, cosine = match_updates(np.array([true[1], second]), true)
    assert owner.tolist() == [0, 1] and (cosine >= SUCCESS_COSINE).all()


def test_per_user_columns_count_users_who_took_part_and_an_unnamed_recovery():
    from benchmark.scoring import score_recovery

    scenario = Scenario(name="absent", n_users=10, n_rounds=30, participation=0.4, window=3, update_kind="synthetic",
                        synthetic_dim=20, seed=1)
    _, truth = simulate(scenario, Defense())
    truth = replace(truth, participants=truth.participants.copy())
    truth.participants[:, :2] = 0  # two users who never took part
    n_users = 10
    nobody = Disaggregation(np.zeros_like(truth.participants), np.zeros_like(truth.updates), ("timeout",) * n_users,
                            np.zeros(n_users), np.zeros(n_users), rank=0, wall_seconds=0.0)
    anonymous = replace(named_recovery("anonymous", nobody, None), columns=truth.participants[:, 2:],
                        updates=truth.updates[2:])
    scores = score_recovery(anonymous, truth)
    assert scores["attack_success"] == 1.0 and scores["update_cosine"] == pytest.approx(1.0)  # was 0: unnamed
    assert math.isnan(scores["entry_accuracy"])  # names nobody: no matrix recovered (was 1 - participation)
    assert scores["exact_column_rate"] == 0.0  # the two empty columns had scored 0.2
    exact = replace(nobody, participants=truth.participants, updates=truth.updates, status=("unique",) * n_users)
    scores = score_recovery(named_recovery("static", exact, None), truth)
    assert scores["update_cosine"] == pytest.approx(1.0) and scores["exact_column_rate"] == 1.0  # was 0.8
    assert scores["unique_rate"] == 1.0


def test_under_fixed_groups_the_inverted_attempt_is_the_group_aware_one(tmp_path):
    # Every attempt scores alike under fixed groups; the first, static, had been inverted: each group sum as one
    # user's batch, structured-participation's inversion share 0.72 where the group-aware inversion gives 1.0.
    from tests.conftest import TINY_CELL

    path = tmp_path / "groups.toml"
    path.write_text('name = "groups"\nversion = "1"\nseeds = [0]\n\n[attack]\ntime_limit = 0.2\n\n'
                    '[[defenses]]\nname = "structured-participation"\ngroup_size = 2\n' + TINY_CELL)
    assert main(["run", "--suite", str(path), "--results", str(tmp_path / "r"), "--quiet"]) == 0
    row = pd.read_parquet(tmp_path / "r" / "groups" / "results.parquet").iloc[0]
    assert row["status"] == "ok" and row["attack"] == "adaptive"


def test_the_label_floor_does_not_depend_on_the_attack_that_ran():
    # Without published totals the floor's contributors per round came off the recovered columns: the floor of
    # "what the sums alone reveal" rose with the attack (rounded-counts: 0.175 from static's columns, 0.942 from
    # adaptive's).
    from attacks.pipeline import infer_from
    from attacks.recovery import run_attacks

    scenario = Scenario(name="fedsgd-mlp", n_users=20, n_rounds=60, participation=0.3, window=5, dataset="digits",
                        model="mlp", samples_per_user=1, learning_rate=1.0, seed=0)
    observation, _ = simulate(scenario, make_defense("rounded-counts", {"bucket": 2}))
    assert observation.totals is None and observation.cohort == 6.0
    attempts = run_attacks(observation, AttackSettings(time_limit=5.0))
    floors = {str([labels.tolist() for labels in infer_from(observation, attempt, seed=0, sample=2).aggregate_labels])
              for attempt in attempts[:2]}
    assert len(floors) == 1
