"""Provenance: what produced a result (versions, device, container, scheduler job), recorded with it.

Everything here runs inside the job: it reads the process's own environment, never the launcher's.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import socket
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("scvi-tools", "torch", "anndata", "numpy", "cell2location", "submitit", "xarray", "dask", "zarr")
DIGEST_ENV = "SPOTSWEEP_IMAGE_SHA256"
"""Set in every containerised job by the launcher: the image file's digest, which the job cannot read itself."""
LABELS_IN_IMAGE = Path("/.singularity.d/labels.json")
IMAGE_LABELS = (
    "spotsweep.version",
    "spotsweep.revision",
    "spotsweep.inputs-sha256",
    "spotsweep.base",
    "spotsweep.torch",
    "spotsweep.scvi-tools",
    "org.label-schema.build-date",
)
"""The image labels a result keeps (the image's build recipe writes them)."""


def package_version(name: str) -> str | None:
    """An installed distribution's version (None where it is not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None where not installed)."""
    return {"python": platform.python_version(), **{name: package_version(name) for name in ("spotsweep", *PACKAGES)}}


def device_name() -> str:
    """The accelerator a task trains on: a CUDA device name, else 'cpu'. A task that trained nothing (a
    control) never imported torch and ran on the CPU: it is not imported for this question alone."""
    if "torch" not in sys.modules:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def cpu_model() -> str:
    """The processor's model name: results of one seed differ in their last digits between processors, and a
    reference model retrained on another one can differ enough to move a rare type (results/study-2022)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def container_image() -> str | None:
    """The Apptainer/Singularity image this process runs in, or None when it runs on the host."""
    return os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")


def os_release() -> str:
    """The operating system's name and version (the image's, inside a container)."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def container_runtime() -> dict[str, Any] | None:
    """The image this process runs in (None on the host): path, digest and its main labels."""
    image = container_image()
    if not image:
        return None
    labels: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        labels = json.loads(LABELS_IN_IMAGE.read_text())
    return {
        "image": image,
        "sha256": os.environ.get(DIGEST_ENV),
        "labels": {key: labels[key] for key in IMAGE_LABELS if key in labels},
        "os": os_release(),
    }


def runtime_facts() -> dict[str, Any]:
    """Where this process runs: image (None on the host), interpreter, OS and where toolkit was imported from."""
    import toolkit

    return {
        "image": container_image(),
        "python": sys.executable,
        "python_version": platform.python_version(),
        "os": os_release(),
        "toolkit": str(Path(toolkit.__file__).parent),
        "labels_in_image": LABELS_IN_IMAGE.exists(),
    }


def scheduler_job() -> dict[str, str]:
    """SLURM array/job identifiers, or submitit's local job id."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_EXECUTOR", "SUBMITIT_LOCAL_JOB_ID")
    return {key: os.environ[key] for key in keys if key in os.environ}


def peak_host_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def peak_gpu_memory_mb() -> float | None:
    if "torch" not in sys.modules:  # nothing ran on a GPU
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def collect() -> dict[str, Any]:
    """Everything above, as one JSON-able mapping."""
    return {
        "versions": package_versions(),
        "device": device_name(),
        "cpu": cpu_model(),
        "container_image": container_image(),
        "container": container_runtime(),  # image path, sha256, labels; None on the host
        "host": socket.gethostname(),
        "job": scheduler_job(),
    }
