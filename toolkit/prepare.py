"""The prepare stage: inputs -> pseudospots and reference AnnData on disk -> trained reference models.

It runs once per sweep before the tasks (as its own job), so that many tasks starting together find
their inputs ready. Every grid is built by the out-of-core Dask builder (toolkit.pseudospots.out_of_core)
on the scheduler it is given, whatever the source: a simulated tissue, files of any size, an `atlas`
written chunk by chunk; a `spots:` store from `spotsweep build` is taken as it is (subset, shared genes).
Each product is written atomically and reused when present; the reference model is keyed by a hash of
everything it depends on and guarded by a file lock, so concurrent callers train it once.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anndata as ad
import numpy as np
from filelock import FileLock

from toolkit.config import DatasetConfig, InputConfig, SweepConfig, check_spot_store
from toolkit.data.readers import LazyCells
from toolkit.errors import SpotsweepError
from toolkit.freshness import current_inputs, prepared_is_current, record_file, write_record
from toolkit.layout import OutputLayout, read_json, write_atomically, write_dir_atomically, write_json
from toolkit.methods import adapter
from toolkit.pseudospots import read_spots, write_spots
from toolkit.pseudospots.scheduler import Scheduler
from toolkit.sweep import Task, content_hash

Say = Callable[[str], None]
"""Where prepare reports its stages (a progress line for the launcher; silent by default)."""


def _silent(message: str) -> None:
    """The default `say`."""


class DaskSource(Protocol):
    """Where the grids are computed, as the backend gives it (backends.dask_scheduler.DaskCluster): opened
    only around a grid that is built, so that a prepared sweep starts no cluster."""

    kind: str

    def open(self) -> AbstractContextManager[Scheduler]: ...


@dataclass(frozen=True)
class _Threads:
    """The default without a backend's: threads in this process."""

    n_workers: int | None = None
    kind: str = "threads"

    def open(self) -> AbstractContextManager[Scheduler]:
        return nullcontext(Scheduler("threads", self.n_workers))


def _read(given: InputConfig) -> ad.AnnData:
    """Any supported layout into the canonical AnnData (obs['cell_type'], obsm['spatial'])."""
    from toolkit.data.readers import read_cells

    return read_cells(given.path, given.read_options())


def _open(given: InputConfig) -> LazyCells:
    """The spatial cells as Dask arrays: AnnData stores stay on disk, other layouts are read first."""
    from toolkit.data.readers import open_cells

    return open_cells(given.path, given.read_options())


def _simulated_inputs(dataset: DatasetConfig, layout: OutputLayout, say: Say) -> tuple[ad.AnnData, LazyCells, float]:
    """(reference, cells, window) of a synthetic tissue; an atlas is written chunk by chunk first."""
    from toolkit.data.readers import lazy_from_anndata, open_cells
    from toolkit.data.synthetic import PRESETS, simulate

    sim = dataset.simulate
    assert sim is not None
    if sim.preset == "atlas":
        from toolkit.data.atlas import BASE_PRESET, write_atlas

        store = layout.dataset_dir(dataset.name) / "cells.zarr"
        if not store.exists():
            say(f"{dataset.name}: writing the atlas tissue chunk by chunk")
            write_atlas(store, sim.n_spatial_cells, sim.seed, n_genes=sim.n_genes)
        say(f"{dataset.name}: simulating the {BASE_PRESET} reference")
        reference, _ = simulate(
            BASE_PRESET, sim.seed, n_spatial_cells=1000, n_reference_cells=sim.n_reference_cells, n_genes=sim.n_genes
        )
        return reference, open_cells(store), dataset.window or PRESETS[BASE_PRESET].window
    say(f"{dataset.name}: simulating the {sim.preset} tissue and its reference")
    reference, cells = simulate(
        sim.preset,
        sim.seed,
        n_spatial_cells=sim.n_spatial_cells,
        n_reference_cells=sim.n_reference_cells,
        n_genes=sim.n_genes,
    )
    return reference, lazy_from_anndata(cells, source=dataset.name), dataset.window or PRESETS[sim.preset].window


def _canonical_reference(reference: ad.AnnData, genes: list[str]) -> ad.AnnData:
    """Shared genes only, labels only: the form every reference model trains on."""
    reference = reference[:, genes].copy()
    reference.obs = reference.obs[["cell_type"]].copy()
    reference.obs["cell_type"] = reference.obs["cell_type"].astype("category").cat.remove_unused_categories()
    return reference


