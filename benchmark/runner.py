"""Runs a suite's tasks, skipping those already stored, and records a failed task instead of stopping."""

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
from pathlib import Path

from benchmark import __version__
from benchmark.errors import BenchmarkError
from benchmark.executor import Executor, run_tasks
from benchmark.store import ResultStore
from benchmark.suite import Task


def _row(task: Task) -> dict:
    s = task.scenario
    return {
        "defense": task.defense.display,
        "suite": task.suite,
        "scenario": s.name,
        "seed": s.seed,
        "n_users": s.n_users,
        "n_rounds": s.n_rounds,
        "window": s.window,
        "participation": s.participation,
        "suite_version": task.suite_version,
        "package_version": __version__,
    }


def run_task(task: Task, picture: Path | None = None) -> dict:
    """One result row; any error becomes `status = "failed: ..."` so the suite goes on.

    With `picture`, a model-based task also draws its reconstructions there (PNG).
    """
    # The simulation and attack stack (torch, cvxpy) loads here, not at import: a run whose
    # tasks are all stored already never pays for it.
    from attacks.pipeline import run_attack
    from benchmark.scoring import DELTA, score
    from benchmark.simulation import simulate
    from defenses.guard import GuardedDefense
    from defenses.registry import make_defense
    from leaderboard.plots import plot_reconstructions

    row = _row(task)
    started = time.perf_counter()
    try:
        defense = GuardedDefense(make_defense(task.defense.name, dict(task.defense.parameters)))
        observation, truth = simulate(task.scenario, defense)
        output = run_attack(observation, task.attack, seed=task.scenario.seed)
        epsilon = defense.epsilon(task.scenario.n_rounds, task.scenario.participation, truth.max_participations, DELTA)
        row.update(score(output, truth, epsilon))
        if picture is not None and len(truth.images):
            picture.parent.mkdir(parents=True, exist_ok=True)
            plot_reconstructions(truth.images[:, 0], output.images[:, 0], output.aggregate_images[:, 0], picture)
        row["status"] = "ok"
    except BenchmarkError as error:
        row["status"] = f"failed: {error}"
    except Exception as error:  # noqa: BLE001 - a task must never take the suite down; the message is kept
        row["status"] = f"failed: {type(error).__name__}: {error}"
    row["task_seconds"] = time.perf_counter() - started
    return row


class TaskTimeout(BaseException):
    """Not an Exception, so that run_task's catch-all lets it through to the job that set the clock."""


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TaskTimeout after `seconds` of wall time; a no-op outside a process's main thread (Dask threads)."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TaskTimeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class _Job:
    key: str
    task: Task
    results_root: str
    suite: str
    timeout: float | None


def _run_and_store(job: _Job) -> str:
    """Runs in a worker: the result is stored there, atomically, so a crash loses only tasks in flight."""
    store = ResultStore(job.results_root, job.suite)
    try:
        with _time_limit(job.timeout):
            row = run_task(job.task, store.picture(job.key))
    except TaskTimeout as error:
        row = {**_row(job.task), "status": f"failed: {error}", "task_seconds": job.timeout}
    store.save(job.key, row)
    return job.key


def run_suite(
    tasks: list[Task],
    results_root: str | os.PathLike,
    executor: Executor = Executor(),
    progress: bool = True,
    task_timeout: float | None = None,
) -> pd.DataFrame:
    """Run every task not stored yet, then write and return the suite's table (one row per task).

    A task that runs longer than `task_timeout` seconds is stored as failed and the suite goes on.
    """
    if not tasks:
        raise BenchmarkError("the suite has no tasks")
    store = ResultStore(results_root, tasks[0].suite)
    keys = [task.key() for task in tasks]
    todo = [_Job(key, task, str(results_root), task.suite, task_timeout) for key, task in zip(keys, tasks) if not store.has(key)]
    for _ in run_tasks(_run_and_store, todo, executor, progress="tasks" if progress else None):
        pass
    table = store.table(keys)
    store.write_table(table)
    return table
