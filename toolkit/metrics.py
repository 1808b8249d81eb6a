"""Score predicted spot x cell-type proportions against the truth as Li et al. 2022 did.

The benchmark (QuKunLab/SpatialBenchmarking, Nature Methods 2022) compares, for each cell type,
the truth and predicted proportion vectors over spots (and, in the other direction, for each spot
the vectors over cell types) with four metrics:

- ``pcc``: Pearson correlation (``scipy.stats.pearsonr``; NaN for a constant vector);
- ``ssim``: ONE global SSIM window over the whole vector, each vector scaled by its own max,
  population (ddof=0) moments, C1 = 0.01**2, C2 = 0.03**2, C3 = C2 / 2;
- ``rmse``: root mean squared error;
- ``js``: ``scipy.spatial.distance.jensenshannon`` (a distance: sqrt of the divergence, natural log,
  both inputs renormalised to sum 1).

Means over types (or spots) replace NaN by 0 for pcc/ssim and by 1 for rmse/js first, as the
benchmark's tables did. Preparation of truth and predictions follows the benchmark too
(:func:`li2022_truth`, :func:`li2022_prediction`); the accuracy score (AS) ranks methods on the
four per-cell-type means (:func:`accuracy_score`). Extras that the benchmark did not have, under
their own names: :func:`grid_ssim` (windowed SSIM of the 2-D proportion maps on the spot grid) and
:func:`state_agreement` (per-type cell-state recovery, e.g. DestVI's gamma).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import pearsonr
from skimage.metrics import structural_similarity

from toolkit.errors import SpotsweepError

METRICS: tuple[str, ...] = ("pcc", "ssim", "rmse", "js")
METRIC_NAMES = {
    "pcc": "Pearson correlation",
    "ssim": "global SSIM (Li et al. 2022)",
    "rmse": "root mean squared error",
    "js": "Jensen-Shannon distance",
}
"""Each metric's name in words, for the aggregate's variables and the report."""

# Catch-all classes of the Allen VISp reference that Li et al. left out of the evaluation; the
# STARmap truth also has an "Other" (a different catch-all that merely shares the name), so pass
# ``[t for t in reference if t not in LI2022_CATCH_ALL_TYPES]`` as ``reference_types`` to li2022_truth.
LI2022_CATCH_ALL_TYPES: tuple[str, ...] = ("Other", "Neuron Other", "Inhibitory Other")

# The benchmark's rule before averaging: an undefined value counts as the worst plausible score.
NAN_FILL: dict[str, float] = {"pcc": 0.0, "ssim": 0.0, "rmse": 1.0, "js": 1.0}

# Global-SSIM constants of the benchmark (k1 = 0.01, k2 = 0.03, dynamic range L = 1 after max-scaling).
_C1 = 0.01**2
_C2 = 0.03**2
_C3 = _C2 / 2


@dataclass(frozen=True)
class Scores:
    """Raw per-cell-type and per-spot metric values; NaN stays where a formula is undefined."""

    per_cell_type: pd.DataFrame  # index "cell_type", columns METRICS
    per_spot: pd.DataFrame  # index "spot", columns METRICS

    def means(self) -> dict[str, float]:
        """Mean of each metric in each direction after the benchmark's NaN rule.

        Keys are ``f"{metric}_cell_type"`` then ``f"{metric}_spot"``; NaN counts as 0 for pcc/ssim
        and as 1 for rmse/js, so a method cannot improve its mean by producing undefined values. Where
        every value is undefined the mean is NaN (shown "n/a" with `why_undefined`): a 0.000 would read
        as a score the method earned.
        """
        out: dict[str, float] = {}
        for direction, frame in (("cell_type", self.per_cell_type), ("spot", self.per_spot)):
            for metric in METRICS:
                values = frame[metric]
                mean = values.fillna(NAN_FILL[metric]).mean() if values.notna().any() else np.nan
                out[f"{metric}_{direction}"] = float(mean)
        return out


def why_undefined(truth: object, predicted: object) -> str:
    """Why a metric is undefined for every cell type (spots x cell types, as scored): PCC needs a truth and
    a prediction that vary over the spots."""
    g, p = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    if g.ndim != 2 or g.shape[0] < 2:
        return "fewer than two spots"
    if (np.nanmax(p, axis=0) == np.nanmin(p, axis=0)).all():
        return "constant prediction: the same in every spot"
    if (np.nanmax(g, axis=0) == np.nanmin(g, axis=0)).all():
        return "constant truth: the same in every spot"
    return "in every cell type the truth or the prediction is the same in every spot"


def shown(value: float, form: str = "{:.3f}", why: str = "") -> str:
    """A metric as printed in tables and on the command line: NaN is "n/a" (and why), never a number."""
    if value is None or np.isnan(value):
        return f"n/a ({why})" if why else "n/a"
    return form.format(value)


# ----------------------------------------------------------------------------------------------
# validation helpers


def _check_frame(frame: object, what: str) -> pd.DataFrame:
    """Reject anything that is not a numeric DataFrame with unique labels."""
    if not isinstance(frame, pd.DataFrame):
        raise SpotsweepError(
            f"{what} is a {type(frame).__name__}, not a pandas DataFrame; pass spots as rows and cell types as columns."
        )
    for axis_name, labels in (("index (spots)", frame.index), ("columns (cell types)", frame.columns)):
        if labels.has_duplicates:
            dupes = sorted(map(str, labels[labels.duplicated()].unique()))[:5]
            raise SpotsweepError(f"{what} has duplicated {axis_name} labels {dupes}; make each label unique.")
    non_numeric = [str(c) for c, dt in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
    if non_numeric:
        raise SpotsweepError(
            f"{what} has non-numeric columns {non_numeric[:5]}; keep only the cell-type proportion columns."
        )
    return frame


def _describe_difference(a: pd.Index, b: pd.Index, limit: int = 5) -> str:
    only_a = [str(x) for x in a.difference(b)][:limit]
    only_b = [str(x) for x in b.difference(a)][:limit]
    return f"only in truth: {only_a}; only in predicted: {only_b}"


def _aligned(truth: pd.DataFrame, predicted: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return truth and predicted with predicted reordered to truth's spots and types.

    Labels must match as sets (order may differ); values must be finite, since the benchmark
    replaced NaN before scoring (see li2022_truth / li2022_prediction).
    """
    truth = _check_frame(truth, "truth")
    predicted = _check_frame(predicted, "predicted")
    if set(truth.columns) != set(predicted.columns):
        raise SpotsweepError(
            "truth and predicted have different cell types ("
            + _describe_difference(truth.columns, predicted.columns)
            + "); rename or drop columns so both have the same cell types."
        )
    if set(truth.index) != set(predicted.index):
        raise SpotsweepError(
            "truth and predicted have different spots ("
            + _describe_difference(truth.index, predicted.index)
            + "); give both the same spot index."
        )
    predicted = predicted.loc[truth.index, truth.columns]
    if truth.shape[0] < 2 or truth.shape[1] < 2:
        raise SpotsweepError(
            f"truth has shape {truth.shape}, but scoring needs at least 2 spots and 2 cell types; "
            "pass the full spot x cell-type table."
        )
    for what, frame in (("truth", truth), ("predicted", predicted)):
        if not np.isfinite(frame.to_numpy(dtype=float)).all():
            raise SpotsweepError(
                f"{what} contains NaN or infinite values; prepare it with li2022_truth/li2022_prediction "
                "(which set NaN to 0) before scoring."
            )
    return truth, predicted


