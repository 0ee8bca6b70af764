"""Runs a suite's tasks, skipping those already stored, and records a failed task instead of stopping."""

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd
from pathlib import Path

from benchmark import __version__
from benchmark.columns import NOT_APPLICABLE
from benchmark.devices import resolve_device
from benchmark.errors import BenchmarkError, TaskTimeout
from benchmark.executor import Executor, run_tasks
from benchmark.store import ResultStore
from benchmark.suite import DefenseSpec, Task, cells_digest, defense_digests
from benchmark.utility import UtilityRun


def _row(task: Task) -> dict:
    s = task.scenario
    return {
        "defense": task.defense.display,
        "suite": task.suite,
        "scenario": s.name,
        "seed": s.seed,
        "n_users": s.n_users,
        "n_rounds": s.n_rounds,
        "horizon": s.horizon,
        "window": s.window,
        "participation": s.participation,
        "suite_version": task.suite_version,
        "package_version": __version__,
    }


def _identity(task: Task) -> dict:
    """The ID columns a stored row of `task` must hold (a row edited or copied from another task is recomputed)."""
    row = _row(task)
    return {column: row[column] for column in ("defense", "suite", "scenario", "seed", "n_users", "n_rounds", "window")}


def run_task(task: Task, picture: Path | None = None, device: str = "cpu", utility: dict | None = None,
             simulator: Callable | None = None) -> dict:
    """One result row; any error becomes `status = "failed: ..."` so the suite goes on.

    Every attack (attacks.recovery.run_attacks: static, adaptive, anonymous) recovers updates; the row
    reports the strongest (the defense's worst case, by `attack_success`; ties go to the first), every
    inference column from that one, which alone runs the costlier inference. An attack that did not
    run scores NaN in its `attack_success_<name>` column. Inversion and the attacks' batched searches run
    on `device`, which is part of the task's key (CPU and GPU results differ). The oracle ceiling runs the
    attack's own inference on the true updates. With `picture`, a model-based task also draws its
    reconstructions there (PNG). `utility` holds the row's utility columns when they were computed
    beforehand (run_suite trains each utility run once); without it they are trained here. `simulator`
    (scenario, defense) -> (observation, truth) stands in for benchmark.simulation.simulate, which it must
    equal bit for bit (_run_and_store_horizons cuts several horizons from one run).
    """
    # The simulation and attack stack (torch, highspy) loads here, not at import: a run whose
    # tasks are all stored already never pays for it.
    from attacks.pipeline import infer_from, infer_users, inversion_sample
    from attacks.recovery import ATTACKS, run_attacks
    from benchmark.scoring import DELTA, first_reconstructions, no_inference, score, score_recovery, scored_users, success_ceiling
    from benchmark.simulation import simulate
    from benchmark.utility import defense_key, utility_epsilon, utility_scores
    from defenses.base import inapplicable
    from defenses.guard import GuardedDefense
    from defenses.registry import make_defense
    from leaderboard.plots import plot_reconstructions

    row = _row(task)
    started = time.perf_counter()
    try:
        device = resolve_device(device)
        seed = task.scenario.seed
        defense = GuardedDefense(make_defense(task.defense.name, dict(task.defense.parameters)))
        reason = inapplicable(defense, task.scenario.update_kind)
        if reason is not None:  # nothing runs; every score stays NaN and the status says why
            row["status"] = f"{NOT_APPLICABLE}: {reason}"
            row["task_seconds"] = time.perf_counter() - started
            return row
        observation, truth = (simulator or simulate)(task.scenario, defense)
        if not truth.participants.any():  # every score would be that of an empty federation
            row["status"] = f"{NOT_APPLICABLE}: no user contributed to any of the {task.scenario.n_rounds} rounds"
            row["task_seconds"] = time.perf_counter() - started
            return row
        attempts = run_attacks(observation, replace(task.attack, device=device))
        recovery_scores = [score_recovery(recovery, truth) for recovery in attempts]
        success = [scores["attack_success"] for scores in recovery_scores]
        # ties go to the attempt that reads the defense: under fixed groups every attempt scores alike, and the static
        # one, first, had inverted each group sum as one user's batch (structured-participation's inv 0.72, not 1.0)
        strongest = max(range(len(attempts)), key=lambda i: (np.nan_to_num(success[i], nan=-1.0),
                                                             attempts[i].groups is not None, attempts[i].attack == "adaptive"))
        if task.attack.invert:
            output = infer_from(observation, attempts[strongest], seed=seed, device=device, sample=task.attack.inverted_users)
            users = scored_users(output, truth)
            if not len(users):  # nothing inverted is any user's: the ceiling still inverts the attack's sample
                users = inversion_sample(task.scenario.n_users, task.attack.inverted_users, seed)
            ceiling = infer_users(observation, truth.updates, truth.participants, seed, device, invert=users)
            row.update(score(output, truth, ceiling, recovery_scores[strongest]), inversion=_inversion_note(observation, output))
        else:
            row.update(recovery_scores[strongest], **no_inference("no inversion at this horizon"),
                       inversion="not run: the suite inverts at each cell's longest horizon only")
        ran: dict[str, float] = {}
        for recovery, value in zip(attempts, success):  # an attack with several attempts (prefix) counts its best
            ran[recovery.attack] = max(ran.get(recovery.attack, value), value)
        row.update({f"attack_success_{name}": ran.get(name, float("nan")) for name in ATTACKS})
        row["attack_success_ceiling"] = success_ceiling(observation.aggregates, truth)
        row.update(
            attack=attempts[strongest].attack,
            clock_limited=float(any(recovery.disaggregation.clock_limited for recovery in attempts)),
            overhead_checkins=truth.extra_checkins,
            overhead_upload_bytes=truth.extra_upload_bytes_per_round,
        )
        guarantee = defense.privacy(task.scenario.n_rounds, task.scenario.participation, truth.max_participations, DELTA)
        row.update(guarantee.columns(), epsilon_utility=utility_epsilon(task.utility, seed, defense, DELTA))
        if utility is None:
            utility = utility_scores(task.utility, seed, defense_key(task.defense.name, task.defense.parameters), defense)
        row.update(utility)
        if picture is not None and len(truth.images) and task.attack.invert:
            picture.parent.mkdir(parents=True, exist_ok=True)
            plot_reconstructions(
                truth.images[:, 0], first_reconstructions(output, truth), output.aggregate_images[:, 0], picture,
                ceiling.images[:, 0],
            )
        row["status"] = "ok"
    except BenchmarkError as error:
        row["status"] = f"failed: {error}"
    except Exception as error:  # noqa: BLE001 - a task must never take the suite down; the message is kept
        row["status"] = f"failed: {type(error).__name__}: {error}"
    row["task_seconds"] = time.perf_counter() - started
    return row


