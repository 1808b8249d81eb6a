"""The state of each task of a sweep, read from its output folder alone (no scheduler needed).

done: result.json exists. failed: error.json exists (with its reason). started: the task began and has
neither (running now, or killed without a word). missing: never started.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout, read_json
from toolkit.sweep import Task

STATES = ("done", "failed", "started", "missing")


@dataclass(frozen=True)
class TaskState:
    task: Task
    state: str
    reason: str = ""
    log: str = ""


def task_state(layout: OutputLayout, task: Task) -> TaskState:
    if layout.result(task.id).exists():
        return TaskState(task, "done")
    if layout.error(task.id).exists():
        error = read_json(layout.error(task.id))
        last_line = error["reason"].strip().splitlines()[-1] if error.get("reason") else ""
        return TaskState(task, "failed", reason=last_line, log=str(layout.error(task.id)))
    if (layout.task_dir(task.id) / "started.json").exists():
        return TaskState(task, "started")
    return TaskState(task, "missing")


def load_tasks(layout: OutputLayout) -> list[Task]:
    """The tasks of the last `spotsweep run` into this folder, as recorded in sweep.json."""
    if not layout.sweep_file.exists():
        raise SpotsweepError(
            f"{layout.root}: no sweep.json here, so this is not a sweep output folder; "
            "give the folder that `spotsweep run` wrote (the sweep file's 'output')."
        )
    return [Task.from_dict(item) for item in read_json(layout.sweep_file)["tasks"]]


def sweep_states(root: Path) -> list[TaskState]:
    layout = OutputLayout(Path(root))
    return [task_state(layout, task) for task in load_tasks(layout)]


def count_states(states: list[TaskState]) -> dict[str, int]:
    counts = Counter(state.state for state in states)
    return {name: counts.get(name, 0) for name in STATES}
