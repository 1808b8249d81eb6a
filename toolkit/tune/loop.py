"""The tuning loop: ask a trial, dispatch its tasks through the backend core, report its trajectory and
prune it, tell the study how it ended; `max_parallel` trials at once, new ones asked as earlier ones end.

Resume is the journal's: a finished trial (complete, pruned, failed) is never run again, and a trial
left running by a stopped or killed launcher is taken up again by the next `spotsweep tune`: its tasks
that finished are read, the others dispatched again (they resume from their last checkpoint). `--trials
N` is the study's total, so the same command after a stop runs only what is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.backends import core
from toolkit.errors import SpotsweepError
from toolkit.launch import claimed_output, record_sweep
from toolkit.layout import OutputLayout
from toolkit.status import mark_pruned, task_state
from toolkit.sweep import Task
from toolkit.tune import objective
from toolkit.tune.best import write_best
from toolkit.tune.report import best_trials, count_trials, write_trials
from toolkit.tune.space import searched_grid, suggest, trial_tasks
from toolkit.tune.study import open_study

if TYPE_CHECKING:
    import optuna

    from toolkit.config import SweepConfig
    from toolkit.methods.search import SearchConfig

POLL_S = 1.0


@dataclass
class Running:
    """A trial whose tasks run: what was dispatched, what ended, which steps were reported."""

    trial: Any
    tasks: list[Task]
    execution: core.Execution | None
    reported: set[int] = field(default_factory=set)
    ended: dict[str, str] = field(default_factory=dict)
    """Task id -> its state when it ended (done, failed, ...)."""


@dataclass(frozen=True)
class TuneSummary:
    trials: dict[str, int]
    """How many trials of the study ended in each state (complete, pruned, fail, running)."""
    seconds: float
    best: list[dict[str, Any]]
    """The best trial (one objective) or the Pareto front (two): number, values, params."""
    best_file: Path | None = None
    """OUT/tune/best.yaml: the best settings as a sweep with fresh seeds (one objective; toolkit.tune.best)."""


def _say(line: str) -> None:
    print(line, flush=True)


def tune(
    sweep: SweepConfig,
    source: str,
    out: Path | None = None,
    *,
    trials: int,
    max_parallel: int | None = None,
    report: bool = True,
    say: Callable[[str], None] = _say,
) -> TuneSummary:
    """Run the sweep's study up to `trials` trials in all (resuming it), then aggregate and report."""
    start = time.perf_counter()
    grid = searched_grid(sweep, source)
    search = grid.search
    assert search is not None
    with claimed_output(sweep, out) as (runner, layout):
        study = open_study(layout, sweep.name, search)
        parallel = max_parallel or getattr(sweep.executor, "max_parallel", None) or 1
        loop = Loop(sweep, layout, study, grid, parallel, say)
        loop.run(trials)
        write_trials(layout, study)  # before the finish: the aggregate reads the trials' states from it
        try:
            best_file = write_best(layout, sweep, grid, study, say)
        except ValueError as exc:  # the sweep's search changed since the best trial: its settings do not fit
            best_file = None
            say(f"tune/best.yaml not written: the best trial's settings do not fit today's search ({exc})")
        runner.finish(layout, report)  # the report draws the Tuning section from the folder (toolkit.tuned)
        return TuneSummary(count_trials(study), time.perf_counter() - start, best_trials(study), best_file)


