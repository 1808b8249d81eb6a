"""The launcher: a sweep's tasks go to the backend its `executor.kind` names (toolkit.backends).

The lifecycle of a run is the backend core's (toolkit.backends.core): prepare the inputs, run (or
submit) every task not done yet, then aggregate and report. Tasks whose result already exists are not
run again; failed ones only with `retry_failed`. What the launcher itself does is backend-neutral:
check the sweep, record its task list (sweep.json), and ask every backend what it knows of the tasks'
states.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from filelock import FileLock, Timeout

from toolkit.backends import BACKENDS, all_backends, backend, core, options_model
from toolkit.backends.common import RunSummary
from toolkit.config import ExecutorOptions, SweepConfig, executor_options
from toolkit.errors import SpotsweepError
from toolkit.freshness import check_inputs
from toolkit.layout import CorruptFile, OutputLayout, check_not_an_input, read_json, write_json
from toolkit.status import TaskState, load_tasks
from toolkit.sweep import Task, count_tasks, expand

__all__ = ["RunSummary", "load_sweep", "record_sweep", "run_sweep", "sweep_states", "with_executor"]


def backend_for(kind: str, where: str = "executor.kind") -> ModuleType:
    """The backend registered under `kind`, or one sentence naming the known ones."""
    if kind not in BACKENDS:
        raise SpotsweepError(f"{where} '{kind}' is unknown; use {' or '.join(BACKENDS)}.")
    return backend(kind)


def load_sweep(path: Path | str) -> SweepConfig:
    """Read and validate a sweep file (toolkit.config), then check that its executor is a registered backend."""
    from toolkit.config import load_sweep as read

    sweep = read(path)
    backend_for(sweep.executor.kind, f"{path}: executor.kind")
    return sweep


MAX_TASKS = 10_000
"""A larger sweep is refused unless asked for (`--max-tasks`): a typo in a grid can mean millions."""


def check_size(sweep: SweepConfig, max_tasks: int = MAX_TASKS) -> int:
    """The sweep's task count, or one sentence when it is over the limit (no prompt: batch jobs have no terminal)."""
    n_tasks = count_tasks(sweep)
    if n_tasks > max_tasks:
        raise SpotsweepError(
            f"sweep '{sweep.name}' has {n_tasks:,} tasks, more than the limit of {max_tasks:,}; check its grids "
            f"(`spotsweep plan`), or pass --max-tasks {n_tasks} to run them all."
        )
    return n_tasks


def check_applicable(executor: ExecutorOptions) -> None:
    """Settings that would be ignored are refused: the user meant something by them. (A setting of another
    backend, such as a SLURM profile with kind local, is refused by the sweep's schema.)"""
    binds = getattr(executor, "binds", None)
    if binds and getattr(executor, "container", None) is None:
        raise SpotsweepError(
            f"executor.binds ({', '.join(binds)}) are for an Apptainer image, but no executor.container "
            "is given; remove binds, or add container (or --container IMAGE.sif)."
        )


def check_inputs_apart(sweep: SweepConfig, layout: OutputLayout) -> None:
    """The output folder is never inside an input (a Zarr store, a MERSCOPE folder), and no input lies under
    its data/, where prepare writes over what it finds."""
    from toolkit.freshness import input_paths

    paths = [path for dataset in sweep.datasets for path in input_paths(dataset).values()]
    check_not_an_input(layout.root, paths, "the output (--out)", may_hold=True)
    for path in paths:
        check_not_an_input(path, [layout.root / "data"], "an input", may_hold=True)


def check_output(root: Path) -> None:
    """The output folder can be written: not a file, not on a read-only file system."""
    if root.exists() and not root.is_dir():
        raise SpotsweepError(f"{root}: the output is an existing file, not a folder; give another output (--out).")
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise SpotsweepError(f"{root}: cannot write here ({probe} is read-only for this user); give another --out.")


