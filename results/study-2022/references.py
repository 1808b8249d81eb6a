"""Which committed CondSCVI reference models are the same model: the study's experiments each trained their
reference once, and a reference trained again can move destVI's results (E6), so whether two experiments'
rows compare depends on whether their references are one model.

    .venv/bin/python results/study-2022/references.py     # prints the table (markdown), quoted in the README

Reads every committed reference model (results/study-2022/*/models/ and the tuning's
results/tune-starmap-189/seed-*/models/) and names its weights by a digest of its tensors' values: the
saved files differ byte for byte between two trainings (their pickled metadata), the weights need not. One
row per distinct model; the experiments listed on one row trained against identical weights.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FOLDERS = (HERE, HERE.parent / "tune-starmap-189")
sys.path.insert(0, str(REPO))
from toolkit.config import load_sweep  # noqa: E402
from toolkit.prepare import reference_model_id  # noqa: E402
from toolkit.sweep import expand  # noqa: E402


def weights_digest(model: Path) -> str:
    """The first 12 hex digits of a SHA-256 over the model's floating-point tensors, by name."""
    state = torch.load(model, map_location="cpu", weights_only=False)["model_state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if torch.is_tensor(value) and value.dtype.is_floating_point:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(value.numpy()).tobytes())
    return digest.hexdigest()[:12]


def committed_models() -> list[tuple[str, Path, float]]:
    """(experiment, model file, seconds of training) of every committed reference model; the experiment is
    named by its folder, under results/study-2022 or results/."""
    found = []
    for folder in FOLDERS:
        for model in sorted(folder.glob("**/models/*/condscvi-*/model.pt")):
            experiment = model.parents[3].relative_to(folder if folder == HERE else folder.parent).as_posix()
            seconds = json.loads((model.parent / "training.json").read_text())["train_time_s"]
            found.append((experiment, model, seconds))
    return found


def reference_seeds() -> dict[str, int]:
    """The CondSCVI seed of each reference model id, from the committed sweep files (the id hashes the
    reference's settings, seed included)."""
    seeds = {}
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        for task in expand(load_sweep(path)):
            if (model_id := reference_model_id(task)) is not None:
                seeds[model_id] = task.reference_config["seed"]
    return seeds


def table() -> str:
    """One row per distinct model: its dataset, settings (the id hashes them), weights and experiments."""
    seeds = reference_seeds()
    groups: dict[tuple[str, str, str], list[str]] = {}
    for experiment, model, seconds in committed_models():
        key = (model.parents[1].name, model.parent.name, weights_digest(model))
        groups.setdefault(key, []).append(f"{experiment} ({seconds:.0f} s)")
    lines = [
        "| dataset | reference (model id) | CondSCVI seed | weights (digest) | committed by (training seconds) |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for (dataset, model_id, digest), experiments in groups.items():
        seed = seeds.get(model_id, "?")
        lines.append(f"| {dataset} | {model_id} | {seed} | {digest} | {', '.join(experiments)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
