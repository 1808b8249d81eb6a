"""destVI through scvi-tools: a CondSCVI reference model, then DestVI on the spots.

The adapter only drives scvi-tools. It also carries the workarounds recorded in
shared/notes/scvi-tools-facts.md: `prior` must be passed to CondSCVI, the vamp prior of a normal-prior
reference must be handed over as tensors, and `get_proportions` is wrong for latent amortization.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from toolkit.methods.base import FitResult

os.environ.setdefault("TQDM_DISABLE", "1")  # pyro's sampling bars, before scvi imports it

VARIANTS: dict[str, dict[str, Any]] = {
    # As close as the installed scvi-tools gets to the model the 2022 study ran.
    "2022": {"prior_mode": "normal", "augmentation": False},
    # Whatever the installed DestVI does by default.
    "current": {},
}
REFERENCE_PRIOR = "normal"
VAMP_PRIOR_P = 15


def _quiet_scvi() -> None:
    import scvi

    scvi.settings.verbosity = logging.WARNING
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def train_reference(reference: ad.AnnData, config: dict[str, Any], model_dir: Path, accelerator: str = "auto") -> float:
    """Train CondSCVI on the reference and save it to `model_dir`; returns the training time in seconds."""
    import scvi
    from scvi.model import CondSCVI

    _quiet_scvi()
    scvi.settings.seed = config["seed"]
    reference = reference.copy()
    CondSCVI.setup_anndata(reference, labels_key="cell_type")
    model = CondSCVI(
        reference,
        n_hidden=config["n_hidden"],
        n_latent=config["n_latent"],
        n_layers=config["n_layers"],
        weight_obs=False,
        prior=REFERENCE_PRIOR,
    )
    start = time.perf_counter()
    model.train(
        max_epochs=config["max_epochs"],
        lr=config["lr"],
        batch_size=config["batch_size"],
        train_size=1,
        accelerator=accelerator,
        enable_progress_bar=False,
    )
    elapsed = time.perf_counter() - start
    model.save(str(model_dir), overwrite=True, save_anndata=False)
    return elapsed


def _load_reference(reference: ad.AnnData, model_dir: Path, accelerator: str) -> Any:
    from scvi.model import CondSCVI

    reference = reference.copy()
    model = CondSCVI.load(str(model_dir), adata=reference, accelerator=accelerator)
    vamp_prior = model.get_vamp_prior

    def vamp_prior_as_tensors(*args: Any, **kwargs: Any) -> dict:
        """scvi-tools 1.4 returns numpy arrays here and then fails to register them as buffers."""
        import torch

        return {key: torch.as_tensor(value) for key, value in vamp_prior(*args, **kwargs).items()}

    model.get_vamp_prior = vamp_prior_as_tensors
    return model


def _proportions(model: Any, amortization: str) -> pd.DataFrame:
    """Per-spot proportions as the model uses them.

    For latent/none amortization the model mixes with softmax(V) over types, but `get_proportions`
    returns softplus(V): take the softmax ourselves, drop the extra noise types and renormalise.
    """
    if amortization in ("both", "proportion"):
        return model.get_proportions()
    import torch

    weights = torch.softmax(model.module.V.detach().cpu(), dim=0).T.numpy()
    weights = weights[:, : len(model.cell_type_mapping)]
    weights = weights / weights.sum(axis=1, keepdims=True)
    return pd.DataFrame(weights, index=model.adata.obs_names, columns=list(model.cell_type_mapping))


def _history(model: Any) -> pd.DataFrame:
    """Every per-epoch training series scvi-tools logged, side by side."""
    series = {name: frame.iloc[:, 0] for name, frame in model.history.items() if name.endswith("_train")}
    history = pd.DataFrame(series)
    history.index.name = "epoch"
    return history


def fit_destvi(
    spots: ad.AnnData,
    reference: ad.AnnData,
    model_dir: Path,
    *,
    variant: str,
    amortization: str,
    batch_size: int,
    max_epochs: int,
    seed: int,
    lr: float,
    n_epochs_kl_warmup: int,
    accelerator: str = "auto",
) -> FitResult:
    """Fit DestVI on `spots` from the CondSCVI model saved in `model_dir`."""
    import scvi
    from scvi.model import DestVI

    _quiet_scvi()
    sc_model = _load_reference(reference, model_dir, accelerator)
    st = ad.AnnData(X=spots[:, reference.var_names].X.copy(), obs=pd.DataFrame(index=spots.obs_names.copy()))
    st.var_names = reference.var_names.copy()

    scvi.settings.seed = seed  # V and gamma are initialised randomly in from_rna_model
    model = DestVI.from_rna_model(
        st, sc_model, vamp_prior_p=VAMP_PRIOR_P, amortization=amortization, **VARIANTS[variant]
    )
    start = time.perf_counter()
    model.train(
        max_epochs=max_epochs,
        lr=lr,
        batch_size=batch_size,
        n_epochs_kl_warmup=n_epochs_kl_warmup,
        train_size=1.0,
        accelerator=accelerator,
        enable_progress_bar=False,
    )
    train_time = time.perf_counter() - start
    gamma = model.get_gamma(return_numpy=True)
    return FitResult(
        proportions=_proportions(model, amortization),
        history=_history(model),
        n_steps=int(model.trainer.global_step),
        train_time_s=train_time,
        states=np.asarray(gamma, dtype=np.float32),
        settings={"module": {"amortization": amortization, **VARIANTS[variant]}, "vamp_prior_p": VAMP_PRIOR_P},
    )