# ----------------------------------------------------------------------------------------------
# the four metrics, vectorised along one axis


def _pcc(g: np.ndarray, p: np.ndarray, axis: int) -> np.ndarray:
    """Pearson r along ``axis``; scipy returns NaN (and warns) for a constant vector."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning: NaN is the intended result
        return np.asarray(pearsonr(g, p, axis=axis).statistic, dtype=float)


def _global_ssim(g: np.ndarray, p: np.ndarray, axis: int) -> np.ndarray:
    """The benchmark's single-window SSIM along ``axis`` (max-scaled, population moments)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        g = g / g.max(axis=axis, keepdims=True)
        p = p / p.max(axis=axis, keepdims=True)
        mu_g = g.mean(axis=axis, keepdims=True)
        mu_p = p.mean(axis=axis, keepdims=True)
        dg = g - mu_g
        dp = p - mu_p
        s_g = np.sqrt((dg**2).mean(axis=axis))
        s_p = np.sqrt((dp**2).mean(axis=axis))
        s_gp = (dg * dp).mean(axis=axis)
        mu_g = mu_g.squeeze(axis)
        mu_p = mu_p.squeeze(axis)
        luminance = (2 * mu_g * mu_p + _C1) / (mu_g**2 + mu_p**2 + _C1)
        contrast = (2 * s_g * s_p + _C2) / (s_g**2 + s_p**2 + _C2)
        structure = (s_gp + _C3) / (s_g * s_p + _C3)
        return luminance * contrast * structure


