"""Provenance: what produced a result (versions, device, container, scheduler job), recorded with it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import socket
import sys
from typing import Any

from toolkit import container

PACKAGES = ("scvi-tools", "torch", "anndata", "numpy", "cell2location", "submitit", "xarray", "dask", "zarr")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None where not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("spotsweep", *PACKAGES):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_name() -> str:
    """The accelerator a task trains on: a CUDA device name, else 'cpu'."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def container_image() -> str | None:
    """The Apptainer/Singularity image a task runs in, or None when it runs on the host."""
    return os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")


def scheduler_job() -> dict[str, str]:
    """SLURM array/job identifiers, or submitit's local job id."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_EXECUTOR", "SUBMITIT_LOCAL_JOB_ID")
    return {key: os.environ[key] for key in keys if key in os.environ}


def peak_host_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def peak_gpu_memory_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def collect() -> dict[str, Any]:
    """Everything above, as one JSON-able mapping."""
    return {
        "versions": package_versions(),
        "device": device_name(),
        "container_image": container_image(),
        "container": container.runtime_info(),  # image path, sha256, labels; None on the host
        "host": socket.gethostname(),
        "job": scheduler_job(),
    }