def _inversion_note(observation, output) -> str:
    """Which recovered updates the inversion columns come from: all, or how many of how many (a seeded sample)."""
    if observation.model == "none":
        return "not run: synthetic updates have no model to invert"
    inverted, recovered = len(output.recovered.indices), len(output.recovery.updates)
    return f"all {recovered} recovered updates" if inverted == recovered else f"a seeded sample of {inverted} of {recovered} recovered updates"


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
    device: str
    utility: dict | None = None  # the row's utility columns, computed beforehand
    utility_failure: str = ""  # why they could not be: the task fails with it, without running


def _run_and_store(job: _Job, simulator: Callable | None = None) -> str:
    """Runs in a worker: the result is stored there, atomically, so a crash loses only tasks in flight."""
    from attacks import memo

    store = ResultStore(job.results_root, job.suite)
    if job.utility_failure:
        store.save(job.key, {**_row(job.task), "status": f"failed: utility {job.utility_failure}", "task_seconds": 0.0})
        return job.key
    memo.use(store.folder / "memo")  # tasks that invert the same updates share the answer (attacks.memo)
    try:
        with _time_limit(job.timeout):
            row = run_task(job.task, store.picture(job.key), job.device, job.utility, simulator)
    except TaskTimeout as error:
        row = {**_row(job.task), "status": f"failed: {error}", "task_seconds": job.timeout}
    store.save(job.key, row)
    return job.key


