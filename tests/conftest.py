"""Shared fixtures: paths to ../shared and a tiny but real sweep (real training, real processes)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

# Idle OpenMP threads sleep rather than spin. The suite runs more torch processes than the machine has
# cores (xdist workers, their task processes, SLURM jobs on a node that declares more CPUs than it has), and
# spinning threads then burn the cores the others wait for: three toy GPU-check runs side by side on 2
# cores took 470 s spinning, 213 s passive. Set before any test imports torch; task processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]

# Seconds each slow file took in a full CI run (the mean of two fresh-clone runs of `.ci/run` on 2026-12-02,
# pytest --durations summed per file, the first with the image build in test_container: 436 s against 271 s).
# xdist (`--no-loadscope-reorder`, Makefile) hands whole files to its workers in collection order, and by
# default it would put the files with the most tests first: the one-test SLURM files, the longest, came
# last and formed a tail of about 6 minutes on one worker. Longest first, the rest after in their order.
# The SLURM time-limit files wait on two-minute limits, so on a faster machine they rank higher.
# A stale figure only costs balance, never correctness.
SLOWEST_FILES = {
    "test_container.py": 354,
    # measured alone, not in CI: --durations summed, 228 s (244 s wall), nice 10, load average 8.5 -> 6.2
    # from other work on the 2 cores, as root (its full-disk test runs), 2026-12-07
    "test_integrity.py": 228,
    "test_slurm_max_timeouts.py": 184,
    "test_slurm.py": 136,
    # measured alone beside a study run on the 2 cores, 2026-12-07 (load average ~4): --durations summed,
    # test_tune.py 349 s (the grid 51 s, then 9 tests), test_tune_slurm.py 89 s (93 s wall)
    "test_tune.py": 349,
    "test_tune_slurm.py": 93,
    "test_local_resume.py": 133,
    "test_slurm_time_limit.py": 125,
    "test_gpu_check.py": 121,
    "test_study_sweeps.py": 102,
    "test_slurm_pack.py": 98,
    "test_readme_quickstart.py": 95,
    "test_readme_cluster.py": 92,
    "test_faults.py": 85,
    "test_study_findings.py": 83,
    "test_trajectory.py": 80,  # measured 81 s beside a 2-task study run, without the compile test
    "test_report_html.py": 60,  # the sweep-report test trains two tiny tasks (131 s beside a study run)
    "test_slurm_node_failure.py": 81,
    "test_fast_engine.py": 76,
    "test_local_time_limit.py": 43,
    "test_sweep_local.py": 43,
    "test_slurm_memory.py": 42,
    "test_methods.py": 29,
    "test_slurm_limits.py": 28,
    "test_pack.py": 18,
    "test_checkpoint.py": 16,
    "test_cuda_graphs.py": 16,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (a stable sort: each file's tests keep their order)."""
    items.sort(key=lambda item: -SLOWEST_FILES.get(item.path.name, 0))


SHARED = REPO.parent / "shared"
STARMAP = SHARED / "data" / "starmap"

TINY_SWEEP: dict[str, Any] = {
    "name": "tiny",
    "output": "unused",
    "datasets": [
        {
            "name": "tiny-tissue",
            "simulate": {
                "preset": "starmap-like",
                "seed": 1,
                "n_spatial_cells": 500,
                "n_reference_cells": 600,
                "n_genes": 60,
            },
        }
    ],
    "methods": [
        {
            "name": "destvi",
            "reference": {"max_epochs": 3, "batch_size": 128, "n_hidden": 16, "n_latent": 3, "n_layers": 1},
            "variant": "2022",
            "amortization": ["both", "latent"],
            "batch_size": [8, 64],
            "max_epochs": 3,
            "n_epochs_kl_warmup": 1,
            "seed": 0,
        }
    ],
    "executor": {"kind": "local", "max_parallel": 2, "timeout_min": 20},
}


@pytest.fixture
def tiny_sweep_data() -> dict[str, Any]:
    """A fresh copy of the tiny sweep mapping, free to modify."""
    return copy.deepcopy(TINY_SWEEP)


@pytest.fixture(scope="module")
def tiny() -> dict:
    """A CondSCVI reference (2 epochs) and 66 spots of a small synthetic tissue (the fast-engine tests)."""
    import logging

    import anndata as ad
    import pandas as pd
    import scvi
    import torch
    from scvi.model import CondSCVI

    from toolkit.data.synthetic import simulate
    from toolkit.pseudospots import build_pseudospots

    scvi.settings.verbosity = logging.WARNING
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    reference, cells = simulate("starmap-like", 1, n_spatial_cells=500, n_reference_cells=600, n_genes=60)
    spots = build_pseudospots(cells, 750.0)
    reference = reference.copy()
    CondSCVI.setup_anndata(reference, labels_key="cell_type")
    scvi.settings.seed = 0
    sc_model = CondSCVI(reference, n_hidden=16, n_latent=3, n_layers=1, weight_obs=False, prior="normal")
    sc_model.train(max_epochs=2, batch_size=128, train_size=1, accelerator="cpu", enable_progress_bar=False)
    # Computed once (k-means with 30 restarts per type is most of a DestVI construction) and handed
    # over as tensors (scvi-tools 1.4 fails to register its numpy arrays as buffers).
    vamp = {key: torch.as_tensor(v) for key, v in sc_model.get_vamp_prior(reference, p=5).items()}
    sc_model.get_vamp_prior = lambda *a, **k: {key: v.clone() for key, v in vamp.items()}
    st = ad.AnnData(X=spots[:, reference.var_names].X.copy(), obs=pd.DataFrame(index=spots.obs_names.copy()))
    st.var_names = reference.var_names.copy()
    return {"reference": reference, "sc_model": sc_model, "st": st, "spots": spots}
