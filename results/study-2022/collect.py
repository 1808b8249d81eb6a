"""Turn a finished (or partly finished) study run into what is committed: a slim summary.nc and its report.

    .venv/bin/python results/study-2022/collect.py results/study-2022/starmap-57 [...]

For each experiment folder (the output of `spotsweep run sweeps/<experiment>.yaml`): aggregate every
task (done or not), then keep what the findings and figures need: every metric per cell type, runtimes,
statuses, the true proportions and the predicted proportions of the first seed (the one the maps show);
the per-spot metric arrays and the other seeds' proportions are dropped and the file is compressed, so
the repository stays light. Then `spotsweep report` draws the figures from that file alone, and the
sweep file (sweeps/<experiment>.yaml, run from the repository root) is copied beside them as sweep.yaml.
The last checkpoint of every task still training is copied to checkpoints/<task id>/ (committed, a few MiB),
so that on the next machine restore.py puts it back and the task resumes there instead of starting over.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import xarray as xr
from restore import CARRIED  # restore.py, beside this file

from toolkit.aggregate import write_summary
from toolkit.backends.checkpointed import checkpoint_dir
from toolkit.layout import OutputLayout, write_atomically, write_dir_atomically
from toolkit.report import write_report


def slim(dataset: xr.Dataset) -> xr.Dataset:
    """Drop per-spot metrics; keep the proportions of the first seed only."""
    dataset = dataset.drop_vars([name for name in dataset.data_vars if str(name).endswith("_spot")])
    first = dataset.seed.values[0]
    dataset["proportion"] = dataset["proportion"].where(dataset.seed == first)
    dataset.attrs["slimmed"] = (
        "per-spot metrics dropped; proportions of the first seed only (results/study-2022/collect.py)"
    )
    return dataset


def carry_checkpoints(folder: Path) -> list[str]:
    """Copy each unfinished task's checkpoint into folder/checkpoints/<task id>/ and drop those of finished
    tasks; returns the ids carried. A task with no checkpoint here keeps the one carried before (it has
    not started on this machine yet)."""
    layout = OutputLayout(folder)
    carried = folder / CARRIED
    for task_dir in sorted(carried.glob("[!.]*/")):  # not a copy being made
        if layout.result(task_dir.name).exists():
            shutil.rmtree(task_dir)
    for source in sorted(layout.root.glob("tasks/*/")):
        saved = checkpoint_dir(layout, source.name)
        if layout.result(source.name).exists() or not [path for path in saved.glob("*") if not _partial(path)]:
            continue
        write_dir_atomically(carried / source.name, lambda tmp, saved=saved: _copy_saved(saved, tmp))
    return sorted(path.name for path in carried.glob("[!.]*/"))


def _partial(path: Path) -> bool:
    """A checkpoint being written is a hidden temporary file (resume.save): never carried."""
    return path.name.startswith(".")


def _copy_saved(saved: Path, target: Path) -> None:
    for path in saved.iterdir():
        if path.is_file() and not _partial(path):
            shutil.copy2(path, target / path.name)


def collect(folder: Path) -> None:
    layout = OutputLayout(folder)
    summary = slim(write_summary(folder))
    encoding = {
        name: {"zlib": True, "complevel": 6}
        for name in summary.data_vars
        if np.issubdtype(summary[name].dtype, np.floating)
    }
    # the maps' proportions fill a few of the grid's many (method x ... x seed) slots; the rest are NaN, which
    # zlib packs no tighter than 1:1,000, so half the bytes per value halve what the empty slots cost
    encoding["proportion"]["dtype"] = "float32"
    write_atomically(layout.summary, lambda tmp: summary.to_netcdf(tmp, engine="h5netcdf", encoding=encoding))
    shutil.rmtree(layout.summary.with_suffix(".zarr"), ignore_errors=True)  # the full copy: not committed
    sweep_file = Path("sweeps") / f"{folder.name}.yaml"
    if sweep_file.exists():  # the sweep file beside its results, as committed
        shutil.copyfile(sweep_file, folder / "sweep.yaml")
    write_report(folder)
    carried = carry_checkpoints(folder)
    print(f"{folder}: {layout.summary.stat().st_size / 2**20:.1f} MiB summary, report in {layout.report}")
    if carried:
        print(f"{folder}: checkpoints of {len(carried)} unfinished task(s) carried in {folder / CARRIED}")


if __name__ == "__main__":
    for argument in sys.argv[1:] or ["results/study-2022/starmap-57"]:
        collect(Path(argument))