def _recorded(layout: OutputLayout) -> dict[str, Any] | None:
    """The sweep.json of an earlier run into this folder; None if there is none, or one cut short (rewritten)."""
    try:
        recorded = read_json(layout.sweep_file)
    except (FileNotFoundError, CorruptFile):
        return None
    return recorded if isinstance(recorded, dict) and isinstance(recorded.get("tasks"), list) else None


def _members(recorded: dict[str, Any]) -> dict[str, list[str]]:
    """The sweeps whose tasks this folder holds, with their task ids (one sweep, unless merged)."""
    members = recorded.get("members")
    if isinstance(members, dict):
        return members
    ids = recorded.get("task_ids")
    return {str(recorded.get("name")): ids if isinstance(ids, list) else []}


def _check_same_datasets(sweep: SweepConfig, recorded: dict[str, Any], layout: OutputLayout) -> None:
    """Merged sweeps share data/<dataset>: a dataset name must mean the same data in both."""
    from toolkit.config import DatasetConfig, identity

    mine = {dataset.name: identity(dataset) for dataset in sweep.datasets}
    for entry in (recorded.get("config") or {}).get("datasets", []):
        try:
            theirs = DatasetConfig.model_validate(entry)
        except ValueError:
            continue
        if theirs.name in mine and identity(theirs) != mine[theirs.name]:
            raise SpotsweepError(
                f"{layout.root}: dataset '{theirs.name}' of sweep '{sweep.name}' differs from the dataset of that "
                f"name already in this folder; rename it in the sweep file, or give the sweep its own --out."
            )


def record_sweep(sweep: SweepConfig, tasks: list[Task], layout: OutputLayout, *, merge: bool = False) -> None:
    """sweep.json: the configuration and the full task list, so status and aggregate know what to expect."""
    write_json(layout.sweep_file, sweep_record(sweep, tasks, layout, merge=merge))


def sweep_record(sweep: SweepConfig, tasks: list[Task], layout: OutputLayout, *, merge: bool = False) -> dict[str, Any]:
    """What sweep.json is to hold after this run (written by `record_sweep`).

    An output folder belongs to one sweep: another sweep's run is refused (its record would replace the first
    one's, whose results would vanish from status, summary and report), unless `merge` adds its tasks to
    the folder's (then "members" names each sweep's tasks, and every later run keeps the others')."""
    recorded = _recorded(layout)
    members = {} if recorded is None else _members(recorded)
    kept: list[dict[str, Any]] = []
    name, config = sweep.name, sweep.model_dump(mode="json")
    if recorded is not None and (sweep.name not in members or len(members) > 1):
        if sweep.name not in members and not merge:
            owner = ", ".join(f"'{member}'" for member in members)
            raise SpotsweepError(
                f"{layout.root}: this output folder holds the results of sweep {owner}, not '{sweep.name}'; give "
                f"'{sweep.name}' its own output folder (--out, or its 'output'), or pass --merge to add its tasks "
                "to this folder's."
            )
        _check_same_datasets(sweep, recorded, layout)
        others = {task_id for member, ids in members.items() if member != sweep.name for task_id in ids}
        mine = {task.id for task in tasks}
        kept = [task for task in recorded["tasks"] if Task.from_dict(task).id in others - mine]
        name = str(recorded.get("name"))
        datasets = {entry["name"]: entry for entry in (recorded.get("config") or {}).get("datasets", [])}
        datasets.update({entry["name"]: entry for entry in config["datasets"]})
        config = {**config, "datasets": list(datasets.values())}
    members = {**{k: v for k, v in members.items() if k != sweep.name}, sweep.name: [task.id for task in tasks]}
    everything = [*kept, *[task.to_dict() for task in tasks]]
    return {
        "name": name,
        "config": config,
        "tasks": everything,
        "task_ids": [Task.from_dict(item).id for item in everything],
        "members": members,
    }


