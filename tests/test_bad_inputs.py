"""Every bad input exits 2 with one line naming the field or file, before any work, and writes nothing.

Cases run through `benchmark.cli.main` in this process; only the closed pipe and the killed parent need
a subprocess. Each case builds its inputs in a folder, snapshots it, runs the command and checks that
the folder is unchanged (no output, no results folder, no half-written file).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.synthetic import make_instance
from tests.conftest import TINY_CELL, TINY_SUITE as SUITE

ROOT = Path(__file__).resolve().parents[1]


UNWRITABLE = "/proc/1/disaggbench"  # not writable even by root


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


def check_refused(tmp_path: Path, capsys, args: list[str], names: str) -> None:
    """Exit 2, exactly one stderr line that starts with `error:` and names `names`, nothing written."""
    before = snapshot(tmp_path)
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert code == 2, out.err
    assert out.err.count("\n") == 1 and out.err.startswith("error: "), out.err
    assert names in out.err, out.err
    assert "Traceback" not in out.err and out.out == ""
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- disaggregate


@pytest.fixture
def observation(tmp_path: Path) -> dict[str, Path]:
    instance = make_instance(8, 24, 4, 0.4, seed=1)
    paths = {"A": tmp_path / "A.npy", "C": tmp_path / "C.npy"}
    np.save(paths["A"], instance.aggregates)
    np.save(paths["C"], instance.counts)
    return paths


def _npz(tmp_path, obs):
    np.savez(tmp_path / "A.npz", a=np.load(obs["A"]))
    return {"--aggregates": tmp_path / "A.npz"}, "A.npz is a .npz archive"


def _text(tmp_path, obs):
    (tmp_path / "A.txt").write_text("1 2 3\n")
    return {"--aggregates": tmp_path / "A.txt"}, "A.txt is not a readable .npy array"


def _directory(tmp_path, obs):
    (tmp_path / "folder.npy").mkdir()
    return {"--counts": tmp_path / "folder.npy"}, "folder.npy is a directory"


def _object_array(tmp_path, obs):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {"--counts": tmp_path / "o.npy"}, "o.npy is not a readable .npy array"


def _nan_counts(tmp_path, obs):
    counts = np.load(obs["C"]).astype(float)
    counts[0, 0] = np.nan
    np.save(tmp_path / "Cn.npy", counts)
    return {"--counts": tmp_path / "Cn.npy"}, "counts must be an integer array"


def _zero_counts(tmp_path, obs):
    np.save(tmp_path / "C0.npy", np.zeros_like(np.load(obs["C"])))
    return {"--counts": tmp_path / "C0.npy"}, "the counts cannot explain the aggregates"


def _string_array(tmp_path, obs):
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    return {"--aggregates": tmp_path / "s.npy"}, "s.npy holds dtype <U1"


def _out_is_file(tmp_path, obs):
    (tmp_path / "out").write_text("mine")
    return {"--out": tmp_path / "out"}, "--out"


def _out_holds_other_files(tmp_path, obs):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    return {"--out": tmp_path / "out"}, "notes.txt"


def _out_dir_where_a_file_goes(tmp_path, obs):
    (tmp_path / "out" / "participants.npy").mkdir(parents=True)
    return {"--out": tmp_path / "out"}, "participants.npy"


def _out_under_a_file(tmp_path, obs):
    (tmp_path / "plain").write_text("x")
    return {"--out": tmp_path / "plain" / "out"}, "is a file, not a folder"


def _out_unwritable(tmp_path, obs):
    return {"--out": UNWRITABLE}, "not writable"


def _huge_window(tmp_path, obs):
    return {"--window": str(10**30)}, "--window"


def _negative_window(tmp_path, obs):
    return {"--window": "-3"}, "window"


def _window_not_dividing(tmp_path, obs):
    return {"--window": "5"}, "windows"


def _negative_time_limit(tmp_path, obs):
    return {"--time-limit": "-1"}, "--time-limit"


def _float16_aggregates(tmp_path, obs):  # exact in float16 still misses col(A) by its rounding: all users "infeasible"
    np.save(tmp_path / "A16.npy", np.load(obs["A"]).astype(np.float16))
    return {"--aggregates": tmp_path / "A16.npy"}, "is float16 (relative rounding 1e-03), too coarse for exact"


def _joint_limits_with_noise(tmp_path, obs):  # the joint and lattice stages run on exact sums only: these did nothing
    return {"--noise": "--no-certify", "--nodes": "0", "--lp-work": "5"}, "--nodes, --lp-work, --no-certify limit the lattice"


def _zero_time_limit(tmp_path, obs):  # no second for any solve: the joint stage had been skipped, reported as unclocked
    return {"--time-limit": "0"}, "--time-limit must be a positive number"


def _nan_budget(tmp_path, obs):
    return {"--budget": "nan"}, "--budget"


def _negative_certificate_nodes(tmp_path, obs):
    return {"--certificate-nodes": "-5"}, "--certificate-nodes"


def _unknown_device(tmp_path, obs):
    return {"--device": "tpu"}, "--device"


def _cuda_without_a_gpu(tmp_path, obs):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return {"--device": "cuda"}, "--device cuda"


def _huge_aggregates(tmp_path, obs):
    np.save(tmp_path / "huge.npy", np.load(obs["A"]) * 1e307)
    return {"--aggregates": tmp_path / "huge.npy"}, "aggregates reach"


def _out_is_the_inputs_folder(tmp_path, obs):
    folder = tmp_path / "inputs"
    folder.mkdir()
    np.save(folder / "updates.npy", np.load(obs["A"]))  # named like an output: a rewrite would replace it
    return {"--aggregates": folder / "updates.npy", "--out": folder}, "holds the --aggregates file"


def _out_is_a_symlink(tmp_path, obs):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    return {"--out": tmp_path / "link"}, "is a symbolic link"


def _out_is_empty(tmp_path, obs):
    return {"--out": ""}, "does not name a folder"


def _empty_totals(tmp_path, obs):
    return {"--totals": ""}, "totals file"


def _zero_aggregates(tmp_path, obs):  # every user's update would be zero and every participant matrix would fit
    np.save(tmp_path / "zero.npy", np.zeros_like(np.load(obs["A"])))
    return {"--aggregates": tmp_path / "zero.npy"}, "zero.npy is all zero while the counts record participants"


def _fewer_coordinates_than_users(tmp_path, obs):  # rank(A) <= d < n: col(A) no longer holds the columns
    np.save(tmp_path / "thin.npy", np.load(obs["A"])[:, :5])
    return {"--aggregates": tmp_path / "thin.npy"}, "thin.npy: 5 coordinates per round for the 8 users"


def _bytes_after_the_array(tmp_path, obs):  # np.load reads the array and ignores the rest
    (tmp_path / "long.npy").write_bytes(obs["C"].read_bytes() + bytes(64))
    return {"--counts": tmp_path / "long.npy"}, "long.npy has 64 bytes after its"


def _out_name_too_long_for_its_staging_folder(tmp_path, obs):  # 250 characters: legal, `.NAME.new.XXXXXXXX` is not
    return {"--out": tmp_path / ("x" * 250)}, "cannot be written in"


def _out_in_proc(tmp_path, obs):  # /proc refuses new folders even to root, whose access bits say yes
    return {"--out": "/proc/disaggbench-out"}, "--out /proc/disaggbench-out: cannot be written in /proc"


@pytest.mark.parametrize("case", [
    _huge_aggregates, _out_is_the_inputs_folder, _out_is_a_symlink, _out_is_empty, _empty_totals, _zero_aggregates,
    _fewer_coordinates_than_users, _bytes_after_the_array, _out_name_too_long_for_its_staging_folder, _out_in_proc,
    _npz, _text, _directory, _object_array, _nan_counts, _zero_counts, _string_array, _out_is_file,
    _out_holds_other_files, _out_dir_where_a_file_goes, _out_under_a_file, _out_unwritable, _huge_window,
    _negative_window, _window_not_dividing, _negative_time_limit, _zero_time_limit, _float16_aggregates, _joint_limits_with_noise, _nan_budget, _negative_certificate_nodes,
    _unknown_device, _cuda_without_a_gpu,
], ids=lambda case: case.__name__.strip("_"))
def test_bad_disaggregate_input(tmp_path, capsys, observation, case):
    changes, names = case(tmp_path, observation)
    options = {"--aggregates": observation["A"], "--counts": observation["C"], "--window": "4", "--out": tmp_path / "new", **changes}
    check_refused(tmp_path, capsys, ["disaggregate", "--quiet", *[x for item in options.items() for x in item]], names)


def test_disaggregate_refuses_the_current_folder_as_out(tmp_path, capsys, observation, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["disaggregate", "--quiet", "--aggregates", observation["A"], "--counts", observation["C"], "--window", "4"]
    check_refused(tmp_path, capsys, [*args, "--out", "."], "does not name a folder of its own")
    check_refused(tmp_path, capsys, [*args, "--out", tmp_path], "holds the current folder")
    check_refused(tmp_path, capsys, [*args, "--out", tmp_path.parent], "holds the current folder")


def test_disaggregate_refuses_more_users_than_memory_holds(tmp_path, capsys, observation):
    counts = np.zeros((2_000_000, np.load(observation["C"]).shape[1]), dtype=np.int8)  # 2e6 users: 29 TiB of Gram
    counts[:8] = np.load(observation["C"])
    np.save(tmp_path / "many.npy", counts)
    args = ["disaggregate", "--quiet", "--aggregates", observation["A"], "--counts", tmp_path / "many.npy", "--window", "4",
            "--out", tmp_path / "new"]
    check_refused(tmp_path, capsys, args, "many.npy: 2000000 users")


def test_disaggregate_replaces_its_own_outputs_all_at_once(tmp_path, capsys, observation):
    args = ["disaggregate", "--quiet", "--aggregates", observation["A"], "--counts", observation["C"], "--window", "4", "--out", tmp_path / "out"]
    assert main([str(a) for a in args]) == 0
    assert main([str(a) for a in args]) == 0  # its own outputs are replaced, not refused
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["participants.npy", "report.json", "updates.npy"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging folder left
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["relative_misfit"] < 1e-6 and report["totals"]["unique"] == 8


def test_columns_that_miss_the_totals_are_never_unique(tmp_path, capsys):
    participants = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.save(tmp_path / "A.npy", participants @ np.random.default_rng(0).standard_normal((3, 8)))
    np.save(tmp_path / "C.npy", np.stack([participants[w * 2:(w + 1) * 2].sum(axis=0) for w in range(3)], axis=1))
    np.save(tmp_path / "S.npy", np.array([3, 1, 2, 1, 1, 1]))  # the window sums agree with the counts, the rounds do not
    args = ["disaggregate", "--quiet", "--aggregates", tmp_path / "A.npy", "--counts", tmp_path / "C.npy", "--window", "2"]
    assert main([str(a) for a in [*args, "--totals", tmp_path / "S.npy", "--out", tmp_path / "bad"]]) == 1
    assert "do not add up to --totals" in capsys.readouterr().err
    assert json.loads((tmp_path / "bad" / "report.json").read_text())["totals"]["unique"] == 0
    np.save(tmp_path / "S.npy", participants.sum(axis=1))
    assert main([str(a) for a in [*args, "--totals", tmp_path / "S.npy", "--out", tmp_path / "good"]]) == 0
    assert json.loads((tmp_path / "good" / "report.json").read_text())["totals"]["unique"] == 3


@pytest.mark.parametrize("seed", [1, 2])
def test_totals_that_contradict_the_sums_while_users_lack_columns_are_an_error(tmp_path, capsys, seed):
    # Totals permuted within each window agree with the counts' window sums, not with the rounds. Seed 2 leaves users
    # without a column, where the misfit check never compares the totals: this exited 0 with users `unique` and wrote
    # ruled-out candidates as the columns of users reported `timeout`.
    rng = np.random.default_rng(seed)
    participants = (rng.random((24, 8)) < 0.4).astype(np.int64)
    np.save(tmp_path / "A.npy", participants @ rng.normal(size=(8, 12)))
    np.save(tmp_path / "C.npy", participants.reshape(6, 4, 8).sum(axis=1).T)
    np.save(tmp_path / "S.npy", np.stack([rng.permutation(w) for w in participants.sum(axis=1).reshape(-1, 4)]).ravel())
    args = ["disaggregate", "--quiet", "--aggregates", tmp_path / "A.npy", "--counts", tmp_path / "C.npy", "--window", "4",
            "--totals", tmp_path / "S.npy", "--out", tmp_path / "out"]
    assert main([str(a) for a in args]) == 1
    assert "--totals contradict the counts and aggregates" in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["totals"]["unique"] == 0
    written = np.load(tmp_path / "out" / "participants.npy")
    without = [entry["user"] for entry in report["per_user"] if entry["status"] in ("timeout", "infeasible")]
    assert not written[:, without].any()


def test_the_report_is_standard_json(tmp_path, capsys):
    participants = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    np.save(tmp_path / "A.npy", participants @ np.random.default_rng(0).standard_normal((2, 3)))
    np.save(tmp_path / "C.npy", np.array([[1, 1], [2, 0]]))  # user 1: both rounds of window 0 fixed, none free (inf)
    main(["disaggregate", "--quiet", "--aggregates", str(tmp_path / "A.npy"), "--counts", str(tmp_path / "C.npy"),
          "--window", "2", "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"report.json holds {name}"))


def test_the_overall_fit_compares_a_with_p_times_u():
    from attacks.fit import relative_misfit

    instance = make_instance(8, 24, 4, 0.4, seed=1)
    assert relative_misfit(instance.aggregates, instance.participants, instance.updates) < 1e-12
    zero = np.zeros_like(instance.participants)
    assert relative_misfit(instance.aggregates, zero, instance.updates) == pytest.approx(1.0)
    # squares of 1e-170 underflow to 0: the norms must not (a wrong recovery once scored a misfit of 0 there)
    assert relative_misfit(instance.aggregates * 1e-170, zero, instance.updates * 1e-170) == pytest.approx(1.0)
    assert relative_misfit(instance.aggregates * 1e-170, instance.participants, instance.updates * 1e-170) < 1e-12


def test_noise_mode_on_noise_free_sums_that_it_misses_exits_1(tmp_path, capsys):
    """--noise accepts columns within a relative 0.35 of col(A): on exact sums that hid counts moved between users
    (and even the noise mode's own miss of true counts, 0.19) behind exit 0 and ten users `found`."""
    instance = make_instance(10, 40, 10, 0.5, seed=1)
    np.save(tmp_path / "A.npy", instance.aggregates)
    np.save(tmp_path / "C.npy", instance.counts)
    args = ["disaggregate", "--quiet", "--noise", "--aggregates", tmp_path / "A.npy", "--counts", tmp_path / "C.npy",
            "--window", "10", "--out", tmp_path / "out"]
    assert main([str(a) for a in args]) == 1  # noise mode misses these sums by 0.21 (0.21 to 0.35 on seeds 0 to 3)
    assert "the aggregates carry no noise" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["relative_misfit"] > 0.1
    exact = [a for a in args if a != "--noise"][:-1] + [tmp_path / "exact"]
    assert main([str(a) for a in exact]) == 0  # the same sums without --noise: every column, misfit 0


@pytest.mark.parametrize("kind", ["counts of some users", "noisy sums without --noise"])
def test_sums_of_higher_rank_than_the_users_are_refused_before_the_attack(tmp_path, capsys, kind):
    """Exact sums of n updates have rank <= n: with counts of 5 of 8 users, or noisy sums without --noise, the whole
    attack had run, written its outputs and exited 1 on the misfit (two lines)."""
    instance = make_instance(8, 24, 4, 0.4, seed=1)
    aggregates, counts = instance.aggregates, instance.counts
    if kind == "counts of some users":
        counts = counts[:5]
    else:
        aggregates = aggregates + np.random.default_rng(0).normal(0.0, 0.5, aggregates.shape)
    np.save(tmp_path / "A.npy", aggregates)
    np.save(tmp_path / "C.npy", counts)
    check_refused(tmp_path, capsys, ["disaggregate", "--quiet", "--aggregates", tmp_path / "A.npy", "--counts",
                                     tmp_path / "C.npy", "--window", "4", "--out", tmp_path / "out"],
                  f"A.npy has numerical rank {8 if kind == 'counts of some users' else 10}, above the {counts.shape[0]} users")


def test_exact_sums_logged_in_float32_are_not_taken_for_noise(tmp_path, capsys):
    """float32 rounding sits above the attack's float64 rank threshold: the rank check had refused exact float32 logs
    (numerical rank 41 for 30 users), which the attack proves unique."""
    instance = make_instance(30, 120, 10, 0.4, seed=0)
    updates = np.random.default_rng(0).normal(size=(30, 100)).astype(np.float32)
    np.save(tmp_path / "A.npy", instance.participants.astype(np.float32) @ updates)
    np.save(tmp_path / "C.npy", instance.counts)
    assert main([str(a) for a in ["disaggregate", "--quiet", "--aggregates", tmp_path / "A.npy", "--counts",
                                   tmp_path / "C.npy", "--window", "10", "--out", tmp_path / "out"]]) == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["totals"]["unique"] == 30


def test_a_misfit_from_users_without_a_column_says_so(tmp_path, capsys):
    """Counts moved between two users inside one window leave both without a column: the sums are then explained only
    in part, yet the other users' proofs stand. The error said no user was proven unique, beside a report of six."""
    instance = make_instance(8, 24, 4, 0.4, seed=1)
    counts = instance.counts.copy()
    window = int(np.flatnonzero((counts[0] > 0) & (counts[1] < 4))[0])
    counts[0, window] -= 1
    counts[1, window] += 1  # every window's total stays, so the counts still explain every round
    np.save(tmp_path / "A.npy", instance.aggregates)
    np.save(tmp_path / "C.npy", counts)
    args = ["disaggregate", "--quiet", "--aggregates", tmp_path / "A.npy", "--counts", tmp_path / "C.npy", "--window", "4",
            "--out", tmp_path / "out"]
    assert main([str(a) for a in args]) == 1
    error = capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    missing = report["totals"].get("infeasible", 0) + report["totals"].get("timeout", 0)
    assert missing >= 1 and f"{missing} user(s) have no column" in error and "no user is proven unique" not in error
    assert report["totals"]["unique"] >= 1


# ---------------------------------------------------------------- suites


def _replace(old: str, new: str):
    return lambda text: text.replace(old, new, 1)


def _append(extra: str):
    return lambda text: text + extra


SUITE_CASES = {
    "name-dotdot": (_replace('name = "tiny"', 'name = ".."'), "name '..'"),
    "name-absolute": (_replace('name = "tiny"', 'name = "/tmp/elsewhere"'), "name '/tmp/elsewhere'"),
    "name-with-slash": (_replace('name = "tiny"', 'name = "a/b"'), "name 'a/b'"),
    "name-not-string": (_replace('name = "tiny"', "name = 3"), "name 3"),
    "version-not-string": (_replace('version = "1"', "version = 1"), "version must be a string"),
    "float-rounds": (_replace("n_rounds = 24", "n_rounds = 30.5"), "n_rounds must be an integer"),
    "string-users": (_replace("n_users = 6", 'n_users = "6"'), "n_users must be an integer"),
    "bool-window": (_replace("window = 3", "window = true"), "window must be an integer"),
    "huge-users": (_replace("n_users = 6", "n_users = 1000000000"), "n_users must be at most"),
    "huge-matrix": (lambda t: t.replace("n_users = 6", "n_users = 20000").replace("n_rounds = 24", "n_rounds = 20000"),
                    "n_users * n_rounds must be at most"),
    "data-root-missing": (_replace("window = 3", 'window = 3\ndataset = "mnist"\ndata_root = "/no/such/folder"'), "data_root /no/such/folder is not a folder"),
    "data-root-not-string": (_replace("window = 3", "window = 3\ndata_root = 3"), "data_root must be a string"),
    "unknown-dataset": (_replace("window = 3", 'window = 3\ndataset = "imagenet"'), "dataset must be one of"),
    "unknown-initial-model": (_replace("window = 3", 'window = 3\ninitial_model = "random"'), "initial_model must be 'default' or 'designed'"),
    "designed-mlp": (_replace("window = 3", 'window = 3\ninitial_model = "designed"'), "initial_model 'designed' needs model = 'cnn'"),
    "grid-axis-empty": (lambda t: t.split("[[cells]]")[0] + '[[grids]]\nname = "g"\nn_users = []\nn_rounds = 24\nwindow = 3\n', "an axis has no values"),
    "nan-participation": (_replace("participation = 0.4", "participation = nan"), "participation must be finite"),
    "unknown-cell-key": (_replace("window = 3", "window = 3\nwindw = 3"), "unknown scenario field(s): windw"),
    "cell-not-table": (lambda t: "cells = [1]\n" + t.split("[[cells]]")[0], "every [[cells]] entry must be a table"),
    "duplicate-cell": (_append(TINY_CELL), "cell name 'tiny-fedsgd' appears twice"),
    "time-limit-string": (_replace("time_limit = 0.2", 'time_limit = "fast"'), "[attack] time_limit must be a number"),
    "time-limit-negative": (_replace("time_limit = 0.2", "time_limit = -2"), "[attack] time_limit must be at least 0"),
    "time-limit-zero": (_replace("time_limit = 0.2", "time_limit = 0.0"), "[attack] time_limit must be above 0 seconds"),
    "certify-string": (_replace("time_limit = 0.2", 'certify = "yes"'), "[attack] certify must be true or false"),
    "search-iterations-zero": (_replace("time_limit = 0.2", "search_iterations = 0"), "[attack] search_iterations must be at least 1"),
    "attack-adaptive": (_replace("time_limit = 0.2", "adaptive = true"), "unknown attack setting(s) ['adaptive']"),
    "unknown-attack-key": (_replace("time_limit = 0.2", "time_limt = 0.2"), "unknown attack setting(s) ['time_limt']"),
    "attack-device": (_replace("time_limit = 0.2", 'device = "cuda"'), "unknown attack setting(s) ['device']"),
    "seeds-bool": (_replace("seeds = [0]", "seeds = [true]"), "seeds must be a non-empty list"),
    "seeds-float": (_replace("seeds = [0]", "seeds = [0.5]"), "seeds must be a non-empty list"),
    "seeds-negative": (_replace("seeds = [0]", "seeds = [-1]"), "seeds must be a non-empty list"),
    "seeds-empty": (_replace("seeds = [0]", "seeds = []"), "seeds must be a non-empty list"),
    "seeds-duplicate": (_replace("seeds = [0]", "seeds = [0, 1, 0]"), "seed 0 appears twice"),
    "seeds-beyond-int64": (_replace("seeds = [0]", "seeds = [18446744073709551616]"), "seeds must be a non-empty list of integers in [0, 2^63)"),
    "label-of-another-builtin": (_append('\n[[defenses]]\nname = "noisy-counts"\nlabel = "none"\n'), "a built-in defense's name"),
    "seeds-missing": (_replace("seeds = [0]", ""), "missing key 'seeds'"),
    "unknown-top-level-key": (_replace("seeds = [0]", "seeds = [0]\nseed = 3"), "unknown key(s) ['seed']"),
    "duplicate-label": (_append('\n[[defenses]]\nname = "dp-gaussian"\nlabel = "mine"\n\n[[defenses]]\nname = "noisy-counts"\nlabel = "mine"\n'),
                        "defense label (name, or label when given) 'mine' appears twice"),
    "duplicate-defense": (_append('\n[[defenses]]\nname = "none"\n'), "'none' appears twice"),
    "label-not-string": (_append('\n[[defenses]]\nname = "dp-gaussian"\nlabel = 2\n'), "label must be a non-empty string"),
    "no-defenses": (lambda t: "defenses = []\n" + t.replace('[[defenses]]\nname = "none"\n', ""), "at least one [[defenses]]"),
    "defense-parameter-type": (_append('\n[[defenses]]\nname = "dp-gaussian"\nnoise_multiplier = "high"\n'), "parameter noise_multiplier must be a number"),
    "defense-parameter-negative": (_append('\n[[defenses]]\nname = "dp-gaussian"\nnoise_multiplier = -1.0\n'), "noise_multiplier >= 0"),
    "defense-parameter-unknown": (_append('\n[[defenses]]\nname = "dp-gaussian"\nnoise = 1.0\n'), "rejected its parameters"),
    "defense-unknown": (_append('\n[[defenses]]\nname = "no-such"\n'), "unknown defense 'no-such'"),
    "grid-rounds-per-user-string": (lambda t: t.split("[[cells]]")[0] + '[[grids]]\nname = "g"\nn_users = [6]\nrounds_per_user = "many"\nwindow = 3\n',
                                    "rounds_per_user must be a positive number"),
    "grid-rounds-per-user-overflow": (lambda t: t.split("[[cells]]")[0] + '[[grids]]\nname = "g"\nn_users = [6]\nrounds_per_user = 1e308\nwindow = 3\n',
                                      "exceeds 1000000 rounds"),
    "grid-users-string-with-rounds-per-user": (lambda t: t.split("[[cells]]")[0] + '[[grids]]\nname = "g"\nn_users = ["6"]\nrounds_per_user = 2\nwindow = 3\n',
                                               "n_users must be an integer"),
    "horizon-infinite": (_replace("n_rounds = 24", "horizons = [inf]"), "each finite"),
    "horizon-overflow": (_replace("n_rounds = 24", "horizons = [1e308]"), "exceeds 1000000 rounds"),
    "lp-work-string": (_replace("time_limit = 0.2", 'lp_work = "abc"'), "[attack] lp_work must be an integer"),
    "search-work-float": (_replace("time_limit = 0.2", "search_work = 1.5"), "[attack] search_work must be an integer"),
    "utility-float-rounds": (_append('\n[utility]\nname = "u"\ndataset = "digits"\nn_rounds = 1.5\n'), "[utility] n_rounds must be an integer"),
    "utility-string-clients": (_append('\n[utility]\nname = "u"\ndataset = "digits"\nn_clients = "10"\n'), "suite.toml: [utility] n_clients must be an integer"),
    "label-builtin-with-a-space": (_append('\n[[defenses]]\nname = "rounded-counts"\nlabel = "none "\n'), "surrounding spaces"),
    "label-with-a-newline": (_append('\n[[defenses]]\nname = "rounded-counts"\nlabel = "a\\nb"\n'), "control characters"),
    # a Cyrillic o: the row read "nоne", ranked first, passing for the built-in `none`
    # fields this cell's updates never read: they only changed its task keys
    "synthetic-cell-with-a-model": (_replace("window = 3", 'window = 3\nupdate_kind = "synthetic"\nmodel = "cnn"\nbatch_size = 3'),
                                    "cell 'tiny-fedsgd': model, batch_size have no effect with update_kind = \"synthetic\""),
    "fedsgd-cell-with-epochs": (_replace("window = 3", "window = 3\nlocal_epochs = 7"),
                                'local_epochs has no effect with local_training = "fedsgd"'),
    "model-cell-with-synthetic-dim": (_replace("window = 3", "window = 3\nsynthetic_dim = 5000"),
                                      "synthetic_dim has no effect with model updates"),
    "look-alike-label": (_append('\n[[defenses]]\nname = "rounded-counts"\nlabel = "n\u043ene"\n'), "must be ASCII"),
    "horizons-one-round-count": (_replace("n_rounds = 24", "horizons = [4, 4.0000000001]"), "give the same number of rounds twice"),
    "cell-name-empty": (_replace('name = "tiny-fedsgd"', 'name = ""'), "name must not be empty"),
    "mip-checks-zero": (_replace("time_limit = 0.2", "mip_checks = 0"), "[attack] mip_checks must be at least 1"),
    "simplex-iterations-zero": (_replace("time_limit = 0.2", "simplex_iterations = 0"), "[attack] simplex_iterations must be at least 1"),
    "grid-rounds-per-user-not-whole": (lambda t: t.split("[[cells]]")[0] + '[[grids]]\nname = "g"\nn_users = [4]\nrounds_per_user = 1.1\nwindow = 3\n',
                                       "not a whole number of rounds"),
    "grid-too-many-cells": (lambda t: t.split("[[cells]]")[0] + '[[grids]]\nname = "g"\nn_users = [' + ", ".join(map(str, range(2, 202)))
                            + ']\nparticipation = [' + ", ".join(f"0.{k:03d}" for k in range(1, 101)) + ']\nn_rounds = 24\nwindow = 3\n',
                            "cross to 20000 cells, more than 10000"),
    "utility-huge-clients": (_append('\n[utility]\nname = "u"\ndataset = "digits"\nn_clients = 1000000000000\n'), "n_clients must be between 2 and"),
    "utility-huge-epochs": (_append('\n[utility]\nname = "u"\ndataset = "digits"\nlocal_epochs = 100000000000\n'), "local_epochs must be between 1 and"),
    "utility-huge-rounds": (_append('\n[utility]\nname = "u"\ndataset = "digits"\nn_rounds = 1000000000000\n'), "n_rounds must be between 1 and"),
    "utility-infinite-rate": (_append('\n[utility]\nname = "u"\ndataset = "digits"\nlearning_rate = inf\n'), "[utility] learning_rate must be finite"),
    # data sets are looked for before any task runs (each task failed on them, exit 1, with results written)
    "cell-mnist-without-its-files": (_replace("window = 3\n", 'window = 3\ndataset = "mnist"\ndata_root = "/"\n'),
                                     "mnist: missing file /train-images-idx3-ubyte"),
    "utility-mnist-without-its-files": (_append('\n[utility]\nname = "u"\ndataset = "mnist"\ndata_root = "/"\n'), "mnist: missing file"),
    "utility-root-missing": (_append('\n[utility]\nname = "u"\ndataset = "mnist"\ndata_root = "/nonexistent-disaggbench"\n'),
                             "root /nonexistent-disaggbench is not a folder"),
    "utility-cifar-without-root": (_append('\n[utility]\nname = "u"\ndataset = "cifar10"\n'), "'cifar10' needs a root folder"),
    "noisy-counts-overflowing-scale": (_append('\n[[defenses]]\nname = "noisy-counts"\nscale = 1e308\n'), "scale <= 1e+09"),
    "composed-name-not-string": (_append('\n[[defenses]]\nname = "composed"\ndefenses = [{name = 5}]\n'), "each name a string"),
    "deeply-nested": (_replace("seeds = [0]", "seeds = " + "[" * 600 + "]" * 600), "nested too deeply"),
    "empty-file": (lambda t: "", "missing key 'name'"),
    "invalid-toml": (_append("\n[[["), "invalid TOML"),
}


@pytest.mark.parametrize("case", list(SUITE_CASES))
def test_bad_suite_file(tmp_path, capsys, case):
    edit, names = SUITE_CASES[case]
    path = tmp_path / "suite.toml"
    path.write_text(edit(SUITE))
    check_refused(tmp_path, capsys, ["run", "--suite", path, "--results", tmp_path / "results", "--quiet"], names)


def test_a_folder_or_binary_file_as_suite(tmp_path, capsys):
    (tmp_path / "folder.toml").mkdir()
    check_refused(tmp_path, capsys, ["run", "--suite", tmp_path / "folder.toml", "--results", tmp_path / "r", "--quiet"], "folder.toml is a directory")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00name")
    check_refused(tmp_path, capsys, ["run", "--suite", tmp_path / "binary.toml", "--results", tmp_path / "r", "--quiet"], "binary.toml cannot be read as UTF-8")


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    return path


@pytest.mark.parametrize("args, names", [
    (["--results", UNWRITABLE], "not writable"),
    (["--task-timeout", "-1"], "--task-timeout"),
    (["--task-timeout", "nan"], "--task-timeout"),
    (["--workers", "0"], "--workers"),
    (["--workers", "1000000"], "--workers must be between 1 and 1024"),
    (["--device", "tpu"], "--device"),
    (["--defense", "none", "--defense", "none"], "share the label 'none'"),
    (["--defense", "missing.py:X"], "missing.py does not exist"),
    (["--defense", "folder.py:X"], "folder.py is a directory"),
    (["--defense", "syntax.py:X"], "syntax.py failed to load: SyntaxError"),
    (["--defense", "syntax.py:Missing"], "syntax.py failed to load"),
])
def test_bad_run_option(tmp_path, capsys, suite_file, args, names, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.py").mkdir()
    (tmp_path / "syntax.py").write_text("class X(:\n")
    results = [] if "--results" in args else ["--results", tmp_path / "results"]  # an option is given once
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, *results, "--quiet", *args], names)