def _shared_genes(dataset: DatasetConfig, spatial_genes: Any, reference: ad.AnnData) -> list[str]:
    genes = [str(gene) for gene in spatial_genes if gene in set(reference.var_names)]
    if not genes:
        raise SpotsweepError(
            f"dataset '{dataset.name}': the spatial data and the reference share no gene names; "
            "check that both use the same gene identifiers."
        )
    return genes


def _shifted(
    dataset: DatasetConfig, reference: ad.AnnData, spatial_genes: Any, layout: OutputLayout, say: Say
) -> ad.AnnData:
    """The reference as another technology would have measured it, where the dataset asks for it
    (`reference_shift`); what changed, the genes removed among them, goes to data/<dataset>/reference_shift.json."""
    shift = dataset.reference_shift
    if shift is None:
        return reference
    from toolkit.data.shift import shift_reference

    spatial = {str(gene) for gene in spatial_genes}
    shared = [str(gene) for gene in reference.var_names if gene in spatial]
    say(f"{dataset.name}: shifting the reference (capture sd {shift.capture_sd:g}, {shift.missing_genes:g} missing)")
    try:
        shifted, report = shift_reference(
            reference, shift.capture_sd, shift.missing_genes, shift.seed, candidates=shared
        )
    except ValueError as exc:
        raise SpotsweepError(
            f"dataset '{dataset.name}': reference_shift: {exc} (of the {len(shared)} genes the spots share)."
        ) from None
    write_json(shift_report_file(layout, dataset.name), report.to_json())
    return shifted


def shift_report_file(layout: OutputLayout, dataset: str) -> Path:
    """Where prepare says how it shifted a dataset's reference (toolkit/data/shift.py's report)."""
    return layout.dataset_dir(dataset) / "reference_shift.json"


def _check_types(dataset: DatasetConfig, spot_types: list[str], reference: ad.AnnData) -> None:
    missing = sorted(set(spot_types) - set(reference.obs["cell_type"].cat.categories))
    if missing and not dataset.allow_missing_cell_types:
        raise SpotsweepError(
            f"dataset '{dataset.name}': the spatial cell types {', '.join(missing)} are absent from the "
            "reference; map the labels onto the reference's, remove those cells, or set allow_missing_cell_types."
        )


def _spots_from_store(
    dataset: DatasetConfig, reference: ad.AnnData, layout: OutputLayout, say: Say
) -> tuple[ad.AnnData, list, list]:
    """A store of `spotsweep build`, cut to the subset and to the genes shared with the reference:
    (the reference, shifted where asked; the store's cell types; the genes kept)."""
    assert dataset.spots is not None
    check_spot_store(dataset.spots, f"dataset '{dataset.name}' spots")  # again: the job may run long after
    spots = read_spots(dataset.spots)
    built = dict(spots.uns["pseudospots"])
    reference = _shifted(dataset, reference, spots.var_names, layout, say)
    genes = _shared_genes(dataset, spots.var_names, reference)
    keep = np.ones(spots.n_obs, dtype=bool)
    if dataset.subset is not None:
        subset = dataset.subset.grid_subset()
        grid = spots.obs[["grid_x", "grid_y"]].to_numpy()
        keep = subset.keeps(grid, float(built["window"]), tuple(built.get("origin", (0.0, 0.0))))
        if not keep.any():
            raise SpotsweepError(
                f"{dataset.spots}: the subset {subset.describe()} contains no spots of this store; choose grid "
                "columns, rows or a box that its spots cover (datasets[].subset)."
            )
    spots = spots[keep, genes].copy()
    spots.uns["pseudospots"] = {
        **built,
        "store": str(dataset.spots),
        "store_subset": {} if dataset.subset is None else dataset.subset.grid_subset().describe(),
        "n_spots": int(spots.n_obs),
        "n_genes": len(genes),
    }
    write_spots(spots, layout.spots(dataset.name))
    return reference, [str(name) for name in built["cell_types"]], genes


def _spots_from_cells(
    dataset: DatasetConfig, layout: OutputLayout, dask: DaskSource, memory_mib: int, say: Say
) -> tuple[ad.AnnData, list, list]:
    """Cells (simulated or read) summed by the out-of-core builder: (reference, cell types, genes kept)."""
    from toolkit.pseudospots.out_of_core import build_spots_store

    if dataset.simulate is not None:
        reference, cells, window = _simulated_inputs(dataset, layout, say)
    else:
        assert dataset.spatial is not None and dataset.reference is not None and dataset.window is not None
        say(f"{dataset.name}: reading the reference and opening the cells")
        reference, cells, window = _read(dataset.reference), _open(dataset.spatial), float(dataset.window)
    reference = _shifted(dataset, reference, cells.genes, layout, say)
    genes = _shared_genes(dataset, cells.genes, reference)
    say(f"{dataset.name}: building the grid of {cells.n_cells:,} cells at window {window:g} (Dask, {dask.kind})")
    with dask.open() as scheduler:
        build_spots_store(
            cells,
            layout.spots(dataset.name),
            window,
            edge_rule=dataset.edge_rule,
            genes=genes,
            subset=None if dataset.subset is None else dataset.subset.grid_subset(),
            overwrite=True,
            scheduler=scheduler,
            memory_budget=memory_mib << 20,
        )
    return reference, list(cells.cell_types), genes


