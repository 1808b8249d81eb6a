"""What every backend shares: the summary a run returns, which tasks to run, the inputs to bind, whether
the inputs need preparing, the finish."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from toolkit.config import ExecutorOptions, PlainPath, PlainText
from toolkit.status import TaskState

if TYPE_CHECKING:
    from toolkit.config import SweepConfig
    from toolkit.layout import OutputLayout
    from toolkit.sweep import Task


class JobOptions(ExecutorOptions):
    """The settings of a backend whose tasks run as jobs (local processes, SLURM array elements)."""

    max_parallel: int | None = Field(default=None, gt=0)
    """Tasks running at once; on SLURM it overrides the profile's array_parallelism."""
    container: PlainPath | None = None
    """An Apptainer image (.sif) to run every job in; None runs them on the host."""
    binds: list[PlainText] = Field(default_factory=list)
    """Extra `apptainer --bind` specs (host[:container]) the jobs need, e.g. input data folders."""


@dataclass(frozen=True)
class RunSummary:
    submitted: int
    skipped: int
    states: dict[str, int]
    seconds: float
    jobs: dict[str, str] = field(default_factory=dict)
    """On a scheduler: the job ids of this submission (prepare, tasks, aggregate); empty when local."""
    waited: bool = True
    """False when `run` returned right after submitting (the states are those at submission)."""


def input_files(sweep: SweepConfig) -> list[Path]:
    """The sweep's input files (data, cell tables, annotations, label maps), whose folders a containerised
    job must see."""
    return [
        Path(path)
        for dataset in sweep.datasets
        for given in (dataset.spatial, dataset.reference)
        if given is not None
        for path in given.paths().values()
    ]


def tasks_to_run(states: list[TaskState], retry_failed: bool) -> list[Task]:
    """Never-started and interrupted tasks; failed ones only when asked. Pending/running ones never."""
    wanted = {"missing", "started"} | ({"failed"} if retry_failed else set())
    return [state.task for state in states if state.state in wanted]


def needs_prepare(sweep: SweepConfig, layout: OutputLayout, to_run: list[Task]) -> bool:
    """Whether some pseudospots, reference or reference model of `to_run` is missing or was made from other
    inputs than those now (a retry usually needs no prepare step)."""
    from toolkit.freshness import current_inputs, prepared_is_current
    from toolkit.prepare import reference_model_id

    datasets = {task.dataset for task in to_run}
    for dataset in datasets:
        if not (layout.spots(dataset).exists() and layout.reference(dataset).exists()):
            return True
    for config in sweep.datasets:
        if config.name in datasets and not prepared_is_current(layout, config, current_inputs(config)):
            return True
    for task in to_run:
        model_id = reference_model_id(task)
        if model_id is not None and not (layout.model_dir(task.dataset, model_id) / "training.json").exists():
            return True
    return False


def finish(out: str | Path, report: bool = True) -> None:
    """Once every task has ended: the summary (NetCDF + Zarr), then the report."""
    from toolkit.aggregate import write_summary
    from toolkit.report import write_report

    write_summary(Path(out))
    if report:
        write_report(Path(out))