def test_results_path_that_is_a_file(tmp_path, capsys, suite_file):
    (tmp_path / "results").write_text("not a folder")
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", tmp_path / "results", "--quiet"], "is a file, not a folder")


def test_tasks_path_that_is_a_file(tmp_path, capsys, suite_file):
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny" / "tasks").write_text("not a folder")
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", tmp_path / "results", "--quiet"], "tasks is a file")


@pytest.mark.parametrize("args, names", [
    (["disaggregate", "--window", "1.5", "--aggregates", "a", "--counts", "c", "--out", "o"], "argument --window: invalid int value: '1.5'"),
    (["run", "--workers", "two"], "argument --workers"),
    (["run", "--format", "pdf"], "argument --format"),
    (["verify"], "the following arguments are required: entry"),
    ([], "the following arguments are required: command"),
    # an option given twice: the last value had silently won
    (["disaggregate", "--window", "4", "--window", "3", "--aggregates", "a", "--counts", "c", "--out", "o"],
     "--window is given more than once"),
    (["leaderboard", "--suite", "quick", "--sui", "standard"], "--suite is given more than once"),  # an abbreviation too
    (["verify", "e.json", "--seed", "1", "--seed=2"], "--seed is given more than once"),
    (["run", "--quiet", "--quiet"], "--quiet is given more than once"),
])
def test_bad_options_are_one_line(tmp_path, capsys, args, names):
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and names in err, err
    assert snapshot(tmp_path) == before


