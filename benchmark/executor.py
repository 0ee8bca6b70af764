"""One way to run independent tasks: in-process, local processes, or a Dask cluster.

Suites and the per-user integer programs both go through `run_tasks`, so a
Dask cluster that runs a suite can also run the attack's per-user work.
"""

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Executor:
    """Where tasks run: `workers` local processes (1 = in this process) or a Dask `scheduler` address."""

    workers: int = 1
    scheduler: str | None = None

    @property
    def parallel(self) -> bool:
        return self.scheduler is not None or self.workers > 1


PARENT_POLL_SECONDS = 0.5


def _watch_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as the process that started it is gone.

    loky's workers outlive a parent killed with SIGKILL (no clean-up runs there) and go on working, then
    idle for minutes; a daemon thread polls the parent's pid and exits when the worker has been re-parented.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="disaggbench-parent-watch", daemon=True).start()


@contextmanager
def _backend(executor: Executor) -> Iterator[int]:
    import joblib

    if executor.scheduler is not None:
        from dask.distributed import Client

        with Client(executor.scheduler), joblib.parallel_config(backend="dask"):
            yield -1
    else:
        with joblib.parallel_config(backend="loky", inner_max_num_threads=1, initializer=_watch_parent, initargs=(os.getpid(),)):
            yield executor.workers


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    executor: Executor = Executor(),
    progress: str | None = None,
    inline_seconds: float = 0.0,
    sizes: Sequence[int] | None = None,
) -> Iterable[Any]:
    """Yield `fn(item)` for every item, in order, with one BLAS thread per worker process.

    `progress` is the label of a progress bar (none when it is None), which counts `sizes[i]` for item i
    where an item holds several tasks (default one each). With
    `inline_seconds`, items run in this process for as long as the time they
    have taken, projected over the items left, stays under it: starting worker
    processes costs seconds, more than a batch of small jobs takes.
    """
    import joblib  # here, not at the top: a command that runs nothing in parallel should not pay for it
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    sizes = [1] * len(items) if sizes is None else list(sizes)
    bar = tqdm(total=sum(sizes), desc=progress, disable=progress is None, leave=False)
    try:
        done = 0
        # One BLAS thread here too: the last bits of a score must not depend on where a task ran.
        with threadpool_limits(limits=1):
            started = time.perf_counter()
            while done < len(items):
                # The first job pays for imports and warm-up: the projection starts after it.
                elapsed = time.perf_counter() - started
                projected = elapsed / (done - 1) * (len(items) - done) if done > 1 else 0.0
                inline = not executor.parallel or len(items) - done <= 1 or (inline_seconds > 0 and projected < inline_seconds)
                if not inline:
                    break
                yield fn(items[done])
                bar.update(sizes[done])
                done += 1
                if done == 1:
                    started = time.perf_counter()
        if done == len(items):
            return
        with _backend(executor) as n_jobs, warnings.catch_warnings():
            # loky retires a worker whose memory grew by 300 MB (a task that loaded Fashion-MNIST and torch) between
            # jobs and says so on stderr; no job is lost, so the line would only alarm.
            warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor")
            results = joblib.Parallel(n_jobs=n_jobs, return_as="generator")(
                joblib.delayed(fn)(item) for item in items[done:]
            )
            for index, result in enumerate(results, start=done):
                yield result
                bar.update(sizes[index])
    finally:
        bar.close()
