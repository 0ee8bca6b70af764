"""The same suite on local worker processes and on a Dask cluster gives the same results table."""

import pandas as pd
from dask.distributed import LocalCluster

from benchmark.executor import Executor
from benchmark.runner import run_suite
from benchmark.suite import expand, load_suite
from tests.conftest import TINY_CELL

WALL_CLOCK = ["attack_seconds", "task_seconds"]

# The integer program's time limit is generous: a program cut off by the clock would make
# the scores depend on machine load, which is not what this test is about.
SUITE = """
name = "tiny-dask"
version = "1"
seeds = [0, 1]

[attack]
time_limit = 10

[[defenses]]
name = "none"

[[defenses]]
name = "dp-gaussian"
noise_multiplier = 1.0

[[defenses]]
name = "coarse-analytics"
factor = 4
""" + TINY_CELL


def test_dask_cluster_and_local_processes_give_identical_results(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    tasks = expand(load_suite(str(path)))
    local = run_suite(tasks, tmp_path / "local", Executor(workers=2), progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = run_suite(tasks, tmp_path / "dask", Executor(scheduler=cluster.scheduler_address), progress=False)
        computed_there = sum(prefix.all_durations.get("compute", 0.0)
                             for name, prefix in cluster.scheduler.task_prefixes.items() if "run_and_store" in name)
    assert computed_there > 0, "no task ran on the Dask workers"
    assert len(local) == len(tasks) and set(local["status"]) == {"ok"}
    assert set(local["defense"]) == {"none", "ldp-gaussian", "coarse-analytics"}  # dp-gaussian: the old name
    pd.testing.assert_frame_equal(local.drop(columns=WALL_CLOCK), on_dask.drop(columns=WALL_CLOCK), check_exact=True)
    stored = sorted(p.name for p in (tmp_path / "dask" / "tiny-dask" / "tasks").glob("*.json"))
    assert stored == sorted(p.name for p in (tmp_path / "local" / "tiny-dask" / "tasks").glob("*.json"))
