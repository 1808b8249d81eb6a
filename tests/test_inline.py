"""The inline backend: the tiny sweep, every task in this very process one after another, to a report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import TINY_SWEEP
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep, sweep_states
from toolkit.sweep import expand


def test_the_tiny_sweep_runs_inline_to_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toolkit.task

    ran_in: list[int] = []
    run_task = toolkit.task.run_task

    def observed(*args: object, **kwargs: object) -> str:
        ran_in.append(os.getpid())  # a task process would not see this patch at all
        return run_task(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(toolkit.task, "run_task", observed)
    data = {**TINY_SWEEP, "executor": {"kind": "inline"}}
    sweep = parse_sweep(data, "tiny")
    summary = run_sweep(sweep, tmp_path / "out")

    assert ran_in == [os.getpid()] * len(expand(sweep))
    assert summary.submitted == 4 and summary.states["done"] == 4 and summary.jobs == {}
    assert {state.state for state in sweep_states(tmp_path / "out")} == {"done"}
    assert "4 tasks: 4 done" in (tmp_path / "out" / "report" / "index.md").read_text()
    assert (tmp_path / "out" / "summary.nc").exists()

    again = run_sweep(sweep, tmp_path / "out", report=False)  # nothing left: no task runs twice
    assert again.submitted == 0 and again.skipped == 4 and len(ran_in) == 4
