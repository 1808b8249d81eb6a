"""Where everything of a sweep lives under its output folder, and how files are written safely there.

One place for the paths keeps the launcher, the tasks, the aggregator and `spotsweep status` in agreement.
Every file is written under a temporary name and renamed, so a killed process never leaves a file that
looks complete.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from toolkit.errors import SpotsweepError


@dataclass(frozen=True)
class OutputLayout:
    """The folder tree of one sweep's output."""

    root: Path

    @property
    def sweep_file(self) -> Path:
        return self.root / "sweep.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def summary(self) -> Path:
        return self.root / "summary.nc"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def progress(self, name: str) -> Path:
        """Where a running stage or task reports how far it is (`prepare`, or a task id)."""
        return self.root / "progress" / f"{name}.json"

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / "data" / dataset

    def cells(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "cells.h5ad"

    def reference(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "reference.h5ad"

    def spots(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "spots.zarr"

    def model_dir(self, dataset: str, model_id: str) -> Path:
        return self.root / "models" / dataset / model_id

    def task_dir(self, task_id: str) -> Path:
        return self.root / "tasks" / task_id

    def result(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "result.json"

    def error(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "error.json"


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def disk_space_for(path: Path) -> Iterator[None]:
    """A full disk (or quota) while writing `path` is one sentence naming it, not a traceback; the atomic
    writers below have removed what they half-wrote by then."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in FULL_DISK:
            raise
        raise SpotsweepError(
            f"{path}: no space left on its device ({os.strerror(exc.errno)}) while writing it, and nothing "
            "half-written was kept; free space there (or write elsewhere) and run the same command again."
        ) from None


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary sibling path, then rename it over `path` (atomic on POSIX)."""
    with disk_space_for(path):
        _write_atomically(path, write)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600: colleagues on a shared disk could not read results
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_dir_atomically(path: Path, write: Callable[[Path], None], *, overwrite: bool = True) -> None:
    """Like `write_atomically` for a folder (a Zarr store, a saved model): built aside with `write(tmp)`,
    then moved to `path` only once complete.

    A failed build leaves nothing behind. An existing folder is replaced only after the new one is
    finished, so a failure keeps the old one; without `overwrite` an existing one is refused instead.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SpotsweepError(f"{path}: already exists; choose another output path or pass --overwrite.")
    with disk_space_for(path):
        _write_dir_atomically(path, write)


def _write_dir_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        write(tmp)
        os.chmod(tmp, _DIR_MODE)  # mkdtemp makes 0700
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)


def write_json(path: Path, payload: Any) -> None:
    """Atomic JSON write (NaN becomes null, numpy arrays lists, paths text)."""
    options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    write_atomically(path, lambda tmp: tmp.write_bytes(orjson.dumps(payload, default=_jsonable, option=options)))


def read_json(path: Path) -> Any:
    """orjson parses task results several times faster than the standard library (aggregating 10,000).

    A file that is not JSON (truncated by a full disk, edited by hand) is a `CorruptFile` naming it.
    """
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise CorruptFile(path, str(exc)) from None


class CorruptFile(SpotsweepError):
    """A JSON file of the output folder that cannot be parsed."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: not valid JSON ({reason}); it was cut short or edited: move it aside or delete it.")
        self.path = Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


ZARR_METADATA = (".zgroup", ".zarray", "zarr.json")
"""The files at the top of a Zarr store (format 2, or 3)."""


def check_replaceable(path: Path, option: str) -> None:
    """`--overwrite` replaces a Zarr store, never another file or folder that happens to be at that path.

    `spotsweep export ... --to FOLDER --overwrite` deleted FOLDER and all it held to write its store there."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if path.is_dir() and any((path / name).is_file() for name in ZARR_METADATA):
        return
    what = "a folder that is no Zarr store" if path.is_dir() else "a file, not a Zarr store"
    raise SpotsweepError(
        f"{path}: {option} is {what}; --overwrite replaces only a store (.zgroup or zarr.json at its top), "
        f"never other files: give another {option}, or move that one aside first."
    )


def check_not_an_input(out: Path, inputs: Iterable[Path | str | None], option: str, *, may_hold: bool = False) -> None:
    """No command writes over or inside one of its own inputs: `--overwrite` replaces outputs only.

    `spotsweep build CELLS --out CELLS --overwrite` deleted its input to write the spots there. An output
    that is an input, lies inside one, or (unless `may_hold`: a folder that is written into, never
    replaced) holds one is refused in one sentence."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source:
            how = "is the input"
        elif source in target.parents:
            how = "lies inside the input"
        elif target in source.parents and not may_hold:
            how = "is a folder holding the input"
        else:
            continue
        raise SpotsweepError(
            f"{out}: {option} {how} {given}; an output never replaces or enters an input (--overwrite replaces "
            f"outputs only): give another {option}."
        )