def _run_and_store_horizons(jobs: tuple[_Job, ...]) -> list[str]:
    """The jobs of one cell, seed and defense at several horizons, longest first, in one worker: one federation
    run of the longest serves them all (benchmark.simulation.simulate_horizons) where the defense is prefix-consistent
    (the built-ins), each task stored as it ends."""
    from benchmark.simulation import prefix_consistent, simulate_horizons
    from defenses.registry import make_defense

    spec = jobs[0].task.defense
    if len(jobs) > 1 and not prefix_consistent(make_defense(spec.name, dict(spec.parameters))):
        # a plugin's horizons run apart, each task on its own defense, as `verify` re-runs one (a defense shared
        # across them had carried what it learnt in the longest run into the shorter ones and back)
        return [_run_and_store(job) for job in jobs]
    horizons = tuple(job.task.scenario.n_rounds for job in jobs)
    runs: dict = {}
    ran: list = []  # the defense that ran the federation

    def simulator(scenario, defense):
        if not runs:
            runs.update(simulate_horizons(scenario, defense, horizons))
            ran.append(defense)
        elif defense is not ran[0]:
            # A shorter horizon's task gets the state its defense would have learnt running its own (prefix) federation
            # (DP-SGD learns its steps a round from the clients' training): its epsilons had been NaN, "not computed".
            _state(defense).update(_state(ran[0]))
        return runs.pop(scenario.n_rounds)

    return [_run_and_store(job, simulator) for job in jobs]


def _state(defense) -> dict:
    """The attributes of the defense itself (inside its guard), where it keeps what it learns while a federation runs."""
    from defenses.guard import GuardedDefense

    return vars(defense.inner if isinstance(defense, GuardedDefense) else defense)


def _horizon_groups(jobs: list[_Job]) -> list[tuple[_Job, ...]]:
    """The jobs grouped by cell, seed and defense (horizons apart), longest horizon first in each group; the groups
    of one cell and seed consecutive, so a worker also reuses the undefended run (benchmark.simulation._shared_run)."""
    groups: dict = {}
    for job in jobs:
        cell = json.dumps({**job.task.scenario.to_dict(), "n_rounds": None}, sort_keys=True, default=str)
        defense = json.dumps([job.task.defense.name, job.task.defense.parameters, job.task.defense.label], default=str)
        groups.setdefault(cell, {}).setdefault(defense, []).append(job)
    return [tuple(sorted(group, key=lambda job: -job.task.scenario.n_rounds))
            for by_defense in groups.values() for group in by_defense.values()]


@dataclass(frozen=True)
class _UtilityJob:
    key: str
    run: UtilityRun
    results_root: str
    suite: str
    timeout: float | None


def _train_and_store(job: _UtilityJob) -> str:
    """Runs in a worker: one utility training, stored atomically; a failure is stored with its one-line reason."""
    from benchmark.store import _first_line

    started = time.perf_counter()
    try:
        with _time_limit(job.timeout):
            record = {"status": "ok", "test_accuracy": job.run.accuracy()}
    except TaskTimeout as error:
        record = {"status": f"failed: {error}", "test_accuracy": float("nan")}
    except BenchmarkError as error:
        record = {"status": f"failed: {_first_line(error)}", "test_accuracy": float("nan")}
    except Exception as error:  # noqa: BLE001 - as run_task: the suite goes on, the reason is kept
        record = {"status": f"failed: {type(error).__name__}: {_first_line(error)}", "test_accuracy": float("nan")}
    ResultStore(job.results_root, job.suite).save_utility(job.key, {**record, "seconds": time.perf_counter() - started})
    return job.key