def _entry_with(result_changes: dict) -> str:
    """The committed `none` entry with its first task's result changed (and its hash recomputed)."""
    from leaderboard.submission import result_hash

    entry = json.loads((ROOT / "leaderboard" / "entries" / "none.json").read_text())
    task = entry["tasks"][0]
    task["result"].update(result_changes)
    task["sha256"] = result_hash(task["result"])
    return json.dumps(entry)


@pytest.mark.parametrize("text, names", [
    (lambda: _entry_with({}).replace('"attack_success": ', '"attack_success": 1e999, "x": ', 1), "out of float range"),
    (lambda: _entry_with({}).replace('"attack_success": ', '"attack_success": NaN, "x": ', 1), "NaN is not JSON"),
    (lambda: _entry_with({}).replace('"attack_success": ', '"attack_success": 1' + "0" * 400 + ', "x": ', 1), "lies outside the 64-bit range"),
    (lambda: "[" * 100000 + "]" * 100000, "nested too deeply"),
    (lambda: _entry_with({"attack_success": 5.0}), "attack_success = 5.0 lies outside its range"),
    (lambda: _entry_with({"attack_success": "high"}), "attack_success must be a number in [0.0, 1.0] or null"),
    (lambda: _entry_with({"epsilon": -3}), "epsilon = -3 lies outside its range"),
    (lambda: _entry_with({"attack_success": "-inf"}), "attack_success must be a number in [0.0, 1.0] or null"),
    (lambda: _entry_with({"epsilon": "-inf"}), "epsilon must be a number"),
    (lambda: _entry_with({"status": "bogus"}), "status must be ok, failed"),  # rendered as a row of dashes
    (lambda: _entry_with({"attack_success": None}), "an ok row without attack_success"),
])
def test_an_entry_with_impossible_numbers_is_refused(tmp_path, capsys, text, names):
    entries = tmp_path / "entries"
    entries.mkdir()
    (entries / "none.json").write_text(text())
    check_refused(tmp_path, capsys, ["leaderboard", "--readme", "--entries", entries, "--out", tmp_path / "R.md"], names)


