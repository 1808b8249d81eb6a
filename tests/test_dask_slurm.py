"""Dask on the cluster: a grid built by workers that are real jobs on the local SLURM, from a cluster profile.

The profile's partition, CPUs, memory and time become `dask_jobqueue.SLURMCluster` arguments
(toolkit.backends.slurm.dask); the builder only takes the scheduler it is given (opened by
toolkit.backends.dask_scheduler). Runs in CI (CI=true:
a cluster that cannot start fails it, never skips it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.slurm_cluster import slurm_cluster  # noqa: F401
from toolkit.backends.dask_scheduler import DaskCluster
from toolkit.backends.slurm.dask import cluster_options, jobqueue_cluster
from toolkit.backends.slurm.profile import SlurmProfile, load_profile
from toolkit.data.readers import lazy_from_anndata
from toolkit.data.synthetic import simulate
from toolkit.pseudospots import build_pseudospots, read_spots
from toolkit.pseudospots.out_of_core import build_spots_store


def test_a_profile_maps_onto_slurmcluster_arguments() -> None:
    profile = SlurmProfile(
        partition="gpu",
        account="lab",
        qos="normal",
        cpus_per_task=8,
        mem_gb=32,
        prepare_time_min=90,
        setup=["module load cuda"],
        sbatch={"constraint": "a100"},
    )
    options = cluster_options(profile)
    assert options["queue"] == "gpu" and options["account"] == "lab" and options["cores"] == 8
    assert options["memory"] == "32768MiB" and options["walltime"] == "01:30:00"
    cluster = jobqueue_cluster(options)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    expected = ("#SBATCH -p gpu", "#SBATCH -A lab", "#SBATCH -t 01:30:00", "#SBATCH --qos=normal", "--constraint=a100")
    for line in expected:
        assert line in script, script
    assert "module load cuda" in script


@pytest.mark.usefixtures("slurm_cluster")
def test_a_grid_built_by_dask_workers_that_are_slurm_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # worker jobs start where they are submitted from and import the toolkit there
    _, cells = simulate("starmap-like", 2, n_spatial_cells=1500, n_reference_cells=50, n_genes=40)
    options = {
        **cluster_options(load_profile(REPO / "hpc" / "profiles" / "local.yaml")),
        "log_directory": str(tmp_path / "dask-logs"),
        "scheduler_options": {"dashboard_address": None},
    }
    lazy = lazy_from_anndata(cells, chunk_cells=300)
    with DaskCluster("slurm", 1, options).open() as scheduler:
        build_spots_store(lazy, tmp_path / "spots.zarr", 500.0, scheduler=scheduler)
    spots, expected = read_spots(tmp_path / "spots.zarr"), build_pseudospots(cells, 500.0)
    np.testing.assert_array_equal(np.asarray(spots.X), np.asarray(expected.X))
    pd.testing.assert_frame_equal(spots.obsm["cell_counts"], expected.obsm["cell_counts"])
    assert spots.uns["pseudospots"]["dask"]["scheduler"] == "slurm"
    logs = list((tmp_path / "dask-logs").glob("*.err"))
    assert logs, "no worker job wrote a log: the workers did not run as SLURM jobs"