def _utility_columns(jobs: list[_Job], store: ResultStore, executor: Executor, progress: bool, timeout: float | None) -> list[_Job]:
    """Train every utility run the jobs need and is not stored yet (each once, first), then give each job its
    row's utility columns, or the failure of a run it needs."""
    from benchmark.utility import defense_key, not_computed, runs_needed, scores_of
    from defenses.guard import GuardedDefense
    from defenses.registry import make_defense

    needs = {}
    for job in jobs:
        if job.task.utility is not None:
            spec, seed = job.task.defense, job.task.scenario.seed
            key = defense_key(spec.name, dict(spec.parameters))
            needs[job.key] = runs_needed(job.task.utility, seed, key, GuardedDefense(make_defense(spec.name, dict(spec.parameters))))
    keys = {run: run.key() for pair in needs.values() for run in pair}
    todo = [_UtilityJob(key, run, str(store.folder.parent), store.folder.name, timeout)
            for run, key in keys.items() if not store.trained(key)]
    for _ in run_tasks(_train_and_store, todo, executor, progress="utility" if progress else None):
        pass
    records = {run: record for run, key in keys.items() if (record := store.stored_utility(key)) is not None}
    out = []
    for job in jobs:
        if job.key not in needs:
            out.append(replace(job, utility=not_computed()))
            continue
        undefended, defended = needs[job.key]
        if undefended not in records or defended not in records:
            continue  # its training's worker was lost: the task is not run, nor stored, and a re-run tries again
        failed = [run for run in (undefended, defended) if records[run]["status"] != "ok"]
        if failed:
            which = "undefended" if not failed[0].defense_key else job.task.defense.display
            reason = f"training ({which}, seed {failed[0].seed}) {records[failed[0]]['status']}"
            out.append(replace(job, utility_failure=reason))
        else:
            accuracy = {run: float(records[run]["test_accuracy"]) for run in (undefended, defended)}
            out.append(replace(job, utility=scores_of(undefended.task, accuracy[undefended], accuracy[defended])))
    return out


def _check_datasets(tasks: list[Task]) -> None:
    """Every data set the tasks' cells and utility trainings read is there (benchmark.datasets.check_dataset): a
    missing or foreign file stops the run, one line, before any task runs instead of failing every task."""
    from benchmark.datasets import check_dataset
    from benchmark.utility import resolve

    needed = {(task.scenario.dataset, task.scenario.data_root) for task in tasks if task.scenario.update_kind != "synthetic"}
    needed |= {(run.dataset, run.data_root) for run in (resolve(task.utility) for task in tasks if task.utility is not None)}
    for dataset, root in sorted(needed, key=str):
        check_dataset(dataset, root)


def _validate_defenses(tasks: list[Task]) -> None:
    """Every defense with a task to run passes validate_defense first: a broken one stops the run, one line. So does
    one that publishes fixed `groups` (whose length does not follow the validation run's users) for another number of
    users than a cell it runs on: each of those tasks would fail after its simulation. Groups drawn for the run's
    users pass; groups as long as the validation run's users are fixed where a run of one more user keeps them."""
    from defenses.registry import make_defense
    from defenses.validate import USERS, published_after_run, validate_defense

    cells: dict[str, tuple[DefenseSpec, dict[str, int]]] = {}
    for task in tasks:
        spec = task.defense
        identity = json.dumps([spec.name, spec.parameters], sort_keys=True, default=str)
        cells.setdefault(identity, (spec, {}))[1][task.scenario.name] = task.scenario.n_users
    for spec, users in cells.values():
        factory = partial(make_defense, spec.name, dict(spec.parameters))
        groups = validate_defense(factory).get("groups")
        fixed = groups is not None and (
            len(groups) != USERS or _length(published_after_run(factory, USERS + 1).get("groups")) == USERS)
        wrong = [(cell, n) for cell, n in users.items() if fixed and len(groups) != n]
        if wrong:
            raise BenchmarkError(f"defense {spec.display!r}: public_parameters gives fixed groups for {len(groups)} "
                                 f"users; cell {wrong[0][0]!r} has {wrong[0][1]}")


def _length(groups: object) -> int | None:
    return len(groups) if isinstance(groups, (list, tuple)) else None


def plugin_labels(specs: tuple[DefenseSpec, ...]) -> tuple[DefenseSpec, ...]:
    """A plugin defense (`file.py:Class`) without a label is labelled with its class's `name`, not its path;
    two defenses with one label would merge into one row of the leaderboard, so that is refused."""
    from defenses.registry import declared_name, defense_class

    labelled = tuple(
        replace(spec, label=declared_name(defense_class(spec.name))) if not spec.label and ".py:" in spec.name else spec
        for spec in specs
    )
    seen: dict[str, str] = {}
    for spec in labelled:
        if spec.display in seen:
            raise BenchmarkError(f"defenses {seen[spec.display]!r} and {spec.name!r} share the label {spec.display!r}; give each its own label")
        seen[spec.display] = spec.name
    return labelled


