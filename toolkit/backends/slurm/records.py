"""Talking to SLURM after submission: the record of submitted jobs, and their states from sacct/squeue.

Why a record: a sweep's output folder must be enough to answer "what is running, what died and why"
days later, from another shell. Every submission appends its job ids to OUT/slurm/submissions.json;
`spotsweep status` and the aggregate job ask the scheduler about exactly those ids. Job names are
recorded too, so ids reused by another cluster (or a reinstalled test cluster) are not mistaken for ours.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from submitit.core.utils import JobPaths

from toolkit.layout import OutputLayout, read_json, write_json

LIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
    }
)
"""States after which the job may still run (a requeued task is back to PENDING)."""
RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"})


@dataclass
class ArrayRecord:
    """One sbatch array: element i runs task_ids[i * pack : (i + 1) * pack] (one task each when pack is 1)."""

    job_id: str
    task_ids: list[str]
    pack: int = 1
    """Tasks run side by side in each element (the profile's `pack`)."""
    mem_gb: float | None = None
    """The memory each element asked for (--mem); None: the cluster's default."""

    @property
    def n_elements(self) -> int:
        return -(-len(self.task_ids) // self.pack)


@dataclass
class Submission:
    """The jobs of one `spotsweep run` on SLURM: prepare -> array(s) -> aggregate."""

    number: int
    time: float
    name: str
    """Base job name (spotsweep-<sweep>); jobs are named <name>-prepare, -tasks, -aggregate."""
    folder: str
    """submitit's log folder pattern (with %j)."""
    prepare: str
    """The prepare job's id; empty when everything was prepared already (a retry)."""
    arrays: list[ArrayRecord]
    aggregate: str
    elements: dict[str, str] = field(default_factory=dict)
    """task id -> array element id (A_i), filled on load; a lone task's plain job id (see below)."""

    def __post_init__(self) -> None:
        self.arrays = [a if isinstance(a, ArrayRecord) else ArrayRecord(**a) for a in self.arrays]
        self.elements = {
            task_id: _element_id(array, index) for array in self.arrays for index, task_id in enumerate(array.task_ids)
        }

    @property
    def job_names(self) -> dict[str, str]:
        """Job id -> the name SLURM should report for it."""
        names = {self.aggregate: f"{self.name}-aggregate"}
        if self.prepare:
            names[self.prepare] = f"{self.name}-prepare"
        names.update({array.job_id: f"{self.name}-tasks" for array in self.arrays})
        return names

    def log(self, job_id: str) -> Path:
        """The stderr log submitit writes for a job or array element."""
        return JobPaths(self.folder, job_id=job_id, task_id=0).stderr

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("elements")
        return data


def _element_id(array: ArrayRecord, index: int) -> str:
    """The element that runs task `index`; submitit sends an "array" of one element as a plain job (no
    `--array`), whose id is the job's own."""
    return array.job_id if array.n_elements == 1 else f"{array.job_id}_{index // array.pack}"


def submissions_file(layout: OutputLayout) -> Path:
    return layout.root / "slurm" / "submissions.json"


def read_submissions(layout: OutputLayout) -> list[Submission]:
    path = submissions_file(layout)
    if not path.exists():
        return []
    return [Submission(**item) for item in read_json(path)]


def record_submission(layout: OutputLayout, submission: Submission) -> None:
    previous = [s.to_dict() for s in read_submissions(layout)]
    write_json(submissions_file(layout), [*previous, submission.to_dict()])


def latest_elements(submissions: list[Submission]) -> dict[str, tuple[Submission, str]]:
    """Task id -> (its latest submission, its array element there)."""
    latest: dict[str, tuple[Submission, str]] = {}
    for submission in submissions:
        for task_id, element in submission.elements.items():
            latest[task_id] = (submission, element)
    return latest


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    """SLURM's state word: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ..."""
    exit_code: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def running(self) -> bool:
        return self.state in RUNNING


class SchedulerUnavailable(RuntimeError):
    """Neither sacct nor squeue answered (not on a cluster, or SLURM_CONF not set)."""


def _expand(job_id: str) -> list[str]:
    """'12_[0-3%2]' or '12_[1,4-5]' -> ['12_0', ...]; other ids unchanged."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    base, spec = match.groups()
    elements = []
    for part in spec.split("%")[0].split(","):
        low, _, high = part.partition("-")
        elements += [f"{base}_{i}" for i in range(int(low), int(high or low) + 1)]
    return elements


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _rows(output: str | None, job_names: dict[str, str], n_fields: int) -> Iterator[tuple[str, str, str]]:
    """(array element or job id, state, exit code or "") of each row of sacct's or squeue's `|`-separated
    output (JobID|JobName|State[|ExitCode]) whose job name is the recorded one."""
    for line in (output or "").splitlines():
        parts = line.split("|")
        if len(parts) < n_fields:
            continue
        job_id, name, state = parts[:3]
        if job_names.get(job_id.split("_")[0]) not in (None, name):
            continue
        for element in _expand(job_id):
            yield element, state, parts[3] if n_fields > 3 else ""


def query(job_names: dict[str, str]) -> dict[str, JobState]:
    """States of the given jobs (id -> expected name); array jobs come back per element (A_i).

    sacct first (it knows finished jobs); squeue for what sacct does not list. Rows whose job name
    differs from the recorded one belong to someone else and are dropped.
    """
    if not job_names:
        return {}
    ids = ",".join(sorted(job_names))
    states: dict[str, JobState] = {}
    sacct = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,JobName,State,ExitCode", "-j", ids])
    for element, state, exit_code in _rows(sacct, job_names, 4):
        states[element] = JobState(element, state.split()[0] if state else "UNKNOWN", exit_code)
    squeue = _run(["squeue", "-h", "-r", "-o", "%i|%j|%T", "-j", ids])
    for element, state, _ in _rows(squeue, job_names, 3):
        states.setdefault(element, JobState(element, state))
    answered = sacct is not None or squeue is not None
    if not answered:
        raise SchedulerUnavailable("neither sacct nor squeue answered")
    return states


MEMORY_KILL = re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill|out of memory", re.IGNORECASE)
"""What slurmstepd writes into the job's log when it kills a step over its --mem: with cgroups the job
is accounted OUT_OF_MEMORY; without them (JobAcctGatherParams=OverMemoryKill) SLURM 22.05 accounts it
FAILED and only this line says why."""


def _log_tail(log: Path, size: int = 20_000) -> list[str]:
    """The non-empty lines of the last `size` bytes of a job's log (none if it cannot be read)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - size))
            return [line.strip() for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []


def memory_kill_line(log: Path) -> str:
    """slurmstepd's line saying it killed a step over its memory, with the figures where it gives them."""
    lines = [line for line in _log_tail(log) if line.startswith("slurmstepd") and MEMORY_KILL.search(line)]
    with_figures = [line for line in lines if "(" in line]
    return (with_figures or lines or [""])[-1]


def ran_out_of_memory(job: JobState, log: Path) -> bool:
    """Whether SLURM killed the job for using more memory than it asked for."""
    return job.state == "OUT_OF_MEMORY" or (job.state == "FAILED" and bool(memory_kill_line(log)))


def last_error_line(log: Path) -> str:
    """The line of a job's stderr that best says why it ended: the last one mentioning an error."""
    lines = _log_tail(log)
    exception = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*:|^[\w.]+: .*error", re.IGNORECASE)
    python_lines = [line for line in lines if exception.search(line) and not line.startswith(("srun:", "slurmstepd"))]
    if python_lines:
        return python_lines[-1]
    slurm_lines = [line for line in lines if "***" in line]  # slurmstepd: *** JOB 12 ON node CANCELLED AT ... ***
    if slurm_lines:
        return slurm_lines[-1]
    for line in reversed(lines):
        if re.search(r"error|cancelled|killed|timeout|time limit", line, re.IGNORECASE):
            return line
    return lines[-1] if lines else ""
