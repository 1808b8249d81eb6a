"""The study's trials as files: OUT/tune/trials.csv and trials.nc (one row per trial: number, state, values,
settings, task ids), written after each trial ends and before each finish (the aggregate reads the trials'
states from them).

What the study found (the report's "Tuning" section, `spotsweep status`'s lines) is read from the folder by
toolkit.tuned, below the report, so that `spotsweep report OUT` draws it too; re-exported here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from toolkit.layout import OutputLayout, write_atomically
from toolkit.trial_states import trials_table
from toolkit.tuned import best_trials, count_trials, section, status_lines, trials_frame

__all__ = ["best_trials", "count_trials", "section", "status_lines", "trials_dataset", "trials_frame", "write_trials"]


def trials_dataset(frame: pd.DataFrame) -> Any:
    """The trials as an xarray Dataset along `trial` (state, values, settings, task ids)."""
    import xarray as xr

    return xr.Dataset.from_dataframe(frame.set_index("trial").astype({"state": str, "task_ids": str}))


def write_trials(layout: OutputLayout, study: Any) -> None:
    """tune/trials.csv (which the aggregate reads the trials' states from) and trials.nc."""
    frame = trials_frame(study)
    write_atomically(trials_table(layout.root), lambda tmp: frame.to_csv(tmp, index=False))
    if not frame.empty:
        dataset = trials_dataset(frame)
        write_atomically(layout.root / "tune" / "trials.nc", lambda tmp: dataset.to_netcdf(tmp, engine="h5netcdf"))
