"""What the scvi-tools based adapters share: quiet training, seeding, the spatial AnnData they fit."""

from __future__ import annotations

import logging
import os
import warnings

import anndata as ad
import pandas as pd

os.environ.setdefault("TQDM_DISABLE", "1")  # pyro's sampling bars, before scvi imports it


def quiet_scvi() -> None:
    """Training logs go to the task's log file; keep them to what matters."""
    import scvi

    scvi.settings.verbosity = logging.WARNING
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")


def spots_for(spots: ad.AnnData, reference: ad.AnnData) -> ad.AnnData:
    """Only the counts of the reference's genes, in its order: what every reference-based model expects."""
    st = ad.AnnData(X=spots[:, reference.var_names].X.copy(), obs=pd.DataFrame(index=spots.obs_names.copy()))
    st.var_names = reference.var_names.copy()
    return st


def history(model: object) -> pd.DataFrame:
    """Every per-epoch training series scvi-tools logged, side by side."""
    series = {name: frame.iloc[:, 0] for name, frame in model.history.items() if name.endswith("_train")}
    table = pd.DataFrame(series)
    table.index.name = "epoch"
    return table
