import json

import numpy as np
import pytest

from benchmark.cli import main
from tests.conftest import write_observation


def run_cli(args):
    return main(["disaggregate", "--quiet", *args])


def test_disaggregate_writes_participants_updates_and_report(tmp_path, small_instance, capsys):
    paths = write_observation(tmp_path, small_instance)
    out = tmp_path / "out"
    code = run_cli(["--aggregates", str(paths["aggregates"]), "--counts", str(paths["counts"]), "--totals", str(paths["totals"]), "--window", "10", "--out", str(out)])
    assert code == 0
    participants = np.load(out / "participants.npy")
    assert participants.dtype == np.uint8 and participants.shape == (160, 40)
    assert np.array_equal(participants, small_instance.participants)
    updates = np.load(out / "updates.npy")
    assert updates.dtype == np.float64 and np.allclose(updates, small_instance.updates, atol=1e-8)
    report = json.loads((out / "report.json").read_text())
    assert report["users"] == 40 and sum(report["totals"].values()) == 40
    assert {entry["status"] for entry in report["per_user"]} <= {"unique", "found"}
    assert "40 users" in capsys.readouterr().out


def _broken(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("float_counts", "integer"),
        ("nan", "NaN"),
        ("over", "only 10 rounds"),
        ("negative", "negative"),
        ("window", "windows"),
        ("not_npy", "not a readable"),
        ("totals_shape", "totals"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, small_instance, capsys, case, message):
    paths = write_observation(tmp_path, small_instance)
    aggregates, counts, window = str(paths["aggregates"]), str(paths["counts"]), "10"
    extra = []
    if case == "missing":
        counts = str(tmp_path / "nope.npy")
    elif case == "float_counts":
        counts = _broken(tmp_path, "c.npy", small_instance.counts.astype(float))
    elif case == "nan":
        bad = small_instance.aggregates.copy()
        bad[3, 4] = np.nan
        aggregates = _broken(tmp_path, "a.npy", bad)
    elif case == "over":
        bad = small_instance.counts.copy()
        bad[2, 1] = 11
        counts = _broken(tmp_path, "c.npy", bad)
    elif case == "negative":
        bad = small_instance.counts.copy()
        bad[0, 0] = -1
        counts = _broken(tmp_path, "c.npy", bad)
    elif case == "window":
        window = "7"
    elif case == "not_npy":
        (tmp_path / "junk.npy").write_text("not an array")
        aggregates = str(tmp_path / "junk.npy")
    elif case == "totals_shape":
        extra = ["--totals", _broken(tmp_path, "s.npy", small_instance.totals[:-1])]
    out = tmp_path / "out"
    code = run_cli(["--aggregates", aggregates, "--counts", counts, "--window", window, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert not out.exists()


def test_stdout_holds_only_the_summary_line_when_integer_programs_run(tmp_path, capfd):
    from benchmark.synthetic import make_instance

    instance = make_instance(16, 36, 10, 0.5, seed=0)  # the search leaves users to the integer program
    paths = write_observation(tmp_path, instance, totals=False)
    code = run_cli(["--aggregates", str(paths["aggregates"]), "--counts", str(paths["counts"]), "--window", "10",
                    "--out", str(tmp_path / "out"), "--nodes", "20", "--simplex-iterations", "5000"])
    out = capfd.readouterr().out
    assert code == 0
    assert out.count("\n") == 1 and out.startswith("16 users") and "HiGHS" not in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["events"] and report["clock_limited"] is False
    ratios = [entry["equalities_per_free_round"] for entry in report["per_user"]]
    assert all(0 < ratio <= 1 for ratio in ratios)  # T = 36 rounds, 16 users: every user keeps free rounds


def test_the_command_imports_neither_torch_nor_cvxpy_nor_pandas(tmp_path, small_instance):
    import subprocess
    import sys

    paths = write_observation(tmp_path, small_instance)
    script = (
        "import sys\nfrom benchmark.cli import main\n"
        f"code = main(['disaggregate', '--quiet', '--aggregates', {str(paths['aggregates'])!r}, '--counts', "
        f"{str(paths['counts'])!r}, '--totals', {str(paths['totals'])!r}, '--window', '10', '--out', {str(tmp_path / 'out')!r}])\n"
        "heavy = sorted(m for m in ('torch', 'cvxpy', 'pandas', 'joblib') if m in sys.modules)\n"
        "print('HEAVY', heavy, code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "HEAVY [] 0" in done.stdout


def test_a_gpu_out_of_memory_is_one_line_and_writes_nothing(tmp_path, small_instance, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    import attacks.disaggregation

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB\nmore detail")

    monkeypatch.setattr(attacks.disaggregation, "disaggregate", out_of_memory)
    paths = write_observation(tmp_path, small_instance)
    code = run_cli(["--aggregates", str(paths["aggregates"]), "--counts", str(paths["counts"]), "--window", "10",
                    "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "GPU ran out of memory" in err and "--device cpu" in err
    assert not (tmp_path / "out").exists()


def test_other_runtime_errors_are_not_mistaken_for_memory(tmp_path, small_instance, monkeypatch):
    import attacks.disaggregation

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(attacks.disaggregation, "disaggregate", broken)
    paths = write_observation(tmp_path, small_instance)
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(["--aggregates", str(paths["aggregates"]), "--counts", str(paths["counts"]), "--window", "10",
                 "--out", str(tmp_path / "out")])


def test_the_lattice_stage_runs_unless_no_lattice_is_given(tmp_path):
    from benchmark.synthetic import make_instance

    instance = make_instance(30, 60, 10, 0.5, seed=0)  # the search leaves about 20 of these users
    paths = write_observation(tmp_path, instance)
    reports = {}
    for flags in ((), ("--no-lattice",)):
        out = tmp_path / f"out{len(flags)}"
        assert run_cli(["--aggregates", str(paths["aggregates"]), "--counts", str(paths["counts"]), "--totals",
                        str(paths["totals"]), "--window", "10", "--out", str(out), *flags]) == 0
        assert np.array_equal(np.load(out / "participants.npy"), instance.participants)
        reports[flags] = json.loads((out / "report.json").read_text())
    assert reports[()]["events"]["found by lattice reduction"] > 0 and "lattice" in reports[()]["steps"]
    assert "lattice" not in reports[("--no-lattice",)]["steps"]
    assert "found by lattice reduction" not in reports[("--no-lattice",)]["events"]


def test_updates_the_sums_do_not_determine_are_nan_not_an_even_split(tmp_path, small_instance, capsys):
    """A user whose counts are another's (a duplicated row) gets that user's column: their columns are right, but the
    sums only hold the pair's sum, which least squares had split in half and written as both updates; a user who never
    took part has no update in the sums at all. Both are NaN now, the report says so, and the others are exact."""
    paths = write_observation(tmp_path, small_instance)
    counts = np.vstack([small_instance.counts, small_instance.counts[:1], np.zeros_like(small_instance.counts[:1])])
    out = tmp_path / "out"
    code = run_cli(["--aggregates", str(paths["aggregates"]), "--counts", _broken(tmp_path, "c.npy", counts),
                    "--window", "10", "--out", str(out)])
    assert code == 0
    updates = np.load(out / "updates.npy")
    unknown = np.isnan(updates).any(axis=1)
    assert np.flatnonzero(unknown).tolist() == [0, 40, 41]
    assert np.allclose(updates[1:40], small_instance.updates[1:], atol=1e-8)
    report = json.loads((out / "report.json").read_text())
    assert report["unidentifiable_updates"] == 3
    assert [entry["update_identifiable"] for entry in report["per_user"]][:2] == [False, True]
    assert "3 user(s)" in capsys.readouterr().err
