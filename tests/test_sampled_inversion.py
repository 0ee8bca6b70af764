"""Inverting a seeded sample of the recovered updates, the oracle ceiling on the same users, the on-disk memo,
and suites that invert only at a cell's longest horizon."""

import math

import numpy as np
import pandas as pd
import pytest

from attacks import memo, pipeline
from attacks.inversion import InversionSettings
from attacks.pipeline import infer_from, infer_users, inversion_sample, recovered_sample, update_ids
from attacks.recovery import run_attacks
from attacks.settings import AttackSettings
from benchmark.cli import main
from benchmark.runner import run_task
from benchmark.scenario import Scenario
from benchmark.scoring import score, scored_users
from benchmark.simulation import simulate
from benchmark.suite import expand, load_suite
from defenses.base import Defense
from leaderboard.summary import summarize_cells

# Digits of 2 samples each: no closed-form inversion, so the cosine-matching inversion runs (a few steps).
CELL = Scenario(name="pairs", n_users=8, n_rounds=48, participation=0.4, window=4, samples_per_user=2, seed=1)
FAST = InversionSettings(steps=4)


@pytest.fixture(scope="module")
def attacked():
    observation, truth = simulate(CELL, Defense())
    return observation, truth, run_attacks(observation, AttackSettings())[0]


@pytest.fixture
def counted(monkeypatch):
    """How many updates invert_many actually inverted."""
    calls = []
    original = pipeline.invert_many

    def counting(model, weights, updates, *args, **kwargs):
        calls.append(len(updates))
        return original(model, weights, updates, *args, **kwargs)

    monkeypatch.setattr(pipeline, "invert_many", counting)
    return calls


def test_a_sample_inverts_that_many_named_users_and_the_ceiling_inverts_the_same_users(attacked, counted):
    observation, truth, recovery = attacked
    output = infer_from(observation, recovery, seed=1, inversion=FAST, sample=3)
    assert len(output.recovered.indices) == 3 and output.recovered.images.shape[0] == 3
    assert len(output.aggregate_rounds) == 3  # the floor inverts as many round sums
    users = scored_users(output, truth)
    assert np.array_equal(users, inversion_sample(CELL.n_users, 3, seed=1))  # exact recovery names the drawn users
    ceiling = infer_users(observation, truth.updates, truth.participants, 1, settings=FAST, invert=users)
    scores = score(output, truth, ceiling)
    assert scores["psnr_recovered"] == pytest.approx(scores["psnr_ceiling"])  # same users, same update, same seeds
    assert scores["property_auc_recovered"] == scores["property_auc_ceiling"] == 1.0  # property: every user


def test_the_sample_is_seeded_and_a_limit_of_zero_inverts_everything(attacked):
    observation, truth, recovery = attacked
    first, again = (recovered_sample(update_ids(recovery, CELL.n_users), CELL.n_users, 3, seed=5) for _ in range(2))
    assert np.array_equal(first, again)
    assert not np.array_equal(inversion_sample(CELL.n_users, 3, 5), inversion_sample(CELL.n_users, 3, 6))
    every = recovered_sample(update_ids(recovery, CELL.n_users), CELL.n_users, 0, seed=5)  # in the order of the users they name
    assert np.array_equal(np.sort(every), np.arange(len(recovery.updates)))
    assert np.array_equal(inversion_sample(CELL.n_users, 0, 5), np.arange(CELL.n_users))


def test_the_memo_answers_a_repeated_inversion_exactly_and_recomputes_a_corrupted_entry(attacked, counted, tmp_path):
    observation, truth, recovery = attacked
    memo.use(tmp_path)
    try:
        users = inversion_sample(CELL.n_users, 2, 1)
        first = infer_users(observation, truth.updates, truth.participants, 1, settings=FAST, invert=users)
        assert counted == [2]
        again = infer_users(observation, truth.updates, truth.participants, 1, settings=FAST, invert=users)
        assert counted == [2] and np.array_equal(first.images, again.images)  # answered from disk
        # The attack's exact recovery of those users is the same inversion: no new work.
        infer_from(observation, recovery, seed=1, inversion=FAST, sample=2)
        assert counted == [2, 2]  # only the floor's round sums were new
        for entry in tmp_path.glob("*.npz"):
            entry.write_bytes(b"not an archive")
        third = infer_users(observation, truth.updates, truth.participants, 1, settings=FAST, invert=users)
        assert counted == [2, 2, 2] and np.array_equal(first.images, third.images)
        for entry in tmp_path.glob("*.npz"):  # a plausible edit, a readable archive: zeros for the images
            if entry.read_bytes() == b"not an archive":
                continue  # an entry the third call did not need
            with np.load(entry) as stored:
                arrays = {name: stored[name] for name in stored.files}
            arrays["a0"] = np.zeros_like(arrays["a0"])
            np.savez(entry, **arrays)
        fourth = infer_users(observation, truth.updates, truth.participants, 1, settings=FAST, invert=users)
        assert counted == [2, 2, 2, 2] and np.array_equal(first.images, fourth.images)
    finally:
        memo.use(None)


SUITE = """
name = "horizons"
version = "1"
seeds = [0]

[attack]
inverted_users = 2
invert_at = "longest-horizon"

[[defenses]]
name = "none"

[[cells]]
name = "pairs"
n_users = 6
horizons = [2, 4]
participation = 0.5
window = 3
samples_per_user = 2
"""


def test_longest_horizon_suites_invert_there_only_and_the_leaderboard_reads_inference_there(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "InversionSettings", lambda: FAST)
    path = tmp_path / "horizons.toml"
    path.write_text(SUITE)
    tasks = expand(load_suite(str(path)))
    assert [(t.scenario.n_rounds, t.attack.invert) for t in tasks] == [(12, False), (24, True)]
    short, long = (run_task(t) for t in tasks)
    assert short["status"] == long["status"] == "ok"
    assert math.isnan(short["psnr_recovered"]) and math.isnan(short["psnr_share"])
    assert short["inversion"].startswith("not run") and short["lpips"].startswith("not computed")
    assert long["inversion"] == "a seeded sample of 2 of 6 recovered updates" and not math.isnan(long["psnr_ceiling"])
    # Attack success is highest (a tie goes to the shortest) at horizon 2: inference still comes from horizon 4.
    short.update(attack_success=1.0)
    long.update(attack_success=0.5)
    cells = summarize_cells(pd.DataFrame([short, long]))
    assert cells.loc[0, "horizon"] == 2 and cells.loc[0, "psnr_ceiling"] == pytest.approx(long["psnr_ceiling"])


@pytest.mark.parametrize("line, field", [
    ('invert_at = "sometimes"', "invert_at"),
    ("inverted_users = -1", "inverted_users"),
    ("inverted_users = 2.5", "inverted_users"),
    ("invert = false", "invert"),
])
def test_bad_inversion_settings_are_refused_at_load(tmp_path, capsys, line, field):
    path = tmp_path / "bad.toml"
    path.write_text(SUITE.replace('inverted_users = 2\ninvert_at = "longest-horizon"', line))
    assert main(["run", "--suite", str(path), "--results", str(tmp_path / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and field in error
    assert not (tmp_path / "out").exists()
