"""How much memory each task's job asks for: the profile's mem_gb, raised on retry after running out.

Why per task: one configuration out of many may need more (a large batch, a packed element), and asking
every task for the most any needs wastes a cluster's memory. As Nextflow does with `task.attempt`, a task
whose last job was killed for memory is resubmitted by `--retry-failed` with that job's request times
`retry_mem_factor` (at most `max_mem_gb`); the others keep mem_gb. Tasks of one request share an array.
"""

from __future__ import annotations

from toolkit.backends.slurm import records
from toolkit.backends.slurm.profile import SlurmProfile
from toolkit.status import TaskState
from toolkit.sweep import Task


def last_requests(submissions: list[records.Submission]) -> dict[str, float | None]:
    """Task id -> the memory (GB) its latest job asked for (None: the cluster's default)."""
    requested: dict[str, float | None] = {}
    for submission in submissions:
        for array in submission.arrays:
            requested.update(dict.fromkeys(array.task_ids, array.mem_gb))
    return requested


def task_memory(
    states: list[TaskState], profile: SlurmProfile, submissions: list[records.Submission]
) -> dict[str, float | None]:
    """Task id -> the memory (GB) its next job asks for."""
    last = last_requests(submissions)
    memory: dict[str, float | None] = {}
    for state in states:
        asked = last.get(state.task.id) or profile.mem_gb
        if state.cause == "OUT_OF_MEMORY" and asked is not None:
            raised = asked * profile.retry_mem_factor
            memory[state.task.id] = min(raised, profile.max_mem_gb) if profile.max_mem_gb else raised
        elif asked is not None and profile.mem_gb is not None and asked > profile.mem_gb:
            memory[state.task.id] = asked  # raised once already: a task that needed more still does
        else:
            memory[state.task.id] = profile.mem_gb
    return memory


def by_request(tasks: list[Task], memory: dict[str, float | None]) -> list[tuple[float | None, list[Task]]]:
    """The tasks grouped by the memory they ask for, in sweep order within each group."""
    groups: dict[float | None, list[Task]] = {}
    for task in tasks:
        groups.setdefault(memory.get(task.id), []).append(task)
    return list(groups.items())


def mem_option(gb: float) -> str:
    """sbatch's --mem for `gb` gigabytes, in whole megabytes."""
    return f"{int(gb * 1024)}MB"
