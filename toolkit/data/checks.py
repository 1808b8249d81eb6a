"""Checks of single-cell input: one sentence naming the file, the field and the fix, never a traceback.

The readers check what they load and the pseudospot builders what they sum, with the same words.
"""

from __future__ import annotations

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
