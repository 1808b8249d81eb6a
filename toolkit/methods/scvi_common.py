"""What the scvi-tools based adapters share: quiet training, seeding, the spatial AnnData they fit."""

from __future__ import annotations

import logging
import os
import warnings

import anndata as ad
import pandas as pd

os.environ.setdefault("TQDM_DISABLE", "1")  # pyro's sampling bars, before scvi imports it


os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts


def configure_scvi() -> None:
    """Before any training: logs kept to what matters, and deterministic kernels.

    Training logs go to the task's log file. With more than one CPU thread some of torch's kernels
    (backward scatters) add in whatever order the threads finish, so two runs of one task differed
    in the last bit and then drifted apart; deterministic algorithms make a task, and the fast
    engine against stock, bitwise reproducible at any thread count. `warn_only`: an op with no
    deterministic version (some CUDA ones) warns instead of failing the task.
    """
    import scvi
    import torch

    scvi.settings.verbosity = logging.WARNING
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    torch.use_deterministic_algorithms(True, warn_only=True)


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
