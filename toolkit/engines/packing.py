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
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def _init_worker(threads: int | None, env: Mapping[str, str]) -> None:
    """Give each worker its share of the CPU cores before torch starts its thread pools."""
    os.environ.update(env)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


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
) -> list[Any]:
    """Run `fn(**job)` for every job on `workers` processes at once; results in job order.

    `fn` must be importable by name (a module-level function) and its arguments and result
    picklable; it should write its own outputs (a task directory) and return something small.
    With `return_exceptions`, a failed job gives its exception in place of a result instead of
    stopping the rest; otherwise the first failure is raised once every job has finished.
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
        initargs=(threads, dict(env or {})),
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


def describe_worker(tag: Any = None) -> dict[str, Any]:
    """Which process ran a job, with how many torch threads: a cheap probe of a packing setup."""
    import torch

    return {"tag": tag, "pid": os.getpid(), "torch_threads": torch.get_num_threads()}
