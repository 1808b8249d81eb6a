"""Whether a sweep's prepared data and finished results still match its inputs (toolkit.fingerprint).

An input replaced at the same path would otherwise leave every task "already done" on the old data.
Prepare records the fingerprint of every input of a dataset beside its prepared copy
(`data/<dataset>/inputs.json`, with the dataset's settings) and each task copies it into its result.json.
Then:

- a prepared copy whose record differs from the inputs now (or that has none) is rebuilt: it is a cache;
- `spotsweep run` refuses, in one sentence, while finished results of a changed input stand, unless asked
  to retrain them (`--rerun-changed`: the results are moved aside, never deleted);
- `spotsweep status` names every input that changed since its dataset was prepared.

The fingerprint is recorded beside a task, never in its id (tests/test_architecture.py pins the ids).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from toolkit.config import DatasetConfig, identity
from toolkit.errors import SpotsweepError
from toolkit.fingerprint import describe_change, fingerprint
from toolkit.layout import CorruptFile, OutputLayout, read_json, write_json
from toolkit.sweep import Task

Inputs = dict[str, dict[str, Any]]
"""role (reference, spatial, spatial.cells_table, spots, ...) -> {"path": absolute path, **fingerprint}."""


def input_paths(dataset: DatasetConfig) -> dict[str, Path]:
    """Every file or folder a dataset reads, by its role (a simulated tissue reads none)."""
    paths: dict[str, Path] = {}
    for field in ("spatial", "reference"):
        given = getattr(dataset, field)
        for name, path in (given.paths() if given is not None else {}).items():
            paths[field if name == "path" else f"{field}.{name}"] = Path(path)
    if dataset.spots is not None:
        paths["spots"] = Path(dataset.spots)
    return paths


def current_inputs(dataset: DatasetConfig) -> Inputs:
    """The fingerprints of a dataset's inputs as they are now."""
    return {role: {"path": str(path.resolve()), **fingerprint(path)} for role, path in input_paths(dataset).items()}


def record_file(layout: OutputLayout, dataset: str) -> Path:
    return layout.dataset_dir(dataset) / "inputs.json"


def read_record(layout: OutputLayout, dataset: str) -> dict[str, Any] | None:
    """What the prepared copy of `dataset` was built from, or None (not prepared, prepared before records
    existed, or a record that cannot be read: all mean "rebuild")."""
    try:
        record = read_json(record_file(layout, dataset))
    except (FileNotFoundError, CorruptFile):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("inputs"), dict) else None


def write_record(layout: OutputLayout, dataset: DatasetConfig, inputs: Inputs) -> None:
    write_json(record_file(layout, dataset.name), {"dataset": identity(dataset), "inputs": inputs})


def prepared_is_current(layout: OutputLayout, dataset: DatasetConfig, inputs: Inputs) -> bool:
    """The prepared copy was built from these inputs with these settings."""
    record = read_record(layout, dataset.name)
    return record is not None and record["inputs"] == inputs and record.get("dataset") == identity(dataset)


def recorded_inputs(layout: OutputLayout, dataset: str) -> Inputs:
    """What a task trained on now records in its result.json ({} where the data were prepared before records)."""
    record = read_record(layout, dataset)
    return {} if record is None else record["inputs"]


def changes(recorded: Inputs, current: Inputs) -> list[tuple[str, str, str]]:
    """(role, path, how) of every input whose fingerprint differs from its record."""
    found = []
    for role in sorted(set(recorded) | set(current)):
        old, new = recorded.get(role), current.get(role)
        if old == new:
            continue
        if old is None or new is None:
            how = "it is a new input" if old is None else "it is no longer an input"
            found.append((role, (new or old or {}).get("path", role), how))
            continue
        found.append((role, new["path"], describe_change(old, new)))
    return found


def _result_inputs(layout: OutputLayout, task: Task) -> Inputs | None:
    """The inputs a finished task recorded; None when it recorded none (finished before records existed)."""
    try:
        result = read_json(layout.result(task.id))
    except (FileNotFoundError, CorruptFile):
        return None
    inputs = result.get("inputs") if isinstance(result, dict) else None
    return inputs if isinstance(inputs, dict) and inputs else None


def check_inputs(
    datasets: list[DatasetConfig], tasks: list[Task], layout: OutputLayout, *, rerun_changed: bool = False
) -> list[Task]:
    """Before a run: refuse while finished results of a changed input stand, or (with `rerun_changed`) move
    them aside so that they train again; returns the tasks moved aside.

    Where a dataset's inputs changed since it was prepared, its models and the checkpoints of its unfinished
    tasks were made from the old data too: they go, and prepare rebuilds the copy.
    """
    moved: list[Task] = []
    for dataset in datasets:
        inputs = current_inputs(dataset)
        if prepared_is_current(layout, dataset, inputs):
            continue
        own = [task for task in tasks if task.dataset == dataset.name]
        stale = []
        for task in own:
            recorded = _result_inputs(layout, task)
            if recorded is not None and recorded != inputs:
                stale.append((task, recorded))
        if stale and not rerun_changed:
            task, recorded = stale[0]
            role, path, how = changes(recorded, inputs)[0]
            raise SpotsweepError(
                f"{path}: the {role} input of dataset '{dataset.name}' changed since {len(stale)} finished task(s) "
                f"were trained on it ({how}); pass --rerun-changed to retrain them into this folder, or give a "
                "new output folder (--out) to keep the old results apart."
            )
        record = read_record(layout, dataset.name)
        if record is not None and record["inputs"] != inputs:
            _forget_trained(layout, dataset.name, [task for task in own if not layout.result(task.id).exists()])
        for task, _ in stale:
            layout.result(task.id).rename(layout.task_dir(task.id) / f"result.stale-{time.time_ns()}.json")
            shutil.rmtree(layout.task_dir(task.id) / "checkpoint", ignore_errors=True)
            moved.append(task)
        if stale:
            _forget_trained(layout, dataset.name, [])
    return moved


def _forget_trained(layout: OutputLayout, dataset: str, unfinished: list[Task]) -> None:
    """Reference models and training checkpoints made from a dataset's old data: trained again."""
    shutil.rmtree(layout.root / "models" / dataset, ignore_errors=True)
    for task in unfinished:
        shutil.rmtree(layout.task_dir(task.id) / "checkpoint", ignore_errors=True)


def describe_changes(layout: OutputLayout) -> list[str]:
    """One line per input that changed since its dataset was prepared (`spotsweep status`)."""
    lines = []
    for record_path in sorted((layout.root / "data").glob("*/inputs.json")):
        dataset = record_path.parent.name
        record = read_record(layout, dataset)
        if record is None:
            continue
        now = {role: {"path": old["path"], **fingerprint(old["path"])} for role, old in record["inputs"].items()}
        for role, path, how in changes(record["inputs"], now):
            lines.append(
                f"input changed: {path} (the {role} of dataset '{dataset}') since it was prepared ({how}); its "
                "finished results come from the old data: `spotsweep run SWEEP --rerun-changed` retrains them."
            )
    return lines
