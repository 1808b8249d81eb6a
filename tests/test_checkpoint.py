"""Training checkpoints: a DestVI run stopped by USR2 and resumed gives the uninterrupted result, bit for bit.

Both engines: stock scvi-tools (a Lightning callback) and the fast engine (its own checkpoint file).

Real CondSCVI + DestVI training on the tiny tissue, on CPU with one thread, in this process. USR2 comes
from a helper thread as soon as the first periodic checkpoint exists, so the stop lands at whatever
epoch the machine has reached: the claim must hold at any epoch boundary. A stand-in for submitit's
handler (raise SystemExit, as submitit does after `scontrol requeue`) sits below ours.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest

from tests.conftest import TINY_SWEEP
from toolkit.backends import preemption
from toolkit.config import parse_sweep
from toolkit.engines import checkpoint
from toolkit.layout import OutputLayout
from toolkit.prepare import ensure_reference_model, prepare
from toolkit.pseudospots import read_spots
from toolkit.sweep import Task, expand

EPOCHS = 15
EVERY = 3


CHECKPOINT_FILES = {"scvi": checkpoint.CHECKPOINT_NAME, "fast": checkpoint.FAST_CHECKPOINT_NAME}


@pytest.fixture(scope="module")
def prepared_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Task, Any, Any, Path]:
    """The tiny tissue's spots, reference and trained reference model; one long-ish destVI task."""
    out = tmp_path_factory.mktemp("checkpoint")
    sweep = parse_sweep(TINY_SWEEP, "tiny")
    task = dataclasses.replace(expand(sweep)[0], max_epochs=EPOCHS)
    prepare(sweep.model_dump(mode="json"), [task.to_dict()], str(out))
    layout = OutputLayout(out)
    model_dir = ensure_reference_model(task, layout)
    return task, read_spots(layout.spots(task.dataset)), ad.read_h5ad(layout.reference(task.dataset)), model_dir