class Loop:
    """One `spotsweep tune`: the trials it runs and follows."""

    def __init__(
        self, sweep: SweepConfig, layout: OutputLayout, study: Any, grid: Any, parallel: int, say: Callable[[str], None]
    ) -> None:
        self.sweep, self.layout, self.study, self.grid = sweep, layout, study, grid
        self.parallel, self.say = parallel, say
        self.search: SearchConfig = grid.search
        self.running: dict[int, Running] = {}
        self.prunes = len(study.directions) == 1

    def run(self, trials: int) -> None:
        import optuna

        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        try:
            with core.sigterm_as_interrupt():
                for frozen in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                    self._resume(frozen)
                while True:
                    done = len(self.study.get_trials(deepcopy=False, states=finished))
                    while len(self.running) < self.parallel and done + len(self.running) < trials:
                        if self._preparing():
                            break
                        self._ask()
                    if not self.running:
                        return
                    for number in list(self.running):
                        self._follow(self.running[number])
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            n_running = len(self.running)
            for entry in self.running.values():
                if entry.execution is not None:
                    entry.execution.cancel()
            raise SpotsweepError(
                f"stopped (Ctrl-C or SIGTERM) with {n_running} trial(s) running: their tasks were stopped and keep "
                "their last checkpoint, finished trials are kept in the study's journal; the same `spotsweep tune` "
                "resumes the running trials and goes on."
            ) from None
        finally:
            for entry in self.running.values():
                if entry.execution is not None:
                    entry.execution.jobs.close()

    def _preparing(self) -> bool:
        """Whether a running trial's dispatch still prepares the shared inputs (pseudospots, reference
        model): the next trial waits for them rather than start a second prepare job beside the first."""
        from toolkit.backends.common import needs_prepare

        return any(
            entry.execution is not None and needs_prepare(self.sweep, self.layout, entry.tasks)
            for entry in self.running.values()
        )

    def _record(self) -> None:
        """sweep.json lists every trial's tasks, so that status and the aggregate know them."""
        tasks = [
            Task.from_dict(data)
            for trial in self.study.get_trials(deepcopy=False)
            for data in trial.user_attrs.get("tasks", [])
        ]
        record_sweep(self.sweep, tasks, self.layout)

    def _ask(self) -> None:
        trial = self.study.ask()
        settings = suggest(trial, self.grid)
        tasks = trial_tasks(self.sweep, self.grid, trial.number, settings)
        trial.set_user_attr("tasks", [task.to_dict() for task in tasks])
        trial.set_user_attr("task_ids", [task.id for task in tasks])
        self._record()
        shown = ", ".join(f"{name} {value}" for name, value in settings.items())
        self.say(f"trial {trial.number}: {shown}")
        self._start(trial, tasks, reported=set())

    def _resume(self, frozen: optuna.trial.FrozenTrial) -> None:
        """A trial a stopped launcher left running: its finished tasks are read, the others run again."""
        import optuna

        tasks = [Task.from_dict(data) for data in frozen.user_attrs.get("tasks", [])]
        if not tasks:  # asked, but stopped before its tasks were made: nothing of it ran
            self.study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            return
        self.say(f"trial {frozen.number}: resumed")
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        self._start(trial, tasks, reported=set(frozen.intermediate_values))

    def _start(self, trial: Any, tasks: list[Task], reported: set[int]) -> None:
        states = {task.id: task_state(self.layout, task).state for task in tasks}
        to_run = [task for task in tasks if states[task.id] != "done"]
        ended = {task.id: "done" for task in tasks if states[task.id] == "done"}
        execution = None
        if to_run:
            parallel = self.parallel * self.search.seeds_per_trial  # each task's share of the cores
            execution = core.dispatch(self.sweep, self.layout, to_run, parallel=parallel, report=False)
        self.running[trial.number] = Running(trial, tasks, execution, reported, ended)

    def _follow(self, entry: Running) -> None:
        if entry.execution is not None:
            for end in entry.execution.poll():
                entry.ended[end.task.id] = end.state.state
        if len(entry.ended) == len(entry.tasks):
            self._end(entry)
        elif self.prunes:
            self._report(entry)

    def _report(self, entry: Running) -> None:
        """Report the trajectory's new points; prune (stop its tasks) when the pruner says so."""
        import optuna

        per_task = [objective.live_points(self.layout, task.id, self.search.objective) for task in entry.tasks]
        points = objective.trial_points(per_task, self.search.prune_interval_steps)
        new = sorted(step for step in points if step not in entry.reported)
        for step in new:
            entry.trial.report(points[step], step)
            entry.reported.add(step)
        finished = all(self.layout.result(task.id).exists() for task in entry.tasks)
        if new and not finished and entry.trial.should_prune():  # finished: its end (complete) is being seen
            why = f"trial {entry.trial.number} pruned at step {new[-1]} ({points[new[-1]]:.4f})"
            for task in entry.tasks:
                if not self.layout.result(task.id).exists():  # before the cancel: status reads pruned, not failed
                    mark_pruned(self.layout, task.id, why)
            if entry.execution is not None:
                entry.execution.cancel([task.id for task in entry.tasks])
                entry.execution.jobs.close()
            self.study.tell(entry.trial, state=optuna.trial.TrialState.PRUNED)
            write_trials(self.layout, self.study)
            del self.running[entry.trial.number]
            self.say(f"trial {entry.trial.number}: pruned at step {new[-1]} ({points[new[-1]]:.4f})")

    def _end(self, entry: Running) -> None:
        import optuna

        del self.running[entry.trial.number]
        if entry.execution is not None:
            entry.execution.jobs.close()
        not_done = [task_id for task_id, state in entry.ended.items() if state != "done"]
        if not_done:
            entry.trial.set_user_attr("failed_tasks", not_done)
            self.study.tell(entry.trial, state=optuna.trial.TrialState.FAIL)
            write_trials(self.layout, self.study)
            self.say(f"trial {entry.trial.number}: failed ({len(not_done)} task(s) did not finish: {not_done[0]})")
            return
        try:
            scores = [objective.final_score(self.layout, task.id, self.search.objective) for task in entry.tasks]
        except ValueError as exc:
            self.study.tell(entry.trial, state=optuna.trial.TrialState.FAIL)
            raise SpotsweepError(str(exc)) from None
        values = [sum(scores) / len(scores)]
        if self.search.second_objective is not None:
            seconds = [objective.train_seconds(self.layout, task.id) for task in entry.tasks]
            values.append(sum(seconds) / len(seconds))
        entry.trial.set_user_attr("seed_scores", scores)
        self.study.tell(entry.trial, values if len(values) > 1 else values[0])
        write_trials(self.layout, self.study)  # status and a SLURM trial's aggregate job read the states
        self.say(f"trial {entry.trial.number}: complete, " + ", ".join(f"{value:.4f}" for value in values))
