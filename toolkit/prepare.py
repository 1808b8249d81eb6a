"""The prepare stage: inputs -> pseudospots and reference AnnData on disk -> trained reference models.

It runs once per sweep before the tasks (as its own job), so that many tasks starting together find
their inputs ready. Each product is written atomically and reused when present; the reference model is
keyed by a hash of everything it depends on and guarded by a file lock, so concurrent callers train it
once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anndata as ad
from filelock import FileLock

from toolkit.config import DatasetConfig, InputConfig, SweepConfig
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout, read_json, write_atomically, write_dir_atomically, write_json
from toolkit.methods import adapter
from toolkit.pseudospots import build_pseudospots, write_spots
from toolkit.sweep import Task, content_hash


def _load_inputs(dataset: DatasetConfig) -> tuple[ad.AnnData, ad.AnnData, float]:
    """(reference, spatial cells, window) from a simulation or from AnnData files."""
    if dataset.simulate is not None:
        from toolkit.data.synthetic import PRESETS, simulate

        sim = dataset.simulate
        reference, cells = simulate(
            sim.preset,
            sim.seed,
            n_spatial_cells=sim.n_spatial_cells,
            n_reference_cells=sim.n_reference_cells,
            n_genes=sim.n_genes,
        )
        return reference, cells, dataset.window or PRESETS[sim.preset].window
    reference = _read(dataset.reference)
    cells = _read(dataset.spatial)
    return reference, cells, float(dataset.window)


def _read(given: InputConfig) -> ad.AnnData:
    """Any supported layout into the canonical AnnData (obs['cell_type'], obsm['spatial'])."""
    from toolkit.data.readers import read_cells

    options = given.model_dump(exclude={"path"})
    return read_cells(given.path, **options)


def _canonical_reference(reference: ad.AnnData, genes: list[str]) -> ad.AnnData:
    """Shared genes only, labels only: the form every reference model trains on."""
    reference = reference[:, genes].copy()
    reference.obs = reference.obs[["cell_type"]].copy()
    reference.obs["cell_type"] = reference.obs["cell_type"].astype("category").cat.remove_unused_categories()
    return reference


def prepare_dataset(dataset: DatasetConfig, layout: OutputLayout) -> None:
    """Write the reference (shared genes) and the pseudospots of one dataset, unless already there."""
    if layout.spots(dataset.name).exists() and layout.reference(dataset.name).exists():
        return
    reference, cells, window = _load_inputs(dataset)
    genes = list(cells.var_names[cells.var_names.isin(reference.var_names)])
    if not genes:
        raise SpotsweepError(
            f"dataset '{dataset.name}': the spatial data and the reference share no gene names; "
            "check that both use the same gene identifiers."
        )
    reference = _canonical_reference(reference, genes)
    spots = build_pseudospots(cells[:, genes], window, edge_rule=dataset.edge_rule, source=dataset.name)
    missing = sorted(set(spots.uns["pseudospots"]["cell_types"]) - set(reference.obs["cell_type"].cat.categories))
    if missing and not dataset.allow_missing_cell_types:
        raise SpotsweepError(
            f"dataset '{dataset.name}': the spatial cell types {', '.join(missing)} are absent from the "
            "reference; map the labels onto the reference's, remove those cells, or set allow_missing_cell_types."
        )
    write_atomically(layout.reference(dataset.name), lambda tmp: reference.write_h5ad(tmp))
    write_spots(spots, layout.spots(dataset.name))


def reference_model_id(task: Task) -> str | None:
    """The reference model a task needs: one per method kind, dataset and reference configuration."""
    kind = adapter(task.method).REFERENCE_KIND
    if kind is None:
        return None
    return f"{kind}-{content_hash({'dataset': task.dataset_config, 'reference': task.reference_config})}"


def ensure_reference_model(task: Task, layout: OutputLayout) -> Path | None:
    """Train the task's reference model once; callers arriving together wait on a lock and reuse it."""
    model_id = reference_model_id(task)
    if model_id is None:
        return None
    model_dir = layout.model_dir(task.dataset, model_id)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(model_dir) + ".lock"):
        if not (model_dir / "training.json").exists():
            reference = ad.read_h5ad(layout.reference(task.dataset))
            seconds: dict[str, float] = {}

            def train(tmp: Path) -> None:
                seconds["train"] = adapter(task.method).train_reference(reference, task.reference_config, tmp)
                write_json(tmp / "training.json", {"train_time_s": seconds["train"], "finished": time.time()})

            write_dir_atomically(model_dir, train)
    return model_dir


def reference_train_time(model_dir: Path | None) -> float:
    return 0.0 if model_dir is None else float(read_json(model_dir / "training.json")["train_time_s"])


def prepare(sweep_data: dict[str, Any], tasks_data: list[dict[str, Any]], out: str) -> dict[str, int]:
    """The prepare job: every dataset, then every distinct reference model the tasks need."""
    sweep = SweepConfig.model_validate(sweep_data)
    layout = OutputLayout(Path(out))
    for dataset in sweep.datasets:
        prepare_dataset(dataset, layout)
    models = {}
    for task in map(Task.from_dict, tasks_data):
        if reference_model_id(task) is not None:
            models.setdefault(reference_model_id(task), task)
    for task in models.values():
        ensure_reference_model(task, layout)
    return {"datasets": len(sweep.datasets), "reference_models": len(models)}
