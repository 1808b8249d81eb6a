"""Running jobs inside an Apptainer image: the command line submitit starts each job with.

The launcher's half of containers (any backend can use it): `python_command` (what submitit runs
instead of the host python), `job_binds` (the host paths a job needs inside), `slurm_binds` (what
`scontrol requeue` needs inside), `image_digest` (sha256 of the .sif, cached by path, size and mtime),
`image_labels` and `require_apptainer`. The job's half (which image it runs in, for provenance) is
`toolkit.provenance.container_runtime`. The image is built from containers/Apptainer.def by
hpc/apptainer/build.sh (`make image`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from toolkit.errors import SpotsweepError
from toolkit.provenance import DIGEST_ENV

INSTALL_HINT = "on a cluster `module load apptainer`; on Debian 12 run hpc/apptainer/install.sh"
_GLIBC = ("linux-vdso", "libc.so", "libm.so", "libresolv.so", "libpthread.so", "libdl.so", "librt.so", "ld-linux")


def apptainer_version() -> str | None:
    """`apptainer --version` ('1.4.5'), or None when apptainer is not on PATH or does not run."""
    if shutil.which("apptainer") is None:
        return None
    try:
        done = subprocess.run(["apptainer", "--version"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().removeprefix("apptainer version ")


def require_apptainer() -> str:
    """The apptainer version; a SpotsweepError saying how to get it when it is missing."""
    version = apptainer_version()
    if version is None:
        raise SpotsweepError(f"apptainer is not installed or does not run here; {INSTALL_HINT}.")
    return version


def python_command(image: Path | str, binds: Sequence[Path | str], *, slurm: bool = False, digest: bool = True) -> str:
    """`apptainer exec --nv --bind ... IMAGE python3 -I`: submitit appends `-u -m submitit.core._submit DIR`.

    The environment passes through (no --cleanenv): submitit and SLURM talk to the job through it.
    Each bind is `host` (same path inside) or `host:container`. `slurm` adds what `scontrol requeue`
    needs (`slurm_binds`). `-I` (isolated) keeps the current directory, PYTHONPATH and ~/.local off
    sys.path, so a source checkout or host packages cannot shadow the image's toolkit.
    `--nv` is a no-op on a machine without an NVIDIA driver.
    """
    if not Path(image).is_file():
        raise SpotsweepError(f"{image}: no such container image; build it with `make image` or fix executor.container.")
    image = Path(image).resolve()  # jobs may start elsewhere; results then name the very file
    specs = [*map(str, binds), *(slurm_binds(image) if slurm else [])]
    bind_args = [arg for spec in dict.fromkeys(specs) for arg in ("--bind", spec)]
    env_args = ["--env", f"{DIGEST_ENV}={image_digest(image)}"] if digest else []
    return shlex.join(["apptainer", "exec", "--nv", *bind_args, *env_args, str(image), "python3", "-I"])


def job_binds(results: Path, extra: Iterable[str] = (), inputs: Iterable[Path | str | None] = ()) -> list[str]:
    """The binds a job needs: the results folder (logs are inside it), the extra specs, the inputs' folders.

    A host path that does not exist is an error now rather than an apptainer failure in every job.
    """
    specs = [str(Path(results).resolve())]
    for spec in extra:
        host = spec.split(":", 1)[0]
        if not Path(host).exists():
            raise SpotsweepError(f"bind '{spec}': {host} does not exist on this machine; fix executor.binds.")
        specs.append(spec)
    specs += [str(Path(path).resolve().parent) for path in inputs if path is not None]
    for spec in specs:
        if "," in spec:  # apptainer splits --bind values at commas: the job would see other paths
            raise SpotsweepError(
                f"bind '{spec}': apptainer reads a comma as a separator between binds; rename the folder "
                "without a comma (or bind a parent folder through executor.binds)."
            )
    return list(dict.fromkeys(specs))


def slurm_binds(image: Path | str | None = None) -> list[str]:
    """Bind specs that let `scontrol` (submitit's requeue after USR2) run inside the image.

    The host's scontrol goes to /usr/local/bin (on the image's PATH), the SLURM library and plugin
    folders keep their paths (scontrol finds them by RUNPATH), and the other libraries they load
    (libmunge for the munge plugin, readline) go to their host folder under their soname, except where
    the image already has that file (checked once in `image` when given): the image's own copy is
    used, never the host's glibc. Also slurm.conf's folder ($SLURM_CONF or /etc/slurm) and munge's
    socket folder. Nothing is returned where scontrol is not installed.
    """
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return []
    specs = [f"{os.path.realpath(scontrol)}:/usr/local/bin/scontrol"]
    libraries = _shared_libraries(os.path.realpath(scontrol))
    slurm_dirs = {os.path.dirname(target) for _, target in libraries if "slurm" in os.path.basename(target)}
    for folder in sorted(slurm_dirs):
        specs.append(folder)
        for plugin in ("auth_munge.so", "cred_munge.so"):
            if os.path.exists(os.path.join(folder, plugin)):
                libraries += _shared_libraries(os.path.join(folder, plugin))
    others = {dest: target for dest, target in libraries if os.path.dirname(target) not in slurm_dirs}
    present = _present_in_image(image, list(others)) if image is not None else set()
    specs += [f"{target}:{dest}" for dest, target in others.items() if dest not in present]
    conf = os.environ.get("SLURM_CONF")
    for folder in (os.path.dirname(os.path.realpath(conf)) if conf else "/etc/slurm", "/run/munge"):
        if os.path.isdir(folder):
            specs.append(folder)
    return list(dict.fromkeys(specs))


def _shared_libraries(binary: str) -> list[tuple[str, str]]:
    """(soname path with its folder resolved, real file) of each library `binary` loads, glibc left out."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].strip().startswith("/"):
            name, path = parts[0].strip(), parts[1].split("(")[0].strip()
            if not name.startswith(_GLIBC):
                dest = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
                found.append((dest, os.path.realpath(path)))
    return found


def _present_in_image(image: Path | str, paths: list[str]) -> set[str]:
    """Which of `paths` exist inside the image (one `apptainer exec`)."""
    if not paths:
        return set()
    script = 'for f in "$@"; do [ -e "$f" ] && echo "$f"; done; true'
    try:
        done = subprocess.run(
            ["apptainer", "exec", str(image), "sh", "-c", script, "sh", *paths],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(done.stdout.split())


def _digest_cache() -> Path:
    return Path(os.environ.get("SPOTSWEEP_CACHE", Path.home() / ".cache" / "spotsweep")) / "image-digests.json"


def image_digest(image: Path | str) -> str:
    """'sha256:<hex>' of the image file; cached by path, size and mtime (hashing a 5 GB image takes a while)."""
    path = Path(image).resolve()
    stat = path.stat()
    key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    cache_file = _digest_cache()
    cache: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        cache = json.loads(cache_file.read_text())
    if key in cache:
        return cache[key]
    with open(path, "rb") as handle:
        digest = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}:")} | {key: digest}
    with contextlib.suppress(OSError):  # a read-only home only costs a recomputation next time
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(cache_file)
    return digest


def image_labels(image: Path | str) -> dict[str, str]:
    """The image's labels (`apptainer inspect`): toolkit version, source revision, pinned versions."""
    require_apptainer()
    try:
        done = subprocess.run(
            ["apptainer", "inspect", "--labels", "--json", str(image)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        reason = exc.stderr.strip()
        raise SpotsweepError(f"{image}: apptainer cannot read it ({reason}); rebuild it with `make image`.") from None
    return json.loads(done.stdout)["data"]["attributes"]["labels"]