@pytest.fixture(params=["scvi", "fast"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def prepared(prepared_inputs: tuple, engine: str) -> tuple[Task, Any, Any, Path]:
    """The same task trained by one engine or the other."""
    task, *rest = prepared_inputs
    return (dataclasses.replace(task, params={**task.params, "engine": engine}), *rest)


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The destVI adapter as the lead wires it (`model.train(..., **checkpoint.train_kwargs())`).

    Until that line is in toolkit/methods/destvi.py, DestVI.train is wrapped here to the same effect.
    """
    import torch
    from scvi.model import DestVI

    from toolkit.methods import destvi

    if "train_kwargs" not in inspect.getsource(destvi):
        original = DestVI.train

        def train(self: Any, *args: Any, **kwargs: Any) -> Any:
            extra = checkpoint.train_kwargs()
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), *extra.pop("callbacks", [])]
            return original(self, *args, **kwargs, **extra)

        monkeypatch.setattr(DestVI, "train", train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fit(prepared: tuple) -> Any:
    from toolkit.methods import destvi

    task, spots, reference, model_dir = prepared
    return destvi.fit(spots, reference, model_dir, task)


def _requeue_like_submitit(signum: int, frame: Any) -> None:
    raise SystemExit(-1)


def _bypass_like_submitit(signum: int, frame: Any) -> None:
    """submitit ignores SIGTERM in its jobs."""


def _preempt_when(path: Path) -> None:
    """What submitit's `job._interrupt()` sends on preemption: SIGTERM, then USR2."""

    def watch() -> None:
        while not path.exists():
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)

    threading.Thread(target=watch, daemon=True).start()


def test_no_active_task_means_no_checkpointing() -> None:
    assert checkpoint.train_kwargs() == {}


@pytest.mark.usefixtures("wired")
def test_resumed_training_equals_uninterrupted_bit_for_bit(prepared: tuple, engine: str, tmp_path: Path) -> None:
    uninterrupted = _fit(prepared)

    previous = signal.signal(signal.SIGUSR2, _requeue_like_submitit)
    previous_term = signal.signal(signal.SIGTERM, _bypass_like_submitit)
    try:
        _preempt_when(tmp_path / CHECKPOINT_FILES[engine])
        with pytest.raises(SystemExit), preemption.activate(tmp_path, every_n_epochs=EVERY) as first:
            _fit(prepared)
        assert first.saved_epoch is not None and first.saved_epoch >= EVERY
        # SIGTERM did not stop training (Lightning would); USR2 saved at the end of the running epoch.
        events = [event["event"] for event in first.events]
        if "stop-requested" in events:
            assert events[-1] == "saved" and events.index("stop-requested") < len(events) - 1

        saved = tmp_path / CHECKPOINT_FILES[engine]
        assert _set_saved_train_seconds(saved, EARLIER_S) > 0  # the first attempt's, marked to be found again
        started = time.perf_counter()
        with preemption.activate(tmp_path, every_n_epochs=EVERY) as second:
            resumed = _fit(prepared)
        this_attempt_s = time.perf_counter() - started
    finally:
        signal.signal(signal.SIGUSR2, previous)
        signal.signal(signal.SIGTERM, previous_term)

    # It did resume from the saved epoch (not from scratch), unless the stop came after the last epoch.
    if first.saved_epoch < EPOCHS:
        assert second.resumed_from_epoch == first.saved_epoch
    assert resumed.n_steps == uninterrupted.n_steps
    assert np.array_equal(resumed.proportions.to_numpy(), uninterrupted.proportions.to_numpy())
    assert np.array_equal(resumed.states, uninterrupted.states)
    assert resumed.history.equals(uninterrupted.history)
    assert len(resumed.history) == EPOCHS
    # Its training time counts the earlier attempt's, as its checkpoint recorded it, plus this one's.
    assert EARLIER_S <= resumed.train_time_s <= EARLIER_S + this_attempt_s


EARLIER_S = 100_000.0
"""A training time no tiny fit reaches, written into a checkpoint as its earlier attempts' time."""


def _set_saved_train_seconds(path: Path, seconds: float) -> float:
    """Replace the training time a checkpoint (either engine's) records as spent; return the recorded one."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    holder = state if "seconds" in state else state["callbacks"][checkpoint.STATE_KEY]  # fast engine; stock
    recorded, holder["seconds"] = float(holder["seconds"]), seconds
    torch.save(state, path)
    return recorded


@pytest.mark.usefixtures("wired")
def test_requeue_after_training_restores_the_trained_model(prepared: tuple, tmp_path: Path) -> None:
    """A requeue while scoring: the final checkpoint brings back the trained model without retraining."""
    with preemption.activate(tmp_path, every_n_epochs=EVERY):
        trained = _fit(prepared)
    with preemption.activate(tmp_path, every_n_epochs=EVERY) as again:
        restored = _fit(prepared)
    assert not any(event["event"] == "saved" and event["epochs_done"] < EPOCHS for event in again.events)
    assert np.array_equal(restored.proportions.to_numpy(), trained.proportions.to_numpy())
    assert restored.n_steps == trained.n_steps


def test_usr2_outside_training_hands_over_at_once(tmp_path: Path) -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with preemption.activate(tmp_path, every_n_epochs=EVERY):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [signal.SIGUSR2]


def test_a_requeue_whose_scontrol_is_killed_by_that_requeue_exits_as_requeued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SLURM requeues a job by terminating it, and under load its SIGTERM can reach `scontrol requeue`
    before scontrol exits: submitit's own requeue (run here) then raises CalledProcessError, which once
    recorded the attempt as failed though the job was requeued. A stand-in scontrol killed by SIGTERM plays
    that race, which no test can bring about on purpose; the task must exit as submitit does after a requeue."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    stand_in = tmp_path / "bin" / "scontrol"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nkill -TERM $$\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "23")

    def requeue_like_submitit(signum: int, frame: Any) -> None:
        SlurmJobEnvironment()._requeue(countdown=1)
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, requeue_like_submitit)
    try:
        with pytest.raises(SystemExit), preemption.activate(tmp_path, every_n_epochs=EVERY):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(5)
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_usr2_during_a_too_long_epoch_hands_over_after_the_grace_period(tmp_path: Path) -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with preemption.activate(tmp_path, every_n_epochs=EVERY, grace_s=0.2) as session:
            session.training = object()  # an epoch in progress that never ends
            os.kill(os.getpid(), signal.SIGUSR2)  # deferred; a timer signals again after the grace period
            time.sleep(0.05)
            assert calls == [] and session.stop_requested
            deadline = time.monotonic() + 30
            while not calls and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [signal.SIGUSR2]