def test_a_folder_as_entry(tmp_path, capsys):
    check_refused(tmp_path, capsys, ["verify", tmp_path], "is a directory")


def test_a_plugin_with_two_classes_of_one_name_is_refused(tmp_path, capsys, suite_file):
    plugin = tmp_path / "two.py"
    plugin.write_text("from defenses.base import Defense\n\nclass A(Defense):\n    name = 'same'\n\nclass B(Defense):\n    name = 'same'\n")
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", tmp_path / "r", "--quiet",
                                     "--defense", f"{plugin}:A", "--defense", f"{plugin}:B"], "share the label 'same'")


def test_a_dangling_symbolic_link_as_results_is_refused_before_any_work(tmp_path, capsys, suite_file):
    (tmp_path / "results").symlink_to(tmp_path / "nowhere")
    before = sorted(p.name for p in tmp_path.rglob("*"))  # lstat only: the link points nowhere
    code = main(["run", "--suite", str(suite_file), "--results", str(tmp_path / "results"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a symbolic link to nothing" in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and not (tmp_path / "nowhere").exists()


def test_a_plugin_that_exits_on_import_is_refused(tmp_path, capsys, suite_file):
    plugin = tmp_path / "exits.py"
    plugin.write_text("import sys\nsys.exit(0)\n")
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", tmp_path / "r", "--quiet",
                                     "--defense", f"{plugin}:X"], "exits.py failed to load: SystemExit")


PLUGIN_HEAD = "import sys\nimport numpy as np\nfrom defenses.accounting import Privacy\nfrom defenses.base import Analytics, Defense\n\n"


@pytest.mark.parametrize("body, names", [
    ("class X(Defense):\n    name = 'quits'\n    def __init__(self):\n        sys.exit(5)\n", "SystemExit"),
    ("class X(Defense):\n    name = 'quits'\n    def transform_update(self, update, rng):\n        sys.exit(4)\n", "hook transform_update raised SystemExit"),
    ("class X(Defense):\n    @property\n    def name(self):\n        raise RuntimeError('no name')\n", "attribute name raised RuntimeError"),
    ("class X(Defense):\n    name = 'w'\n    def transform_analytics(self, c, window, rng):\n        return Analytics(None, float('nan'), None)\n",
     "must return a window of 1 to 10^9 rounds"),
    ("class X(Defense):\n    name = 'w'\n    def transform_analytics(self, c, window, rng):\n        return Analytics(None, 2.5, None)\n",
     "must return a window of 1 to 10^9 rounds"),
    ("class X(Defense):\n    name = 'neg'\n    def transform_analytics(self, c, window, rng):\n"
     "        counts = np.add.reduceat(c.astype(np.int64), np.arange(0, c.shape[0], window), axis=0).T\n"
     "        return Analytics(-counts - 5, window, None)\n", "non-negative integer counts"),
    ("class X(Defense):\n    name = 'tot'\n    def transform_analytics(self, c, window, rng):\n"
     "        return Analytics(None, window, np.full(c.shape[0], np.nan))\n", "non-negative integer totals"),
    ("class X(Defense):\n    name = 'cplx'\n    def transform_update(self, update, rng):\n        return update + 1j\n", "numeric array"),
    ("class X(Defense):\n    name = 'ghost'\n    def choose_participants(self, selected, round_index, rng):\n"
     "        return selected, np.zeros_like(selected)\n", "contribute without checking in"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'count_bucket': float('nan')}\n", "count_bucket = nan"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'count_bucket': 1j}\n", "count_bucket = 1j"),
    ("class X(Defense):\n    name = 'eps'\n    def privacy(self, n_rounds, participation, max_participations, delta):\n"
     "        return Privacy(epsilon=-1.0, level='user')\n", "negative epsilon"),
    ("class X(Defense):\n    name = 'none'\n", "a built-in defense's name"),
    # held out, found by trying to break the guard: each ran into the tasks (a traceback, a failed run, or exit 0)
    ("class X(Defense):\n    name = 'base'\n    def transform_update(self, update, rng):\n        raise BaseException('x')\n",
     "hook transform_update raised BaseException"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'count_bucket': 'x'}\n",
     "count_bucket = 'x': the adaptive attack reads it as an integer"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'count_bucket': 10**30}\n", "count_bucket = 1000"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'padding_rate': 2.0}\n", "number in [0, 1]"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'groups': 'abc'}\n", "list of integers"),
    # fixed groups for 2 users where the cell has 6: each task had failed on it after its simulation
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'groups': [0, 1]}\n",
     "public_parameters gives fixed groups for 2 users; cell 'tiny-fedsgd' has 6"),
    # fixed groups as long as the validation run's 4 users: each task had failed on them
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'groups': [0, 0, 1, 1]}\n",
     "public_parameters gives fixed groups for 4 users; cell 'tiny-fedsgd' has 6"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'update_noise_std': -1}\n", "number >= 0"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {1: 2}\n", "has the key 1"),
    ("class X(Defense):\n    name = 'pp'\n    def public_parameters(self):\n        return {'count_noise_scale': 1e300}\n",
     "count_noise_scale = 1e+300"),
    ("class X(Defense):\n    name = 'none '\n", "a built-in defense's name"),
    ("class X(Defense):\n    name = 'pad'\n    def padded_uploads(self, count, dim, rng):\n        return np.full((count, dim), 9e99)\n",
     "uploads whose sum lies beyond 1e+100"),
    ("class X(Defense):\n    name = 'eps'\n    def privacy(self, n_rounds, participation, max_participations, delta):\n"
     "        return Privacy(epsilon=1.0, epsilon_amplified=5.0, level='user')\n", "epsilon_amplified 5 above epsilon 1"),
    ("class X(Defense):\n    name = 'big'\n    def transform_update(self, update, rng):\n        return update * 1e300\n",
     "beyond 1e+100 in magnitude"),
    ("class X(Defense):\n    name = 'many'\n    def transform_analytics(self, c, window, rng):\n"
     "        counts = np.add.reduceat(c.astype(np.int64), np.arange(0, c.shape[0], window), axis=0).T\n"
     "        return Analytics(counts + 50, window, None)\n", "more often in a window than"),
    ("class X(Defense):\n    name = 'crowd'\n    def transform_analytics(self, c, window, rng):\n"
     "        return Analytics(None, window, c.sum(axis=1).astype(np.int64) + 100)\n", "more participants in a round than"),
    ("from defenses.analytics import NoisyCounts\n\nclass X(NoisyCounts):\n    pass\n", "a built-in defense's name"),
])
def test_a_plugin_that_misbehaves_is_refused_before_any_work(tmp_path, capsys, suite_file, body, names):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN_HEAD + body)
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", tmp_path / "r", "--quiet",
                                     "--defense", f"{plugin}:X"], names)


