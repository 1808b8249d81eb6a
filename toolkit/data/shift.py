"""A reference that differs from the spots as another technology's would: per-gene capture, genes missing.

The 2022 study deconvolved STARmap spots with scRNA-seq from another lab (Allen VISp); a reference of the
same technology (STARmap slice 2 for slice 1) hides the per-gene differences destVI is built to absorb
(its per-gene factor on the spots). This transform puts them back, seeded, and says what it did.

The model, in that order:

1. **Capture.** Gene g gets a factor f_g = exp(sd * z_g), z_g ~ N(0, 1) in the reference's gene order,
   reported divided by the median factor (the typical gene keeps its share). Each cell's counts are
   drawn again at the cell's own library size n_c: multinomial(n_c, p_cg proportional to x_cg * f_g). A
   cell's depth is unchanged (CondSCVI reads it as observed) and a zero stays zero; which genes the counts
   fall on moves by the factors, and only their ratios matter (a common scale cancels in p). The redraw
   adds counting noise of its own (about Poisson in each gene), which `capture_sd: 0` measures alone:
   every count drawn again, no factor.
2. **Missing genes.** A fraction of the genes (among `candidates`: the genes the spots also measure) is
   removed, as genes that the other technology does not measure; every method then sees only the genes
   left (the spots lose them too, where the shared genes are taken).

One seed gives three independent streams (factors, redraw, missing genes), so the same seed at another sd
scales the same factors (sd 1.0 is sd 0.5 doubled on the log scale) and removes the same genes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

MODEL = "multinomial redraw of each cell's counts at its own library size, p proportional to counts x capture factor"
CHUNK_CELLS = 4096
"""Cells densified at once while redrawing (a 20,000-cell reference never needs its dense copy whole)."""


@dataclass(frozen=True)
class ShiftReport:
    """What a shift did to a reference: enough to redo it and to read the results against it."""

    capture_sd: float
    missing_genes: float
    seed: int
    capture_factors: dict[str, float]
    """Per gene of the reference as read, divided by the median factor."""
    genes_removed: list[str]
    n_genes_before: int
    n_genes_after: int
    library_size: dict[str, float] = field(default_factory=dict)
    """Median counts per cell before and after (over the genes kept)."""
    zero_fraction: dict[str, float] = field(default_factory=dict)
    """Fraction of zero entries before and after (over the genes kept)."""

    def to_json(self) -> dict[str, Any]:
        return {"model": MODEL, **self.__dict__}


def capture_factors(genes: Sequence[str], capture_sd: float, seed: int) -> pd.Series:
    """Log-normal per-gene factors, divided by their median (seed's first stream)."""
    factors_stream, _, _ = _streams(seed)
    factors = np.exp(capture_sd * factors_stream.standard_normal(len(genes)))
    return pd.Series(factors / np.median(factors), index=list(genes), name="capture_factor")


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for the factors, the redraw and the missing genes."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3)]


def _redraw(counts: Any, factors: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """Each row drawn again at its own total, with probabilities proportional to counts x factors."""
    counts = sp.csr_matrix(counts)
    rows = []
    for start in range(0, counts.shape[0], CHUNK_CELLS):
        dense = np.asarray(counts[start : start + CHUNK_CELLS].toarray(), dtype=np.float64)
        library = np.rint(dense.sum(axis=1)).astype(np.int64)
        weights = dense * factors
        totals = weights.sum(axis=1, keepdims=True)
        empty = totals[:, 0] <= 0
        p = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
        p[empty, 0] = 1.0  # a cell without counts draws 0 counts; any valid row of p will do
        drawn = rng.multinomial(library, p)
        rows.append(sp.csr_matrix(drawn.astype(np.float32)))
    return sp.vstack(rows, format="csr") if rows else sp.csr_matrix(counts.shape, dtype=np.float32)


def shift_reference(
    reference: ad.AnnData,
    capture_sd: float,
    missing_genes: float = 0.0,
    seed: int = 0,
    candidates: Sequence[str] | None = None,
) -> tuple[ad.AnnData, ShiftReport]:
    """The reference as another technology would have measured it (module docstring), and what changed.

    `candidates` are the genes that may go missing (default: all); `missing_genes` is their fraction
    removed, rounded to whole genes. The input is not modified.
    """
    if capture_sd < 0:
        raise ValueError(f"capture_sd {capture_sd} is negative; give a standard deviation of at least 0")
    if not 0 <= missing_genes < 1:
        raise ValueError(f"missing_genes {missing_genes} is not a fraction in [0, 1)")
    genes = [str(gene) for gene in reference.var_names]
    factors = capture_factors(genes, capture_sd, seed)
    _, redraw_stream, genes_stream = _streams(seed)
    counts = _redraw(reference.X, factors.to_numpy(), redraw_stream)

    pool = [gene for gene in genes if candidates is None or gene in set(candidates)]
    n_removed = round(missing_genes * len(pool))
    if n_removed and n_removed >= len(pool):
        raise ValueError(
            f"missing_genes {missing_genes} would remove all {len(pool)} candidate genes; give a smaller fraction"
        )
    chosen = genes_stream.permutation(len(pool))[:n_removed]
    removed = {pool[index] for index in chosen}
    keep = np.array([gene not in removed for gene in genes])

    shifted = ad.AnnData(
        X=counts[:, keep],
        obs=reference.obs.copy(),
        var=reference.var.iloc[keep].copy(),
        obsm={key: np.asarray(value).copy() for key, value in reference.obsm.items()},
    )
    before = sp.csr_matrix(reference.X)[:, keep]
    after = shifted.X

    def zeros(matrix: sp.csr_matrix) -> float:
        size = matrix.shape[0] * matrix.shape[1]
        return float(1 - (matrix != 0).sum() / size) if size else 0.0

    report = ShiftReport(
        capture_sd=float(capture_sd),
        missing_genes=float(missing_genes),
        seed=int(seed),
        capture_factors={gene: float(value) for gene, value in factors.items()},
        genes_removed=[gene for gene in genes if gene in removed],
        n_genes_before=len(genes),
        n_genes_after=int(keep.sum()),
        library_size={
            "median_before": float(np.median(np.asarray(before.sum(axis=1)).ravel())),
            "median_after": float(np.median(np.asarray(after.sum(axis=1)).ravel())),
        },
        zero_fraction={"before": zeros(before), "after": zeros(after)},
    )
    return shifted, report