def _rmse(g: np.ndarray, p: np.ndarray, axis: int) -> np.ndarray:
    return np.sqrt(np.mean((g - p) ** 2, axis=axis))


def _js(g: np.ndarray, p: np.ndarray, axis: int) -> np.ndarray:
    """Jensen-Shannon distance (natural log); NaN where a vector sums to 0.

    scipy takes the square root of a sum of relative entropies, which rounding can leave a hair
    below 0 for (near-)identical vectors, giving NaN; the NaN rule would then score a perfect match
    as the worst. With non-negative inputs and positive sums that is the only way to get NaN, so
    those values are set to 0, the true distance to rounding.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(jensenshannon(g, p, axis=axis), dtype=float)
    valid = (g >= 0).all(axis=axis) & (p >= 0).all(axis=axis) & (g.sum(axis=axis) > 0) & (p.sum(axis=axis) > 0)
    return np.where(np.isnan(out) & valid, 0.0, out)


_FUNCS = {"pcc": _pcc, "ssim": _global_ssim, "rmse": _rmse, "js": _js}


def _table(g: np.ndarray, p: np.ndarray, axis: int, index: pd.Index, name: str) -> pd.DataFrame:
    frame = pd.DataFrame({m: _FUNCS[m](g, p, axis) for m in METRICS}, index=index.copy())
    frame.index.name = name
    frame.columns.name = None
    return frame


def score(truth: pd.DataFrame, predicted: pd.DataFrame) -> Scores:
    """Score predicted proportions against the truth in both directions, as the benchmark did.

    Both are spots x cell types with the same labels (order may differ; predicted is aligned to
    truth). Values are compared as given: prepare them with :func:`li2022_truth` and
    :func:`li2022_prediction` (which clips to [0, 1], as the benchmark's comparison did). Raw values
    keep NaN where a metric is undefined (a constant vector for pcc, an all-zero vector for ssim/js);
    :meth:`Scores.means` applies the benchmark's NaN rule.
    """
    truth, predicted = _aligned(truth, predicted)
    g = truth.to_numpy(dtype=float)
    p = predicted.to_numpy(dtype=float)
    return Scores(
        per_cell_type=_table(g, p, 0, truth.columns, "cell_type"),
        per_spot=_table(g, p, 1, truth.index, "spot"),
    )


# ----------------------------------------------------------------------------------------------
# the benchmark's preparation of truth and predictions


def _type_list(types: Iterable[str], what: str) -> list[str]:
    if isinstance(types, str):
        raise SpotsweepError(f"{what} is a single string {types!r}; pass an iterable of cell-type names.")
    out = list(dict.fromkeys(types))  # unique, order kept
    if not out:
        raise SpotsweepError(f"{what} is empty; pass the cell-type names.")
    return out


def li2022_truth(cell_counts: pd.DataFrame, reference_types: Iterable[str]) -> pd.DataFrame:
    """Turn cells per type per spot into the benchmark's ground-truth proportions.

    Each spot is divided by its total over ALL spatial types (so types the reference lacks still
    count in the denominator), spots without cells become 0, and then types absent from the
    reference are dropped: rows need not sum to 1. Column labels must already use the reference's
    names (map e.g. STARmap's ``ExcitatoryL2and3`` to ``Excitatory L2/3`` first).
    """
    counts = _check_frame(cell_counts, "cell_counts")
    reference = _type_list(reference_types, "reference_types")
    values = counts.to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any():
        raise SpotsweepError(
            "cell_counts contains negative, NaN or infinite values; pass non-negative cell counts per type."
        )
    kept = [c for c in counts.columns if c in set(reference)]
    if not kept:
        raise SpotsweepError(
            f"cell_counts shares no cell type with reference_types (cell_counts has "
            f"{[str(c) for c in counts.columns][:5]}, reference {reference[:5]}); map the labels to the "
            "reference's names first."
        )
    counts = counts.astype(float)
    proportions = counts.div(counts.sum(axis=1), axis=0).fillna(0.0)
    return proportions.loc[:, kept]


def li2022_prediction(predicted: pd.DataFrame, truth_types: Iterable[str]) -> pd.DataFrame:
    """Prepare a method's output as the benchmark did before comparing it with the truth.

    Each spot is normalised over all the reference types the method predicted (abundances become
    proportions), NaN (e.g. a spot with zero total) becomes 0, only the truth's types are kept, in
    the truth's order, and values are clipped to [0, 1].
    """
    predicted = _check_frame(predicted, "predicted")
    types = _type_list(truth_types, "truth_types")
    missing = [t for t in types if t not in predicted.columns]
    if missing:
        raise SpotsweepError(
            f"predicted lacks the truth's cell types {missing[:5]}; name its columns as the reference "
            "does (strip prefixes such as 'q05cell_abundance_w_sf_')."
        )
    predicted = predicted.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = predicted.div(predicted.sum(axis=1), axis=0)
    normalised = normalised.replace([np.inf, -np.inf], np.nan).fillna(0.0)
    return normalised.loc[:, types].clip(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# extras: windowed SSIM on the spot grid, accuracy score, cell-state agreement


def _grid_positions(grid: pd.DataFrame, spots: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(grid, pd.DataFrame) or not {"x", "y"} <= set(grid.columns):
        raise SpotsweepError("grid must be a DataFrame with columns 'x' and 'y' (grid indices per spot).")
    missing = spots.difference(grid.index)
    if len(missing):
        raise SpotsweepError(
            f"grid lacks positions for spots {[str(s) for s in missing[:5]]}; index grid by the same spots as truth."
        )
    xy = grid.loc[spots, ["x", "y"]].to_numpy(dtype=float)
    if not np.isfinite(xy).all() or not np.array_equal(xy, np.round(xy)):
        raise SpotsweepError("grid 'x'/'y' must be whole-number grid indices; pass window indices, not coordinates.")
    xy = xy.astype(np.int64)
    xy -= xy.min(axis=0)
    if len(np.unique(xy, axis=0)) != len(xy):
        raise SpotsweepError("grid places two spots on the same (x, y) cell; give each spot its own grid position.")
    return xy[:, 0], xy[:, 1]


def grid_ssim(
    truth: pd.DataFrame, predicted: pd.DataFrame, grid: pd.DataFrame, win_size: int | None = None
) -> pd.Series:
    """Windowed SSIM of each cell type's 2-D proportion map on the spot grid (not in the benchmark).

    The benchmark's SSIM ignores where spots are; this one uses scikit-image's
    ``structural_similarity`` (data_range 1, uniform window, sample covariance) on maps in which
    grid cells without a spot are 0. ``win_size`` defaults to the largest odd size <= 7 that fits
    the grid's shorter side; a grid narrower than 3 windows (a two-column subset) has no such size,
    and then every value is NaN rather than the task failing over a metric the benchmark lacks.
    """
    truth, predicted = _aligned(truth, predicted)
    xs, ys = _grid_positions(grid, truth.index)
    shape = (int(xs.max()) + 1, int(ys.max()) + 1)
    short = min(shape)
    if win_size is None:
        if short < 3:
            return pd.Series(np.nan, index=pd.Index(truth.columns.copy(), name="cell_type"), name="ssim_grid")
        win_size = min(7, short if short % 2 else short - 1)
    if win_size < 3 or win_size % 2 == 0 or win_size > short:
        raise SpotsweepError(
            f"grid_ssim needs an odd window of at least 3 that fits the {shape[0]} x {shape[1]} grid, "
            f"got {win_size}; pass a valid win_size or a grid at least 3 cells on each side."
        )
    n_types = truth.shape[1]
    t_maps = np.zeros((*shape, n_types))
    p_maps = np.zeros((*shape, n_types))
    t_maps[xs, ys, :] = truth.to_numpy(dtype=float)
    p_maps[xs, ys, :] = predicted.to_numpy(dtype=float)
    values = [
        structural_similarity(t_maps[:, :, k], p_maps[:, :, k], win_size=win_size, data_range=1.0)
        for k in range(n_types)
    ]
    out = pd.Series(values, index=truth.columns.copy(), name="ssim_grid", dtype=float)
    out.index.name = "cell_type"
    return out


def accuracy_score(means: pd.DataFrame) -> pd.Series:
    """The benchmark's accuracy score (AS) of N compared configurations within one dataset.

    Rows are configurations (methods); columns are the per-cell-type means ``pcc``, ``ssim``,
    ``rmse``, ``js`` (``pcc_cell_type`` etc. are accepted too). Each metric is ranked so that the
    best gets N and the worst 1 (higher is better for pcc/ssim, lower for rmse/js), divided by N,
    and the four are averaged. Ties share the average rank (the benchmark broke them by sort
    order); a missing (NaN) value ranks worst.
    """
    if not isinstance(means, pd.DataFrame):
        raise SpotsweepError(
            "accuracy_score takes a DataFrame with one row per method and columns pcc, ssim, rmse, js."
        )
    columns = {}
    for metric in METRICS:
        for candidate in (metric, f"{metric}_cell_type"):
            if candidate in means.columns:
                columns[metric] = candidate
                break
        else:
            raise SpotsweepError(
                f"accuracy_score input lacks a '{metric}' column (has {[str(c) for c in means.columns][:8]});"
                " pass the per-cell-type means pcc, ssim, rmse, js per method."
            )
    if means.index.has_duplicates or len(means) == 0:
        raise SpotsweepError("accuracy_score needs at least one method and unique method names as the index.")
    n = len(means)
    ranks = pd.DataFrame(index=means.index)
    for metric, column in columns.items():
        values = pd.to_numeric(means[column], errors="raise").astype(float)
        higher_is_better = metric in ("pcc", "ssim")
        ranks[metric] = values.rank(method="average", ascending=higher_is_better, na_option="top")
    out = (ranks / n).mean(axis=1)
    out.name = "accuracy_score"
    return out


def _columnwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of matching columns; NaN for fewer than 2 rows or a constant column."""
    if a.shape[0] < 2:
        return np.full(a.shape[1], np.nan)
    return _pcc(a, b, axis=0)


def _linear_r2(true: np.ndarray, pred: np.ndarray) -> float:
    """R^2 of the least-squares affine map pred -> true, pooled over true's dims.

    Invariant to any invertible linear transform of the predicted latent space (rotation, scaling,
    shear), which a per-dim correlation is not. NaN when the fit is exact by construction
    (no more spots than parameters) or true has no variance.
    """
    n, k = pred.shape
    if n <= k + 1:
        return float("nan")
    design = np.column_stack([pred, np.ones(n)])
    coef, *_ = np.linalg.lstsq(design, true, rcond=None)
    residual = true - design @ coef
    total = ((true - true.mean(axis=0)) ** 2).sum()
    if total == 0:
        return float("nan")
    return float(1.0 - (residual**2).sum() / total)


def _checked_states(
    true_state: np.ndarray, predicted_state: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`state_agreement`'s inputs as float arrays, and the (spots, types) mask of the spots each type is
    scored on; one sentence for each kind of mismatch."""
    true = np.asarray(true_state, dtype=float)
    pred = np.asarray(predicted_state, dtype=float)
    if true.ndim != 3 or pred.ndim != 3:
        raise SpotsweepError(
            f"state_agreement takes arrays of shape (spots, n_dims, cell types), got {true.shape} and "
            f"{pred.shape}; stack the per-type states that way."
        )
    if true.shape[0] != pred.shape[0] or true.shape[2] != pred.shape[2]:
        raise SpotsweepError(
            f"true_state {true.shape} and predicted_state {pred.shape} differ in spots or cell types; "
            "pass states for the same spots and types."
        )
    if not (np.isfinite(true).all() and np.isfinite(pred).all()):
        raise SpotsweepError("state_agreement inputs contain NaN or infinite values; pass finite states.")
    n_spots, _, n_types = true.shape
    if weights is None:
        mask = np.ones((n_spots, n_types), dtype=bool)
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != (n_spots, n_types):
            raise SpotsweepError(
                f"weights has shape {w.shape}, expected (spots, cell types) = {(n_spots, n_types)}; "
                "pass one weight per spot and type."
            )
        mask = w > 0
    return true, pred, mask


def state_agreement(
    true_state: np.ndarray,
    predicted_state: np.ndarray,
    weights: np.ndarray | None = None,
    cell_types: Iterable[str] | None = None,
) -> pd.DataFrame:
    """How well per-spot, per-type cell states (e.g. DestVI's ``get_gamma``) were recovered.

    Arrays are (spots, n_dims, cell types). ``pearson``: per type, the mean over dims of the
    Pearson correlation across spots (dims where it is undefined are skipped; NaN when the two
    latent sizes differ, since dims then cannot be paired). ``linear_r2``: per type, the R^2 of the
    best affine least-squares map from predicted to true, which does not need the latent spaces to
    be aligned. ``weights`` (spots, cell types), if given, restricts each type to the spots where
    its weight is > 0 (e.g. where the type is present). Returns a DataFrame indexed by
    ``cell_types`` (default: positions 0..n-1), columns ["pearson", "linear_r2"].
    """
    true, pred, mask = _checked_states(true_state, predicted_state, weights)
    n_types = true.shape[2]
    same_dims = true.shape[1] == pred.shape[1]
    pearson = np.full(n_types, np.nan)
    r2 = np.full(n_types, np.nan)
    for k in range(n_types):
        t = true[mask[:, k], :, k]
        p = pred[mask[:, k], :, k]
        if same_dims:
            r = _columnwise_pearson(t, p)
            if np.isfinite(r).any():
                pearson[k] = float(np.nanmean(r))
        r2[k] = _linear_r2(t, p)
    index = pd.RangeIndex(n_types) if cell_types is None else pd.Index(_type_list(cell_types, "cell_types"))
    if len(index) != n_types:
        raise SpotsweepError(
            f"cell_types has {len(index)} unique names but the states have {n_types} cell types; "
            "pass one name per type."
        )
    out = pd.DataFrame({"pearson": pearson, "linear_r2": r2}, index=index)
    out.index.name = "cell_type"
    return out