@pytest.mark.parametrize("address", ["::::", "foo://x:1", "tcp://host:notaport", "tcp://127.0.0.1:99999", "tcp://a b:80",
                                     "tcp://127.0.0.1:1"])  # nothing listens: the suite's one task ran here, exit 0
def test_a_malformed_scheduler_address_is_refused(tmp_path, capsys, suite_file, address):
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", tmp_path / "r", "--quiet", "--device", "cpu",
                                     "--scheduler", address], "--scheduler")


@pytest.mark.parametrize("scheme", ["tls", "ws", "wss", "ucx", "inproc"])
def test_a_scheduler_scheme_other_than_tcp_is_refused(tmp_path, capsys, suite_file, scheme):
    """Only tcp:// is checked for an answer: a run of one task went on here with exit 0, two seeds ended in a traceback."""
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", tmp_path / "r", "--quiet", "--device", "cpu",
                                     "--scheduler", f"{scheme}://127.0.0.1:1"], f"--scheduler '{scheme}://127.0.0.1:1': only tcp://")
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", tmp_path / "r", "--quiet", "--device", "cpu",
                                     "--scheduler", "127.0.0.1:1"], "nothing answers there")  # a bare host:port is tcp


# ---------------------------------------------------------------- stored results and the leaderboard


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A results folder holding the tiny suite, run once for the module."""
    root = tmp_path_factory.mktemp("stored")
    (root / "tiny.toml").write_text(SUITE)
    assert main(["run", "--suite", str(root / "tiny.toml"), "--results", str(root / "results"), "--quiet"]) == 0
    return root


def test_another_suite_of_the_same_name_and_version_is_refused_its_folder(tmp_path, capsys, stored):
    """Another suite file named like the stored one, same version, other cells: its run would have replaced the
    stored suite's table with its own rows."""
    results = Path(shutil.copytree(stored / "results", tmp_path / "results"))
    (tmp_path / "other.toml").write_text(SUITE.replace("participation = 0.4", "participation = 0.5"))
    check_refused(tmp_path, capsys, ["run", "--suite", tmp_path / "other.toml", "--results", results, "--quiet"],
                  "holds another suite named 'tiny', version '1'")