def prepare_dataset(
    dataset: DatasetConfig,
    layout: OutputLayout,
    dask: DaskSource | None = None,
    *,
    memory_mib: int = 1024,
    say: Say = _silent,
) -> None:
    """Write the pseudospots and the reference (shared genes) of one dataset, unless already there from the
    same inputs and settings: a copy whose source changed is rebuilt (toolkit.freshness), so that a fixed
    input is read again, and its fingerprints are recorded beside it."""
    inputs = current_inputs(dataset)  # before reading: a change while reading shows on the next run
    products = (layout.spots(dataset.name), layout.reference(dataset.name))
    if all(path.exists() for path in products) and prepared_is_current(layout, dataset, inputs):
        return
    record_file(layout, dataset.name).unlink(missing_ok=True)
    shift_report_file(layout, dataset.name).unlink(missing_ok=True)  # of other settings, if any
    if dataset.simulate is not None and dataset.simulate.preset == "atlas":
        shutil.rmtree(layout.dataset_dir(dataset.name) / "cells.zarr", ignore_errors=True)  # of other settings
    if dataset.spots is not None:
        assert dataset.reference is not None
        say(f"{dataset.name}: reading the reference and the spot store {dataset.spots}")
        reference = _read(dataset.reference)
        reference, spot_types, genes = _spots_from_store(dataset, reference, layout, say)
    else:
        reference, spot_types, genes = _spots_from_cells(dataset, layout, dask or _Threads(), memory_mib, say)
    reference = _canonical_reference(reference, genes)
    _check_types(dataset, spot_types, reference)
    write_atomically(layout.reference(dataset.name), lambda tmp: reference.write_h5ad(tmp))
    write_record(layout, dataset, inputs)


def reference_model_id(task: Task) -> str | None:
    """The reference model a task needs: one per method kind, dataset and reference configuration."""
    kind = adapter(task.method).REFERENCE_KIND
    if kind is None:
        return None
    return f"{kind}-{content_hash({'dataset': task.dataset_config, 'reference': task.reference_config})}"


def ensure_reference_model(task: Task, layout: OutputLayout, say: Say = _silent) -> Path | None:
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
            epochs = (task.reference_config or {}).get("max_epochs")
            say(f"{task.dataset}: training the {model_id.split('-')[0]} reference model ({epochs} epochs)")

            def train(tmp: Path) -> None:
                seconds["train"] = adapter(task.method).train_reference(reference, task.reference_config, tmp)
                write_json(tmp / "training.json", {"train_time_s": seconds["train"], "finished": time.time()})

            write_dir_atomically(model_dir, train)
    return model_dir


def reference_train_time(model_dir: Path | None) -> float:
    return 0.0 if model_dir is None else float(read_json(model_dir / "training.json")["train_time_s"])


def prepare(
    sweep_data: dict[str, Any],
    tasks_data: list[dict[str, Any]],
    out: str,
    dask: DaskSource | None = None,
) -> dict[str, int]:
    """The prepare job: every dataset, then every distinct reference model the tasks need.

    The grids are built on the Dask scheduler the backend gives for the sweep's `prepare:` block (threads
    here without one). Each stage is written to OUT/progress/prepare.json for the launcher to show.
    """
    sweep = SweepConfig.model_validate(sweep_data)
    layout = OutputLayout(Path(out))
    say, dask = stage_reporter(layout), dask or _Threads(sweep.prepare.workers)
    for dataset in sweep.datasets:
        prepare_dataset(dataset, layout, dask, memory_mib=sweep.prepare.memory_mib, say=say)
    models = {}
    for task in map(Task.from_dict, tasks_data):
        if reference_model_id(task) is not None:
            models.setdefault(reference_model_id(task), task)
    for task in models.values():
        ensure_reference_model(task, layout, say)
    say("prepared")
    return {"datasets": len(sweep.datasets), "reference_models": len(models)}


def stage_reporter(layout: OutputLayout) -> Say:
    """`say` that writes the current stage to OUT/progress/prepare.json (the launcher polls it)."""

    def say(message: str) -> None:
        write_json(layout.progress("prepare"), {"stage": message, "time": time.time()})

    return say