def run_sweep(
    sweep: SweepConfig,
    out: Path | None = None,
    *,
    retry_failed: bool = False,
    max_parallel: int | None = None,
    report: bool = True,
    wait: bool = True,
    max_tasks: int = MAX_TASKS,
    rerun_changed: bool = False,
    merge: bool = False,
) -> RunSummary:
    """Run every task of the sweep that is not done yet, then aggregate (and report).

    On a scheduler, `wait=False` returns right after submission (its aggregate job then writes the summary).
    A finished task of an input changed since is refused unless `rerun_changed` (toolkit.freshness); another
    sweep's output folder unless `merge`.
    """
    check_size(sweep, max_tasks)
    with claimed_output(sweep, out) as (_, layout):
        tasks = expand(sweep)
        record = sweep_record(sweep, tasks, layout, merge=merge)
        check_inputs(sweep.datasets, tasks, layout, rerun_changed=rerun_changed)
        write_json(layout.sweep_file, record)
        return core.run(
            sweep, layout, tasks, retry_failed=retry_failed, max_parallel=max_parallel, report=report, wait=wait
        )


@contextlib.contextmanager
def claimed_output(sweep: SweepConfig, out: Path | None) -> Iterator[tuple[ModuleType, OutputLayout]]:
    """The sweep's backend (its options checked) and its output folder, held for this launcher alone while
    the block runs: `spotsweep run` and `tune` both start every task of the folder, so two at once would
    start each twice."""
    runner = backend_for(sweep.executor.kind)
    check_applicable(sweep.executor)
    runner.check(sweep.executor)
    layout = OutputLayout(Path(out or sweep.output))
    check_output(layout.root)
    check_inputs_apart(sweep, layout)
    layout.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(layout.root / ".run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SpotsweepError(
            f"{layout.root}: another `spotsweep run` or `tune` is working in this output folder; wait for it to "
            "end (`spotsweep status` shows its tasks) rather than start its tasks twice."
        ) from None
    try:
        yield runner, layout
    finally:
        lock.release()


def with_executor(sweep: SweepConfig, kind: str | None, profile: Path | None, image: Path | None = None) -> SweepConfig:
    """The sweep with its executor overridden from the command line (`--executor`, `--profile`, `--container`).

    A profile alone implies SLURM; the backend checks the result now (SLURM loads its profile), so that
    its mistakes stop the run before anything is submitted.
    """
    if kind is None and profile is None and image is None:
        return sweep
    if kind is not None:
        backend_for(kind, "--executor")
    if kind == "local" and profile is not None:
        raise SpotsweepError(
            f"--profile {profile} is a SLURM cluster profile, but --executor local runs the tasks on this machine; "
            "drop --profile, or run on SLURM without --executor local."
        )
    update: dict[str, object] = {}
    if kind is not None or profile is not None:
        update["kind"] = kind or "slurm"
    if profile is not None:
        update["profile"] = profile
    if image is not None:
        if not image.is_file():
            raise SpotsweepError(f"--container {image}: no such image; build it with `make image`.")
        update["container"] = image.resolve()
    if update.get("kind") == "slurm" and profile is None and getattr(sweep.executor, "profile", None) is None:
        raise SpotsweepError("--executor slurm needs a cluster profile; add --profile hpc/profiles/NAME.yaml.")
    data = {**sweep.executor.model_dump(), **update}
    kept = options_model(str(data["kind"])).model_fields  # the sweep file's settings of another backend: overridden
    executor = executor_options({key: value for key, value in data.items() if key in kept})
    backend_for(executor.kind).check(executor)
    return sweep.model_copy(update={"executor": executor})


def sweep_states(root: Path, scheduler: bool = True) -> list[TaskState]:
    """Every task's state from its files; with `scheduler`, refined by every backend that ran some of them."""
    from toolkit.status import task_state

    layout = OutputLayout(Path(root))
    states = [task_state(layout, task) for task in load_tasks(layout)]
    if scheduler:
        for runner in all_backends():
            states = runner.refine_states(layout, states)
    return states


def describe_jobs(root: Path) -> list[str]:
    """What every backend can say about the jobs it ran for this output folder (`spotsweep status`)."""
    layout = OutputLayout(Path(root))
    return [line for runner in all_backends() for line in runner.describe(layout)]
