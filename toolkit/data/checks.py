"""Checks of single-cell input: one sentence naming the file, the field and the fix, never a traceback.

The readers check what they load and the pseudospot builders what they sum, with the same words.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from toolkit.errors import SpotsweepError


def check_coordinates(xy: np.ndarray, source: str, field: str) -> None:
    bad = ~np.isfinite(np.asarray(xy, dtype=float)).all(axis=1)
    if bad.any():
        raise SpotsweepError(
            f"{source}: {field} has missing (NaN) or infinite coordinates for {int(bad.sum())} cells; "
            "drop those cells or fill in their coordinates."
        )


def check_counts(counts: np.ndarray | sp.spmatrix, source: str, field: str, allow_non_integer: bool) -> None:
    """Raw counts: finite, non-negative and whole, unless the user says the data are not counts.

    Negative values are refused even then: every deconvolution model expects non-negative expression.
    """
    values = counts.data if sp.issparse(counts) else np.asarray(counts)
    if values.dtype.kind in "ub" or values.size == 0:
        return
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise SpotsweepError(f"{source}: {field} has missing (NaN) or infinite values; fill or drop those cells.")
    if (values < 0).any():
        raise SpotsweepError(
            f"{source}: {field} has negative values (min {values.min():g}); give the raw counts "
            "(such as --layer counts) since pseudospots sum raw counts."
        )
    if values.dtype.kind == "f" and not allow_non_integer:
        fractional = values != np.rint(values)
        if fractional.any():
            raise SpotsweepError(
                f"{source}: {field} has non-integer values (such as {values[fractional][0]:g}); give the raw counts "
                "(such as --layer counts), or pass --allow-non-integer (allow_non_integer=True) if they are not counts."
            )


def check_labels(codes: np.ndarray, source: str, field: str) -> None:
    missing = int((np.asarray(codes) < 0).sum())
    if missing:
        raise SpotsweepError(
            f"{source}: {field} has no cell type for {missing} cells; label them or drop them before building."
        )


_CHUNK_KEY = re.compile(r"\d+([./]\d+)*")
_ARRAY_METADATA = frozenset({".zarray", "zarr.json"})


def check_zarr_store(path: Path, source: str, required: tuple[str, ...] = ()) -> None:
    """A Zarr store that is complete: every array's metadata and every chunk its shape calls for.

    A missing chunk reads as the fill value (zeros: a spot store then trains on nothing and ends "done"),
    and a folder of chunks without its metadata is no array at all. The check lists keys and never
    reads a chunk, so it costs a directory listing. `required` names elements that must be arrays or
    groups (X, obs, ...). Stores spotsweep writes keep their empty chunks (`write_all_chunks`), so a key
    missing there is a loss.
    """
    import zarr

    root = Path(path)
    if (root / ".zgroup").exists():  # format 2: a folder of chunk files names its array in .zarray
        for folder, _, files in os.walk(root):
            if any(_CHUNK_KEY.fullmatch(name) for name in files) and not _ARRAY_METADATA & set(files):
                where = Path(folder).relative_to(root).as_posix()
                raise SpotsweepError(
                    f"{source}: {root} has chunks in {where} but no array metadata (.zarray) there, so that "
                    "array cannot be read; the store was cut short: copy or build it again."
                )
    try:
        group = zarr.open_group(str(root), mode="r")
        members = dict(group.members(max_depth=None))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpotsweepError(f"{source}: {root} is no readable Zarr store ({exc}); copy or build it again.") from None
    missing = [name for name in required if name not in members]
    if missing:
        raise SpotsweepError(
            f"{source}: {root} has no '{missing[0]}' (array metadata missing), so it is no complete AnnData store; "
            "copy or build it again."
        )
    for name, member in sorted(members.items()):
        expected, present = getattr(member, "nchunks", None), getattr(member, "nchunks_initialized", None)
        if expected and present is not None and present < expected and member.size:
            raise SpotsweepError(
                f"{source}: {root} misses {expected - present} of the {expected} chunks of its array '{name}', "
                "which would read as zeros; copy or build the store again."
            )


@contextmanager
def write_all_chunks() -> Iterator[None]:
    """Zarr 3 skips writing a chunk that holds only the fill value; inside this, every chunk is written, so
    a missing chunk always means a damaged store (check_zarr_store)."""
    import zarr

    with zarr.config.set({"array.write_empty_chunks": True}):
        yield


def check_unique_genes(genes: object, source: str, field: str = "gene names") -> None:
    """Gene names given twice make every later join by name ambiguous (pandas fails deep inside prepare, or
    picks one): refuse them where the file is read, naming a few."""
    import pandas as pd

    names = pd.Index([str(name) for name in genes])  # type: ignore[attr-defined]
    repeated = names[names.duplicated()].unique()
    if len(repeated):
        shown = ", ".join(repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        raise SpotsweepError(
            f"{source}: {len(repeated)} {field} repeat ({shown}); make them unique (anndata's "
            "var_names_make_unique(), or sum the duplicates) or drop the repeats."
        )
