"""`spotsweep tune SWEEP --trials N`: the command, registered in toolkit/cli.py with one line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.cli_options import Container, Executor, Out, Profile


def tune(
    sweep: Annotated[Path, typer.Argument(metavar="SWEEP", help="Sweep file (YAML) with a `search:` block.")],
    trials: Annotated[
        int, typer.Option(metavar="N", min=1, help="Trials of the study in all: the same command resumes it.")
    ],
    out: Out = None,
    max_parallel: Annotated[
        Optional[int], typer.Option(metavar="N", min=1, help="Trials running at once (default: executor's).")
    ] = None,
    executor: Executor = None,
    profile: Profile = None,
    container: Container = None,
    seed: Annotated[
        Optional[int], typer.Option(metavar="N", min=0, help="The tuner's seed (default: the search block's).")
    ] = None,
) -> None:
    """Search a method's settings with Optuna (TPE, pruning on the accuracy trajectory): trials are tasks."""
    from toolkit.launch import load_sweep, with_executor
    from toolkit.tune.loop import tune as run_tune
    from toolkit.tune.space import with_tuner_seed

    config = with_tuner_seed(with_executor(load_sweep(sweep), executor, profile, container), seed)
    summary = run_tune(config, str(sweep), out, trials=trials, max_parallel=max_parallel)
    root = out or config.output
    counts = ", ".join(f"{n} {state}" for state, n in summary.trials.items() if n)
    print(f"{config.name}: trials {counts}; {summary.seconds:.0f} s. Report: {root / 'report' / 'index.html'}")
    for best in summary.best:
        values = ", ".join(f"{value:.4f}" for value in best["values"])
        params = ", ".join(f"{name} {value}" for name, value in best["params"].items())
        print(f"best: trial {best['number']}: {values}: {params}")
    if summary.best_file is not None:
        print(f"a trial's value is one draw; train the best again with fresh seeds: spotsweep run {summary.best_file}")
