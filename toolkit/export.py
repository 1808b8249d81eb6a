"""`spotsweep export`: one configuration's predicted and true proportions as a SpatialData store.

The pseudospot windows become square shapes (in the data's units, at their place in the tissue) and a
table annotates them: predicted proportions in X, the truth in obsm['true_proportions'], the grid in obs.
`spatialdata.read_zarr` opens it, and napari-spatialdata or spatialdata-plot show it over the tissue.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from toolkit.data.spatialdata import require_spatialdata
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout, read_json, write_dir_atomically
from toolkit.pseudospots import read_spots
from toolkit.status import load_tasks

REGION = "windows"


def _find_task(layout: OutputLayout, task_id: str) -> str:
    """The one task id that `task_id` names (its full id or an unambiguous start of it)."""
    ids = [task.id for task in load_tasks(layout)]
    matches = [i for i in ids if i == task_id] or [i for i in ids if i.startswith(task_id)]
    if len(matches) != 1:
        hint = "none does" if not matches else f"{len(matches)} do ({', '.join(matches[:3])}, ...)"
        raise SpotsweepError(
            f"{layout.root}: task '{task_id}' must name one task of the sweep, but {hint}; "
            "see `spotsweep status` for the ids."
        )
    return matches[0]


def _trajectory(trajectory: dict | None) -> dict:
    """The task's accuracy trajectory as arrays (uns['spotsweep']['trajectory']: step, epoch, each metric as
    points x cell types, each mean as points), or nothing where the task recorded none."""
    if not trajectory or not trajectory.get("points"):
        return {}
    points = trajectory["points"]
    values = np.asarray([point["per_cell_type"] for point in points], dtype=float)  # point x type x metric
    arrays = {
        "step": np.asarray([point["step"] for point in points], dtype=np.int64),
        "epoch": np.asarray([point["epoch"] for point in points], dtype=float),
        "cell_types": np.asarray(trajectory["cell_types"], dtype=str),
        **{metric: values[:, :, i] for i, metric in enumerate(trajectory["metrics"])},
        **{
            f"mean_{key}": np.asarray([np.nan if p["means"][key] is None else p["means"][key] for p in points])
            for key in points[0]["means"]
        },
    }
    return {"trajectory": arrays}


def export_task(root: Path, task_id: str, out: Path, *, overwrite: bool = False) -> Path:
    """Write task `task_id` of the sweep in `root` as a SpatialData store at `out`."""
    spatialdata = require_spatialdata()
    import geopandas as gpd
    from shapely.geometry import box
    from spatialdata.models import ShapesModel, TableModel

    layout = OutputLayout(Path(root))
    task_id = _find_task(layout, task_id)
    if not layout.result(task_id).exists():
        raise SpotsweepError(f"{layout.root}: task {task_id} has no result (not done); export a task that is done.")
    result = read_json(layout.result(task_id))
    dataset = result["task"]["dataset"]
    spots = read_spots(layout.spots(dataset))
    built = spots.uns["pseudospots"]
    window = float(built["window"])
    predicted = pd.DataFrame(
        np.asarray(result["proportions"]["values"], dtype=float),
        index=result["proportions"]["index"],
        columns=result["proportions"]["columns"],
    ).reindex(spots.obs_names)
    truth = spots.obsm["proportions"].reindex(columns=predicted.columns, fill_value=0.0)
    half = window / 2
    centres = spots.obs[["center_x", "center_y"]].to_numpy(dtype=float)
    shapes = gpd.GeoDataFrame(
        {"spot": spots.obs_names.to_numpy()},
        geometry=[box(x - half, y - half, x + half, y + half) for x, y in centres],
        index=pd.Index(spots.obs_names.to_numpy(), name="spot"),
    )
    obs = spots.obs[["grid_x", "grid_y", "n_cells"]].copy()
    obs["region"] = pd.Categorical([REGION] * spots.n_obs)
    obs["spot"] = spots.obs_names.to_numpy()
    table = ad.AnnData(
        X=predicted.to_numpy(dtype=np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(predicted.columns, dtype=str)),
        obsm={"true_proportions": truth.to_numpy(dtype=np.float32), "spatial": centres},
        uns={
            "spotsweep": {
                "task_id": task_id,
                "settings": result["settings"],
                "window": window,
                **_trajectory(result.get("trajectory")),
            }
        },
    )
    sdata = spatialdata.SpatialData(
        shapes={REGION: ShapesModel.parse(shapes)},
        tables={"proportions": TableModel.parse(table, region=REGION, region_key="region", instance_key="spot")},
    )
    out = Path(out)

    def write(tmp: Path) -> None:
        tmp.rmdir()  # spatialdata writes a new folder, and refuses to reuse an empty one
        sdata.write(tmp)

    write_dir_atomically(out, write, overwrite=overwrite)
    return out