@pytest.mark.parametrize("out, names", [
    (lambda d: d, "is a directory"),
    (lambda d: d / "plain" / "board.md", "is a file, not a folder"),
    (lambda d: Path(UNWRITABLE) / "board.md", "not writable"),
])
def test_bad_leaderboard_out(tmp_path, capsys, stored, out, names):
    (tmp_path / "plain").write_text("x")
    check_refused(tmp_path, capsys, ["leaderboard", "--suite", "tiny", "--results", stored / "results", "--out", out(tmp_path)], names)


def test_bad_leaderboard_html_plot_path_and_empty_out(tmp_path, capsys, stored):
    (tmp_path / "index-recovery-vs-rounds.png").mkdir()  # where a plot of the page goes
    args = ["leaderboard", "--suite", "tiny", "--results", stored / "results", "--format", "html"]
    check_refused(tmp_path, capsys, [*args, "--out", tmp_path / "index.html"], "index-recovery-vs-rounds.png is a directory")
    check_refused(tmp_path, capsys, [*args, "--out", ""], "must name a file")


def test_leaderboard_reads_a_suite_file_as_run_does(tmp_path, capsys, stored):
    """`run --suite FILE.toml` stores under the suite's name; `leaderboard --suite FILE.toml` had looked for a
    folder named after the file and told the user to run the suite they had run."""
    assert main(["leaderboard", "--suite", str(stored / "tiny.toml"), "--results", str(stored / "results"),
                 "--format", "csv"]) == 0
    assert "none" in capsys.readouterr().out


def test_html_page_of_a_suite_without_utility_draws_the_plot_it_can(tmp_path, capsys, stored):
    """The tiny suite declares no utility task: the page had been refused ("no defense has both attack_success and a
    utility drop to plot") although it renders without --out; it now shows the recovery plot alone."""
    code = main(["leaderboard", "--suite", "tiny", "--results", str(stored / "results"), "--format", "html",
                 "--out", str(tmp_path / "index.html")])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index-recovery-vs-rounds.png", "index.html"]
    page = (tmp_path / "index.html").read_text()
    assert "index-recovery-vs-rounds.png" in page and "success-vs-utility" not in page


@pytest.mark.parametrize("extra, names", [
    (["--format", "latex"], "--format does not apply to --readme"),
    (["--cells", "--suite", "tiny"], "--suite, --cells do not apply to --readme"),
    (["--results", "elsewhere"], "--results does not apply to --readme"),
])
def test_table_options_with_readme_are_refused_not_ignored(tmp_path, capsys, extra, names):
    check_refused(tmp_path, capsys, ["leaderboard", "--readme", "--out", tmp_path / "R.md", *extra], names)


def test_a_results_table_without_its_scenarios_is_refused(tmp_path, capsys, stored):
    import pandas as pd

    (tmp_path / "results" / "tiny").mkdir(parents=True)
    table = pd.read_parquet(stored / "results" / "tiny" / "results.parquet").drop(columns=["scenario"])
    table.to_parquet(tmp_path / "results" / "tiny" / "results.parquet")
    check_refused(tmp_path, capsys, ["leaderboard", "--suite", "tiny", "--results", tmp_path / "results"], "lacks column(s): scenario")


def test_the_readme_never_overwrites_an_entry_and_names_a_file_given_as_entries(tmp_path, capsys):

    entries = tmp_path / "entries"
    entries.mkdir()
    shutil.copy(ROOT / "leaderboard" / "entries" / "none.json", entries / "none.json")
    check_refused(tmp_path, capsys, ["leaderboard", "--readme", "--entries", entries, "--out", entries / "none.json"],
                  "would overwrite an entry")
    check_refused(tmp_path, capsys, ["leaderboard", "--readme", "--entries", entries / "none.json", "--out", tmp_path / "R.md"],
                  "is a file, not a folder")


def test_entries_without_readme_is_refused_not_ignored(tmp_path, capsys):
    check_refused(tmp_path, capsys, ["leaderboard", "--entries", tmp_path, "--results", tmp_path], "--entries applies to --readme only")


