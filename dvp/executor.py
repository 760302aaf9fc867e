"""Run independent tasks in this process, in a local process pool, or on a Dask cluster.

A task is a picklable argument to a top-level function; each task writes its own output
file (see :mod:`dvp.tasks`), so the executor only schedules, retries and reports:

- ``workers=1``: in this process, in order (no pickling, easiest to debug);
- ``workers=N``: a local pool of N processes (``concurrent.futures``); a worker that dies
  (killed, out of memory) breaks the pool, which is restarted and the unfinished tasks
  resubmitted, up to ``retries`` times per task;
- ``scheduler="ADDRESS"``: an existing Dask distributed scheduler
  (``tcp://host:8786``); ``scheduler="local"`` starts a ``LocalCluster`` of ``workers``
  single-threaded processes. Dask re-runs the tasks of a lost worker itself
  (``retries`` for tasks that raise).

Results come back as they complete, as ``(index, result, error)``: an exception raised
by a task is returned, not raised, so one bad input does not stop the others.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .errors import DvpError


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_tasks(fn, tasks, *, workers: int | None = None, scheduler: str | None = None, retries: int = 2):
    """Yield ``(index, result, error)`` for every task, in completion order.

    Parameters
    ----------
    fn : callable
        A module-level function (picklable), called as ``fn(task)``.
    tasks : sequence
        Picklable task descriptions.
    workers : int, optional
        Local processes (default: all cores); with ``scheduler="local"`` the number of
        Dask workers.
    scheduler : str, optional
        Dask scheduler address, or ``"local"`` for a new ``LocalCluster``.
    retries : int
        Extra attempts for a task whose worker died.
    """
    tasks = list(tasks)
    if workers is not None and workers < 1:
        raise DvpError(f"--workers must be at least 1, got {workers}")
    if scheduler:
        yield from _dask(fn, tasks, workers, scheduler, retries)
    elif (workers or default_workers()) == 1 or len(tasks) <= 1:
        for i, t in enumerate(tasks):
            try:
                yield i, fn(t), None
            except KeyboardInterrupt:
                raise
            except Exception as e:  # reported per task by the caller
                yield i, None, e
    else:
        yield from _pool(fn, tasks, workers or default_workers(), retries)


def _pool(fn, tasks, workers, retries):
    import multiprocessing as mp
    pending = set(range(len(tasks)))
    attempts = dict.fromkeys(pending, 0)
    isolate = []   # tasks in flight too often when a worker died: run alone to find the culprit
    # forkserver: workers do not inherit the parent's threads or open files (fork is unsafe
    # with threads; spawn re-imports everything per worker and is slower)
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    # the forkserver keeps the environment it started with: pass dvp's settings explicitly
    env = {k: v for k, v in os.environ.items() if k.startswith("DVP_")}
    while pending:
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx,
                                 initializer=_set_env, initargs=(env,)) as pool:
            futures = {}
            for i in sorted(pending):
                try:
                    futures[pool.submit(fn, tasks[i])] = i
                except BrokenProcessPool:
                    # a worker died while the tasks were being submitted: those submitted
                    # report it below; the rest go to the next pool uncharged
                    break
            broken = False
            while futures:
                try:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    _abandon(pool)
                    raise
                for f in done:
                    i = futures.pop(f)
                    try:
                        result = f.result()
                    except BrokenProcessPool:
                        # the pool cannot tell which task killed its worker: every task in
                        # flight is charged an attempt
                        broken = True
                        attempts[i] += 1
                        if attempts[i] > retries:
                            pending.discard(i)
                            isolate.append(i)
                        continue
                    except Exception as e:
                        pending.discard(i)
                        yield i, None, e
                        continue
                    pending.discard(i)
                    yield i, result, None
                if broken:
                    break   # restart the pool and resubmit what is still pending
            if broken:
                for f in futures:
                    f.cancel()
    for i in isolate:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_set_env, initargs=(env,)) as pool:
            try:
                yield i, pool.submit(fn, tasks[i]).result(), None
            except BrokenProcessPool:
                yield i, None, DvpError(f"task {i}: its worker process died {attempts[i] + 1} times "
                                        f"(killed, out of memory or crashed)")
            except Exception as e:
                yield i, None, e


def _abandon(pool) -> None:
    """Ctrl-C: drop the queued tasks and stop the workers now, instead of the executor's
    default of finishing everything first (completed tasks are already on disk)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()


def _set_env(env: dict) -> None:
    for k in [k for k in os.environ if k.startswith("DVP_")]:
        del os.environ[k]
    os.environ.update(env)


def _dask(fn, tasks, workers, scheduler, retries):
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DvpError("--scheduler needs dask.distributed (pip install distributed)") from None
    cluster = None
    try:
        if scheduler == "local":
            cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise DvpError(f"--scheduler {scheduler}: cannot connect ({e})") from None
        try:
            futures = client.map(fn, tasks, pure=False, retries=retries)
            index = {f.key: i for i, f in enumerate(futures)}
            for f in as_completed(futures):
                i = index[f.key]
                try:
                    yield i, f.result(), None
                except Exception as e:
                    yield i, None, e
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
