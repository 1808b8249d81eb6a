"""Packing: K small fits at once on one device, one worker process per slot.

A destVI fit uses a sliver of a modern GPU, so one array task can run K configurations side by
side. Processes, not threads or CUDA streams, because:

- the step is bound by Python and kernel-launch overhead, which threads serialise on the GIL;
- dropout and the stock-compatible minibatch order draw from torch's global generators, which
  threads would interleave (runs would stop being reproducible);
- compiled fits share dynamo's caches within a process (the fast engine runs them one at a time).

Each worker is a fresh `spawn` process (safe with CUDA) that runs whole fits one after another;
results come back in job order. On a GPU, K processes each hold a CUDA context (a few hundred MiB)
and time-slice the device; starting the CUDA MPS daemon on the node lets their kernels overlap.

Stopping (SLURM time limit, preemption): the caller passes a `stop` event. Once it is set, every
worker gets USR2 in its own main thread, the signal a lone task gets from submitit, so a fit in
progress checkpoints at the end of its epoch exactly as it would alone (toolkit.backends.preemption); a job
not yet started should check `stop_requested()` and return at once. Workers ignore SIGTERM as
submitit's job process does: on preemption SLURM sends it to every process of the job first.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_stop: Any = None
"""In a worker: the pack's stop event (None outside a worker or without one)."""


def stop_requested() -> bool:
    """In a worker: whether the pack was asked to stop (a job should then not start)."""
    return _stop is not None and _stop.is_set()


def _ignore(signum: int, frame: Any) -> None:
    """A Python-level no-op: callable, so checkpointing keeps it as the handler to restore."""


def _forward_stop(stop: Any) -> None:
    stop.wait()
    os.kill(os.getpid(), signal.SIGUSR2)


def _init_worker(threads: int | None, env: Mapping[str, str], stop: Any) -> None:
    """Give each worker its share of the CPU cores before torch starts its thread pools; relay stops."""
    global _stop
    os.environ.update(env)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    if stop is not None:
        _stop = stop
        signal.signal(signal.SIGTERM, _ignore)
        signal.signal(signal.SIGUSR2, _ignore)  # between jobs nothing trains; a job installs its own
        threading.Thread(target=_forward_stop, args=(stop,), daemon=True, name="pack-stop").start()


def default_threads(workers: int) -> int:
    """CPU cores per worker: the machine's (or the job's allotted) cores split evenly, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def fit_many(
    fn: Callable[..., Any],
    jobs: Sequence[Mapping[str, Any]],
    *,
    workers: int,
    threads_per_worker: int | None = None,
    env: Mapping[str, str] | None = None,
    return_exceptions: bool = False,
    stop: Any = None,
    fresh_process_per_job: bool = False,
) -> list[Any]:
    """Run `fn(**job)` for every job on `workers` processes at once; results in job order.

    `fn` must be importable by name (a module-level function) and its arguments and result
    picklable; it should write its own outputs (a task directory) and return something small.
    With `return_exceptions`, a failed job gives its exception in place of a result instead of
    stopping the rest; otherwise the first failure is raised once every job has finished.
    `stop`: an Event of `stop_event()`; setting it sends USR2 to every worker (see the module doc).
    `fresh_process_per_job`: every job in a new process, so that its peak memory (and dynamo's
    caches) are its own; costs one interpreter start per job.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (got {workers}).")
    if not jobs:
        return []
    threads = threads_per_worker or default_threads(workers)
    context = multiprocessing.get_context("spawn")
    results: list[Any] = []
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(threads, dict(env or {}), stop),
        max_tasks_per_child=1 if fresh_process_per_job else None,
    ) as pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        for future in futures:
            error = future.exception()
            results.append(error if error is not None else future.result())
    if not return_exceptions:
        for result in results:
            if isinstance(result, BaseException):
                raise result
    return results


def stop_event() -> Any:
    """An Event that `fit_many(stop=...)` can hand to its workers (made in the workers' start method)."""
    return multiprocessing.get_context("spawn").Event()


def describe_worker(tag: Any = None) -> dict[str, Any]:
    """Which process ran a job, with how many torch threads: a cheap probe of a packing setup."""
    import torch

    return {"tag": tag, "pid": os.getpid(), "torch_threads": torch.get_num_threads()}
