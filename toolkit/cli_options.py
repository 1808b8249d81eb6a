"""Command-line options that `spotsweep run` and `spotsweep tune` share, written once: the two commands take
a sweep's tasks to the same places, so the same words must say where."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Out = Annotated[Optional[Path], typer.Option(help="Output folder (default: the sweep file's 'output').")]
Executor = Annotated[Optional[str], typer.Option(help="local or slurm (default: the sweep file's).")]
Profile = Annotated[Optional[Path], typer.Option(help="SLURM cluster profile, e.g. hpc/profiles/gpu-cluster.yaml.")]
Container = Annotated[Optional[Path], typer.Option(help="Run every job inside this Apptainer image (.sif).")]