def test_bad_leaderboard_suite_and_corrupted_table(tmp_path, capsys, stored):
    check_refused(tmp_path, capsys, ["leaderboard", "--suite", "..", "--results", stored / "results"], "--suite '..'")
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    data = (stored / "results" / "tiny" / "results.parquet").read_bytes()
    (tmp_path / "results" / "tiny" / "results.parquet").write_bytes(data[: len(data) // 2])
    check_refused(tmp_path, capsys, ["leaderboard", "--suite", "tiny", "--results", tmp_path / "results"], "results.parquet cannot be read")


@pytest.mark.parametrize("corrupt, names", [
    (lambda t: t.assign(attack_success=t["attack_success"].astype(str)), "column attack_success holds"),
    (lambda t: t.assign(attack_success=7.0), "attack_success = 7.0 lies outside [0.0, 1.0]"),
    (lambda t: t.assign(attack_success=float("inf")), "attack_success = inf lies outside"),
    (lambda t: t.assign(seed=t["seed"].astype(bool)), "column seed holds bool values"),
    (lambda t: __import__("pandas").concat([t, t]), "appears twice"),
    (lambda t: t.assign(status="bogus"), "status must be ok, failed"),
    (lambda t: t.assign(scenario=None), "column scenario holds values that are not names"),
    (lambda t: t.assign(defense=5), "column defense holds values that are not names"),
    (lambda t: t.assign(horizon="abc"), "column horizon holds values that are not positive numbers"),
    (lambda t: t.assign(horizon=-4), "column horizon holds values that are not positive numbers"),
    (lambda t: t.assign(seed=-7), "not integers >= 0"),
])
def test_a_tampered_results_table_is_refused_not_rendered(tmp_path, capsys, stored, corrupt, names):
    """Strings in a score column rendered as blanks, out-of-range values were clipped into range, and duplicated
    rows counted every task twice, all with exit 0."""
    import pandas as pd

    (tmp_path / "results" / "tiny").mkdir(parents=True)
    table = corrupt(pd.read_parquet(stored / "results" / "tiny" / "results.parquet"))
    table.to_parquet(tmp_path / "results" / "tiny" / "results.parquet")
    check_refused(tmp_path, capsys, ["leaderboard", "--suite", "tiny", "--results", tmp_path / "results"], names)


@pytest.mark.parametrize("content", [b'{"status": "ok", "seed"', b"[1, 2]", b"\xff\xfe", b""])
def test_a_corrupted_stored_task_is_named_and_recomputed(tmp_path, capsys, stored, content):

    results = Path(shutil.copytree(stored / "results", tmp_path / "results"))
    task = next((results / "tiny" / "tasks").glob("*.json"))
    good = json.loads(task.read_text())
    task.write_bytes(content)
    code = main(["run", "--suite", str(stored / "tiny.toml"), "--results", str(results), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("\n") == 1 and err.startswith(f"warning: stored task {task} is corrupted") and "recomputed" in err
    again = json.loads(task.read_text())
    assert {k: v for k, v in again.items() if not k.endswith("_seconds")} == {k: v for k, v in good.items() if not k.endswith("_seconds")}


@pytest.mark.parametrize("edit", [{"attack_success": "high"}, {"attack_success": 5.0}, {"seed": "zero"}, {"defense": 7},
                                  {"utility_drop": -3.0}, None, {"defense": "dp-fedavg"}, {"seed": 5}, {"status": "bogus"},
                                  {"seed": 10**30}, {"extra": {"a": [1, {"b": 2}]}}], ids=str)
def test_an_edited_stored_task_is_named_and_recomputed(tmp_path, capsys, stored, edit):
    """A stored row whose scores or identity no task writes (out of range, text for a number): it went into the
    results table as it was (exit 0, or a pandas traceback for the text), or, for a bare {"status": "ok"}, replaced
    the whole table with one blank row before failing."""

    results = Path(shutil.copytree(stored / "results", tmp_path / "results"))
    task = next((results / "tiny" / "tasks").glob("*.json"))
    good = json.loads(task.read_text())
    task.write_text(json.dumps({**good, **edit} if edit else {"status": "ok"}))
    code = main(["run", "--suite", str(stored / "tiny.toml"), "--results", str(results), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith(f"warning: stored task {task} is corrupted") and "recomputed" in err
    again = json.loads(task.read_text())
    assert {k: v for k, v in again.items() if not k.endswith("_seconds")} == {k: v for k, v in good.items() if not k.endswith("_seconds")}


def test_a_folder_where_a_task_is_stored_is_refused_before_any_work(tmp_path, capsys, stored):
    """tasks/<key>.json as a folder: the task ran, then its result was lost on a raw rename error."""

    results = Path(shutil.copytree(stored / "results", tmp_path / "results"))
    task = next((results / "tiny" / "tasks").glob("*.json"))
    task.unlink()
    task.mkdir()
    check_refused(tmp_path, capsys, ["run", "--suite", stored / "tiny.toml", "--results", results, "--quiet"],
                  f"{task} is not a plain file")


def test_the_leaderboard_is_never_written_over_what_the_tool_stored_or_reads(tmp_path, capsys, stored):
    import os

    results = Path(shutil.copytree(stored / "results", tmp_path / "results"))
    args = ["leaderboard", "--suite", "tiny", "--results", results, "--out"]
    task = next((results / "tiny" / "tasks").glob("*.json"))
    check_refused(tmp_path, capsys, [*args, results / "tiny" / "results.parquet"], "is an existing .parquet file")
    check_refused(tmp_path, capsys, [*args, task], f"lies inside {results / 'tiny'}")
    shutil.copy(stored / "tiny.toml", tmp_path / "tiny.toml")
    check_refused(tmp_path, capsys, [*args, tmp_path / "tiny.toml"], "is an existing .toml file")
    os.mkfifo(tmp_path / "pipe")  # as /dev/null: a rename would put a plain file in its place
    check_refused(tmp_path, capsys, [*args, tmp_path / "pipe"], "is not a plain file")
    (tmp_path / "target.md").write_text("x")
    (tmp_path / "link.md").symlink_to(tmp_path / "target.md")
    check_refused(tmp_path, capsys, [*args, tmp_path / "link.md"], "is a symbolic link")
    check_refused(tmp_path, capsys, [*args, f"{tmp_path / 'new'}/"], "must name a file")
    other = Path(shutil.copytree(stored / "results", tmp_path / "other"))  # another results folder, not --results
    check_refused(tmp_path, capsys, [*args, other / "tiny" / "results.csv"], "is a stored result or leaderboard entry")
    check_refused(tmp_path, capsys, [*args, next((other / "tiny" / "tasks").glob("*.json"))], "is a stored result")
    shutil.copy(ROOT / "leaderboard" / "entries" / "none.json", tmp_path / "entry.json")  # an entry outside entries/
    check_refused(tmp_path, capsys, [*args, tmp_path / "entry.json"], "is a stored result or leaderboard entry")


def test_an_edited_plugin_file_is_re_run_not_reused(tmp_path, capsys, suite_file):
    plugin = tmp_path / "mine.py"
    plugin.write_text("from defenses.base import Defense\n\nclass Mine(Defense):\n    name = 'mine'\n")
    args = ["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet", "--defense", f"{plugin}:Mine"]
    assert main(args) == 0
    first = sorted(p.name for p in (tmp_path / "r" / "tiny" / "tasks").glob("*.json"))
    assert main(args) == 0  # unchanged: reused
    assert sorted(p.name for p in (tmp_path / "r" / "tiny" / "tasks").glob("*.json")) == first
    plugin.write_text(plugin.read_text() + "\n    def transform_aggregate(self, aggregate, rng):\n        return aggregate * 2.0\n")
    assert main(args) == 0
    after = sorted(p.name for p in (tmp_path / "r" / "tiny" / "tasks").glob("*.json"))
    assert len(after) == 2 and set(first) < set(after)  # a new key: the edited defense ran


def test_an_edited_helper_module_of_a_plugin_is_re_run_not_reused(tmp_path, capsys, suite_file):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "mine.py").write_text("from defenses.base import Defense\nfrom mine_helper import factor\n\n"
                                    "class Mine(Defense):\n    name = 'mine'\n\n"
                                    "    def transform_aggregate(self, aggregate, rng):\n"
                                    "        return aggregate * factor()\n")
    (folder / "mine_helper.py").write_text("def factor():\n    return 1.0\n")
    args = ["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
            "--defense", f"{folder / 'mine.py'}:Mine"]
    assert main(args) == 0  # the helper beside the plugin imports
    first = sorted(p.name for p in (tmp_path / "r" / "tiny" / "tasks").glob("*.json"))
    (folder / "mine_helper.py").write_text("def factor():\n    return 0.0\n")  # sums of zeros: nothing to find
    assert main(args) == 0
    after = sorted(p.name for p in (tmp_path / "r" / "tiny" / "tasks").glob("*.json"))
    assert len(after) == 2 and set(first) < set(after)  # a new key: the helper's edit re-ran the defense
    scores = {name: json.loads((tmp_path / "r" / "tiny" / "tasks" / name).read_text())["attack_success"]
              for name in after}
    assert scores[first[0]] > 0 and scores[(set(after) - set(first)).pop()] == 0  # it ran the edited helper's code


def test_the_source_and_device_are_in_the_key():
    from dataclasses import replace

    from benchmark.suite import expand, load_suite

    task = expand(load_suite("quick"))[0]
    assert task.key() == task.key("cpu") != task.key("cuda")
    assert task.key(source="0" * 16) != task.key()
    assert replace(task, scenario=replace(task.scenario, seed=5)).key() != task.key()


def test_run_defense_keeps_the_suites_rows(tmp_path, capsys, stored):

    import pandas as pd

    results = Path(shutil.copytree(stored / "results", tmp_path / "results"))
    code = main(["run", "--suite", str(stored / "tiny.toml"), "--results", str(results), "--quiet", "--defense", "totals-only"])
    assert code == 0
    table = pd.read_parquet(results / "tiny" / "results.parquet")
    assert sorted(table["defense"]) == ["none", "totals-only"]
    assert "totals-only" in capsys.readouterr().out


# ---------------------------------------------------------------- submit and verify


def test_bad_submit_entries_folder(tmp_path, capsys, stored):
    (tmp_path / "entries").write_text("a file")
    check_refused(tmp_path, capsys, ["submit", "none", "--name", "x", "--suite", stored / "tiny.toml", "--entries",
                                     tmp_path / "entries", "--results", tmp_path / "r", "--quiet"], "is a file, not a folder")


def test_submit_entries_inside_the_suites_results_is_refused(tmp_path, capsys, stored):
    """An entry written into results/<suite>/tasks sat among the store's task files."""
    results = Path(shutil.copytree(stored / "results", tmp_path / "results"))
    check_refused(tmp_path, capsys, ["submit", "none", "--name", "x", "--suite", stored / "tiny.toml", "--entries",
                                     results / "tiny" / "tasks", "--results", results, "--quiet"],
                  "lies inside the results of suite 'tiny'")


# ---------------------------------------------------------------- paths the system cannot look up or write


def test_a_loop_of_symbolic_links_in_an_output_path_is_refused(tmp_path, tmp_path_factory, capsys, observation, stored):
    """Path.resolve raised RuntimeError (a traceback) on Python 3.11."""

    loops = tmp_path_factory.mktemp("loops")  # outside tmp_path, whose snapshot would stat the loop
    (loops / "a").symlink_to(loops / "b")
    (loops / "b").symlink_to(loops / "a")
    check_refused(tmp_path, capsys, ["disaggregate", "--quiet", "--aggregates", observation["A"], "--counts", observation["C"],
                                     "--window", "4", "--out", loops / "a" / "sub"], f"--out: too many levels of symbolic links: {loops}")
    board = ["leaderboard", "--suite", "tiny", "--results", stored / "results", "--out"]
    check_refused(tmp_path, capsys, [*board, loops / "a" / "x.md"], "--out: too many levels of symbolic links")
    check_refused(tmp_path, capsys, [*board, loops / "a" / "x.html", "--format", "html"], "--out: too many levels")
    (tmp_path / "entries").mkdir()
    shutil.copy(ROOT / "leaderboard" / "entries" / "none.json", tmp_path / "entries" / "none.json")
    check_refused(tmp_path, capsys, ["leaderboard", "--readme", "--entries", tmp_path / "entries", "--out", loops / "a" / "r.md"],
                  "--out: too many levels of symbolic links")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_results_under_proc_are_refused_before_any_work(tmp_path, capsys, suite_file):
    """/proc refuses new folders even to root, whose access bits say yes: the task ran, then storing it failed."""
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", "/proc/disaggbench-r", "--quiet"],
                  "--results /proc/disaggbench-r/tiny/tasks: ")  # root: cannot be written; others: not writable
    check_refused(tmp_path, capsys, ["submit", "none", "--name", "x", "--suite", suite_file, "--entries", tmp_path / "entries",
                                     "--results", "/proc/disaggbench-r", "--quiet"], "--results /proc/disaggbench-r")


def test_control_characters_in_a_path_are_escaped_on_the_one_error_line(tmp_path, capsys, observation, suite_file):
    disaggregate = ["disaggregate", "--quiet", "--counts", observation["C"], "--window", "4"]
    cases = [
        ([*disaggregate, "--aggregates", tmp_path / "no\nsuch.npy", "--out", tmp_path / "o"], r"no\nsuch.npy does not exist"),
        ([*disaggregate, "--aggregates", tmp_path / "ünï\r\x1b[31m.npy", "--out", tmp_path / "o"], r"ünï\r\x1b[31m.npy"),
        ([*disaggregate, "--aggregates", observation["A"], "--out", observation["A"] / "o\tx\u2028y"], r"A.npy/o\tx\u2028y: "),
        (["run", "--suite", tmp_path / "a\nb.toml", "--results", tmp_path / "r", "--quiet"], r"a\nb.toml does not exist"),
        (["run", "--suite", suite_file, "--results", tmp_path / "r", "--quiet", "--defense", "a\nb.py:X"], r"a\nb.py does not exist"),
        (["leaderboard", "--suite", "tiny", "--results", tmp_path / "no\nres"], r"no\nres"),
        (["verify", tmp_path / "no\nentry.json"], r"no\nentry.json"),
    ]
    for args, names in cases:
        check_refused(tmp_path, capsys, args, names)


def test_a_file_name_too_long_names_its_flag(tmp_path, capsys, observation, stored, suite_file):
    """A raw `[Errno 36] File name too long` that named no flag; a name under a folder still to be made ran the tasks first."""
    check_refused(tmp_path, capsys, ["disaggregate", "--quiet", "--aggregates", observation["A"], "--counts", observation["C"],
                                     "--window", "4", "--out", tmp_path / ("x" * 300)], f"--out: file name too long: {tmp_path}")
    board = ["leaderboard", "--suite", "tiny", "--results", stored / "results", "--out"]
    check_refused(tmp_path, capsys, [*board, tmp_path / ("q" * 300 + ".md")], "--out: file name too long")
    check_refused(tmp_path, capsys, [*board, tmp_path / ("q" * 300 + ".html"), "--format", "html"], "--out: file name too long")
    run = ["run", "--suite", suite_file, "--quiet", "--results"]
    check_refused(tmp_path, capsys, [*run, tmp_path / ("y" * 300)], "--results: file name too long")
    check_refused(tmp_path, capsys, [*run, tmp_path / "new" / ("y" * 300)], "--results: file name too long")


def test_an_empty_results_or_entries_folder_is_refused(tmp_path, capsys, suite_file, monkeypatch):
    """`--results ""` wrote the suite's folder into the current one, where `disaggregate --out ""` is refused."""
    monkeypatch.chdir(tmp_path)
    check_refused(tmp_path, capsys, ["run", "--suite", suite_file, "--results", "", "--quiet"], "--results '' does not name a folder")
    check_refused(tmp_path, capsys, ["submit", "none", "--name", "x", "--suite", suite_file, "--results", tmp_path / "r",
                                     "--entries", "", "--quiet"], "--entries '' does not name a folder")
    check_refused(tmp_path, capsys, ["submit", "none", "--name", "x", "--suite", suite_file, "--results", "",
                                     "--entries", tmp_path / "e", "--quiet"], "--results '' does not name a folder")


# ---------------------------------------------------------------- processes


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_a_closed_pipe_ends_the_output_quietly(stored):
    process = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "leaderboard", "--suite", "tiny", "--results",
                                str(stored / "results")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    process.stdout.close()  # as `| head -1` does once it has its line
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0
    assert err == ""


def _children(pid: int) -> list[int]:
    listing = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in listing.split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_killing_the_parent_leaves_no_worker(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.replace("seeds = [0]", "seeds = [0, 1, 2, 3, 4, 5]"))
    process = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "run", "--suite", str(suite), "--results",
                                str(tmp_path / "r"), "--workers", "2", "--quiet"], env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(_children(process.pid)) < 2 and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)
        workers = _children(process.pid)
        assert len(workers) >= 2, "the run never started its workers"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.time() + 10
    while any(map(_alive, workers)) and time.time() < deadline:
        time.sleep(0.2)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not survivors


def test_an_output_stream_that_cannot_encode_a_character_gets_a_question_mark(tmp_path, observation):
    # PYTHONIOENCODING=ascii (or a C locale): the summary naming a non-ASCII folder raised UnicodeEncodeError after
    # the outputs were written, a traceback and exit 1.
    out = tmp_path / "sortie-é"
    command = [sys.executable, "-m", "benchmark.cli", "disaggregate", "--quiet", "--aggregates", str(observation["A"]),
               "--counts", str(observation["C"]), "--window", "4", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "sortie-?" in done.stdout and (out / "report.json").is_file()


def test_a_grid_may_cross_kinds_of_cells_with_a_field_only_some_read(tmp_path):
    # local_epochs is read by the fedavg cells of this grid, not by its fedsgd ones: a [[cells]] entry setting it under
    # fedsgd is refused, a grid crossing both is not
    from benchmark.suite import load_suite

    path = tmp_path / "grid.toml"
    path.write_text(SUITE.split("[[cells]]")[0] + """
[[grids]]
name = "g"
n_users = 6
n_rounds = 24
participation = 0.4
window = 3
local_training = ["fedsgd", "fedavg"]
local_epochs = 2
""")
    assert [cell.local_epochs for cell in load_suite(str(path)).cells] == [2, 2]


def test_fixed_groups_that_fit_the_cells_pass_validation(tmp_path, capsys, suite_file):
    # X: groups fixed for the cell's 6 users; Y: placeholder groups until a run draws one per user (as the built-in
    # structured participation does). A check of the groups against the validation run's 4 users, or before any
    # round, had refused one of them.
    plugin = tmp_path / "fixed.py"
    plugin.write_text(
        "from defenses.base import Defense\n\nclass X(Defense):\n    name = 'fixed-pairs'\n"
        "    def public_parameters(self):\n        return {'groups': [0, 0, 1, 1, 2, 2]}\n\n"
        "class Y(Defense):\n    name = 'drawn-pairs'\n    groups = [0, 0, 1, 1]\n"
        "    def choose_participants(self, selected, round_index, rng):\n"
        "        if round_index == 0:\n            self.groups = [u // 2 for u in range(len(selected))]\n"
        "        return selected, selected\n"
        "    def public_parameters(self):\n        return {'groups': self.groups}\n")
    code = main(["run", "--suite", str(suite_file), "--results", str(tmp_path / "r"), "--quiet",
                 "--defense", f"{plugin}:X", "--defense", f"{plugin}:Y", "--task-timeout", "0.001"])
    assert code == 1 and "groups" not in capsys.readouterr().err  # validated, then the tasks ran into their timeout


def test_two_plugins_with_helpers_of_one_name_each_run_their_own(tmp_path, capsys, suite_file):
    # The first plugin's folder stayed on sys.path and its `common` in sys.modules: the second ran the first's helper
    # (attack success 1.0 where its own gives 0) under a key that hashed its own.
    for folder, factor in (("a", "1.0"), ("b", "0.0")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "plug.py").write_text(
            "from defenses.base import Defense\nfrom common import factor\n\nclass P(Defense):\n    name = 'p'\n\n"
            "    def transform_aggregate(self, aggregate, rng):\n        return aggregate * factor()\n")
        (tmp_path / folder / "common.py").write_text(f"def factor():\n    return {factor}\n")
    suite = suite_file.read_text().split("[[defenses]]")[0] + "".join(
        f'[[defenses]]\nname = "{tmp_path / folder / "plug.py"}:P"\nlabel = "p{folder}"\n\n' for folder in "ab")
    suite += suite_file.read_text()[suite_file.read_text().index("[[cells]]"):]
    (tmp_path / "two.toml").write_text(suite)
    assert main(["run", "--suite", str(tmp_path / "two.toml"), "--results", str(tmp_path / "r"), "--quiet"]) == 0
    import pandas as pd

    table = pd.read_parquet(tmp_path / "r" / "tiny" / "results.parquet").set_index("defense")
    assert table.loc["pa", "attack_success"] > 0 and table.loc["pb", "attack_success"] == 0
    assert main(["leaderboard", "--suite", str(tmp_path / "two.toml"), "--results", str(tmp_path / "r")]) == 0


def test_helpers_in_a_namespace_package_or_behind_a_symlink_are_in_the_key(tmp_path):
    from benchmark.provenance import plugin_digests

    (tmp_path / "real" / "helpers").mkdir(parents=True)  # a namespace package: no __init__.py
    (tmp_path / "real" / "helpers" / "mathx.py").write_text("def factor():\n    return 1.0\n")
    (tmp_path / "real" / "plug.py").write_text("from helpers.mathx import factor\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link.py").symlink_to(tmp_path / "real" / "plug.py")
    names = [f"{tmp_path / 'real' / 'plug.py'}:P", f"{tmp_path / 'elsewhere' / 'link.py'}:P"]
    before = [plugin_digests(name)[0].split("=")[1] for name in names]
    (tmp_path / "real" / "helpers" / "mathx.py").write_text("def factor():\n    return 2.0\n")
    after = [plugin_digests(name)[0].split("=")[1] for name in names]
    assert before[0] != after[0] and before[1] != after[1]
