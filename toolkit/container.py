"""Running jobs inside an Apptainer image: the interpreter command submitit starts each job with."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from toolkit.errors import SpotsweepError


def python_command(image: Path, binds: Sequence[Path | str]) -> str:
    """`apptainer exec --nv --bind ... IMAGE python3`: submitit appends `-u -m submitit.core._submit DIR`.

    The environment passes through (no --cleanenv): submitit and SLURM talk to the job through it.
    Each bind is `host` (same path inside) or `host:container`.
    """
    if not Path(image).is_file():
        raise SpotsweepError(f"{image}: no such container image; build it with `make image` or fix executor.container.")
    bind_args = [arg for spec in binds for arg in ("--bind", str(spec))]
    return shlex.join(["apptainer", "exec", "--nv", *bind_args, str(image), "python3"])