def run_suite(
    tasks: list[Task],
    results_root: str | os.PathLike,
    executor: Executor = Executor(),
    progress: bool = True,
    task_timeout: float | None = None,
    device: str = "cpu",
    context: list[Task] = (),
    write_table: bool = True,
) -> pd.DataFrame:
    """Run every task not stored yet, then write and return the suite's table (one row per task).

    `context` tasks are not run, but those stored join the table: `run --defense X` adds X's rows to the
    suite's table instead of replacing it (a context task with the label of one of `tasks` is left out, and must
    be the same defense: a label that names other parameters in the suite is refused before any work).
    `write_table` False (an entry's run): the tasks are stored, the suite's table is left as it is.

    Every defense with a task to run is validated first (defenses.validate); a broken one raises
    BenchmarkError before anything runs, as does a results folder that cannot be written. The utility
    trainings the tasks need run first, each (utility task, defense, seed) once, stored under `utility/`
    (a failed one fails the tasks that need it); the tasks then run grouped by cell, seed and defense (one
    federation run serves all of a group's horizons), the groups of one cell and seed together. A task
    that runs longer than `task_timeout` seconds is stored as failed and the suite goes on; a task
    whose worker was lost is a failed row with NaN scores. Inversions run on `device` ("cpu" or
    "cuda", resolved by the caller), which is part of every task's key: CPU and GPU scores differ.
    """
    if not tasks:
        raise BenchmarkError("the suite has no tasks")
    if device == "auto":
        raise BenchmarkError("--device auto must be resolved to cpu or cuda before tasks are keyed")
    _check_labels(tasks, context)
    store = ResultStore(results_root, tasks[0].suite)
    store.check_writable()
    keys = [task.key(device) for task in tasks]
    todo = [_Job(key, task, str(results_root), task.suite, task_timeout, device) for key, task in zip(keys, tasks)
            if not store.finished(key, _identity(task))]
    store.check_slots([job.key for job in todo])
    _check_datasets([job.task for job in todo])
    _validate_defenses([job.task for job in todo])
    store.claim(tasks[0].suite, tasks[0].suite_version, cells_digest([*tasks, *context]),  # the last check, then writes
                defense_digests(tasks))
    groups = _horizon_groups(_utility_columns(todo, store, executor, progress, task_timeout))
    for _ in run_tasks(_run_and_store_horizons, groups, executor, progress="tasks" if progress else None, sizes=[len(g) for g in groups]):
        pass
    lost = {key: {**_row(task), "status": "failed: not run (its worker was lost)"} for key, task in zip(keys, tasks)}
    labels = {task.defense.display for task in tasks}
    others = [task.key(device) for task in context if task.defense.display not in labels]
    full = store.table([*others, *keys], missing=lost)
    if write_table:
        store.write_table(full)
    return full.iloc[len(full) - len(tasks):].reset_index(drop=True)


def _check_labels(tasks: list[Task], context: list[Task]) -> None:
    """BenchmarkError where a task's defense label is the suite's label of another defense (other code, or other
    parameters once defaults are filled in): its rows would stand in the table under a label the suite file gives to
    something else."""
    suite_specs = {task.defense.display: task.defense for task in context}
    for spec in {task.defense.display: task.defense for task in tasks}.values():
        other = suite_specs.get(spec.display)
        if other is not None and not _same_defense(spec, other):
            given = ", ".join(f"{k}={v}" for k, v in other.parameters) or "its default parameters"
            raise BenchmarkError(f"--defense {spec.name}: the suite gives the label {spec.display!r} to {other.name} with "
                                 f"{given}; these rows would replace that defense's under its label: run the suite, or "
                                 "`disaggbench submit` this defense with its --param values")


def _same_defense(one: DefenseSpec, other: DefenseSpec) -> bool:
    """The same code (built-in name, or a plugin file's bytes and class) and the same constructor arguments."""
    from benchmark.provenance import plugin_digests, plugin_path
    from defenses.registry import bound_parameters, defense_class

    if plugin_digests(one.name, one.parameters) != plugin_digests(other.name, other.parameters):
        return False  # other plugin code (same file name, other bytes)
    if plugin_path(one.name) is None and defense_class(one.name) is not defense_class(other.name):
        return False  # built-ins by class, so that an old alias is the same defense
    try:
        return bound_parameters(one.name, dict(one.parameters)) == bound_parameters(other.name, dict(other.parameters))
    except BenchmarkError:  # parameters it does not take: validation names them
        return dict(one.parameters) == dict(other.parameters)
