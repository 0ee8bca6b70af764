"""Runs a suite's tasks, skipping those already stored, and records a failed task instead of stopping."""

import os
import time
from dataclasses import dataclass

import pandas as pd
from pathlib import Path

from attacks.pipeline import run_attack
from benchmark import __version__
from benchmark.errors import BenchmarkError
from benchmark.executor import Executor, run_tasks
from benchmark.scoring import DELTA, score
from benchmark.simulation import simulate
from benchmark.store import ResultStore
from benchmark.suite import Task
from defenses.guard import GuardedDefense
from defenses.registry import make_defense
from leaderboard.plots import plot_reconstructions


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


@dataclass(frozen=True)
class _Job:
    key: str
    task: Task
    results_root: str
    suite: str


def _run_and_store(job: _Job) -> str:
    """Runs in a worker: the result is stored there, atomically, so a crash loses only tasks in flight."""
    store = ResultStore(job.results_root, job.suite)
    store.save(job.key, run_task(job.task, store.picture(job.key)))
    return job.key


def run_suite(tasks: list[Task], results_root: str | os.PathLike, executor: Executor = Executor(), progress: bool = True) -> pd.DataFrame:
    """Run every task not stored yet, then write and return the suite's table (one row per task)."""
    if not tasks:
        raise BenchmarkError("the suite has no tasks")
    store = ResultStore(results_root, tasks[0].suite)
    keys = [task.key() for task in tasks]
    todo = [_Job(key, task, str(results_root), task.suite) for key, task in zip(keys, tasks) if not store.has(key)]
    for _ in run_tasks(_run_and_store, todo, executor, progress="tasks" if progress else None):
        pass
    table = store.table(keys)
    store.write_table(table)
    return table
