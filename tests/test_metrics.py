"""Tests for toolkit.metrics: published benchmark predictions, checked against a plain re-calculation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from toolkit.errors import SpotsweepError
from toolkit.metrics import (
    LI2022_CATCH_ALL_TYPES,
    METRICS,
    Scores,
    accuracy_score,
    grid_ssim,
    li2022_prediction,
    li2022_truth,
    score,
    state_agreement,
)

STARMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "starmap"
LI2022 = STARMAP / "li2022"

# Li et al.'s slice-1 labels -> the Allen reference's names (as in their load_benchmark_results);
# HPC, Npy and Other have no reference counterpart.
SLICE1_TO_ALLEN = {
    "ExcitatoryL2and3": "Excitatory L2/3",
    "ExcitatoryL4": "Excitatory L4",
    "ExcitatoryL5": "Excitatory L5",
    "ExcitatoryL6": "Excitatory L6",
    "Pvalb": "Inhibitory Pvalb",
    "Sst": "Inhibitory Sst",
    "Vip": "Inhibitory Vip",
}
C2LOC_PREFIX = "q05cell_abundance_w_sf_"

needs_data = pytest.mark.skipif(not LI2022.is_dir(), reason=f"benchmark data not found at {LI2022}")


# ---------------------------------------------------------------------------------------------
# an independent, deliberately plain re-calculation of the benchmark's metrics


def plain_pcc(g: np.ndarray, p: np.ndarray) -> float:
    if np.ptp(g) == 0 or np.ptp(p) == 0:
        return math.nan
    return float(np.corrcoef(g, p)[0, 1])


def plain_ssim(g: np.ndarray, p: np.ndarray) -> float:
    if g.max() == 0 or p.max() == 0:
        return math.nan
    g = g / g.max()
    p = p / p.max()
    n = len(g)
    mu_g = sum(g) / n
    mu_p = sum(p) / n
    s_g = math.sqrt(sum((x - mu_g) ** 2 for x in g) / n)
    s_p = math.sqrt(sum((x - mu_p) ** 2 for x in p) / n)
    s_gp = sum((a - mu_g) * (b - mu_p) for a, b in zip(g, p, strict=True)) / n
    c1, c2 = 0.01**2, 0.03**2
    c3 = c2 / 2
    return (
        (2 * mu_g * mu_p + c1)
        / (mu_g**2 + mu_p**2 + c1)
        * (2 * s_g * s_p + c2)
        / (s_g**2 + s_p**2 + c2)
        * (s_gp + c3)
        / (s_g * s_p + c3)
    )


def plain_rmse(g: np.ndarray, p: np.ndarray) -> float:
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(g, p, strict=True)) / len(g))


def plain_js(g: np.ndarray, p: np.ndarray) -> float:
    if g.sum() == 0 or p.sum() == 0:
        return math.nan
    return float(jensenshannon(g, p))


PLAIN = {"pcc": plain_pcc, "ssim": plain_ssim, "rmse": plain_rmse, "js": plain_js}


def plain_tables(truth: pd.DataFrame, pred: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_type = pd.DataFrame(
        {m: [PLAIN[m](truth[c].to_numpy(), pred[c].to_numpy()) for c in truth.columns] for m in METRICS},
        index=truth.columns,
    )
    per_spot = pd.DataFrame(
        {m: [PLAIN[m](truth.loc[s].to_numpy(), pred.loc[s].to_numpy()) for s in truth.index] for m in METRICS},
        index=truth.index,
    )
    return per_type, per_spot


def plain_mean(values: pd.Series, metric: str) -> float:
    fill = 0.0 if metric in ("pcc", "ssim") else 1.0
    return sum(fill if math.isnan(v) else v for v in values) / len(values)


# ---------------------------------------------------------------------------------------------
# the benchmark's published predictions


@pytest.fixture(scope="module")
def benchmark() -> dict[str, object]:
    reference_types = sorted(pd.read_csv(LI2022 / "reference_labels_allen_visp.tsv", sep="\t", header=None)[1].unique())
    assert len(reference_types) == 15
    # the benchmark left the reference's catch-alls out; STARmap's own "Other" shares the name only
    evaluated = [t for t in reference_types if t not in LI2022_CATCH_ALL_TYPES]
    counts = pd.read_csv(LI2022 / "simulated" / "combined_spot_clusters.txt", sep="\t", index_col=0)
    counts = counts.rename(columns=SLICE1_TO_ALLEN)
    destvi = pd.read_csv(LI2022 / "results" / "DestVI_result.txt", index_col=0)
    c2l = pd.read_csv(LI2022 / "results" / "Cell2location_result.txt", index_col=0)
    c2l.columns = [c.removeprefix(C2LOC_PREFIX) for c in c2l.columns]
    grid = pd.read_csv(LI2022 / "simulated" / "combined_Locations.txt", sep="\t")
    grid.index = counts.index
    return {
        "reference": evaluated,
        "counts": counts,
        "grid": grid,
        "raw": {"DestVI": destvi, "Cell2location": c2l},
    }


@needs_data
def test_preparation_matches_benchmark_loading(benchmark: dict) -> None:
    """li2022_truth / li2022_prediction reproduce the benchmark's own pandas steps."""
    reference, counts = benchmark["reference"], benchmark["counts"]
    assert len(reference) == 12
    truth = li2022_truth(counts, reference)
    # the benchmark: divide by the total over all 15 spatial types, fillna(0), drop HPC/Npy/Other
    expected = (counts.T / counts.sum(axis=1)).T.fillna(0).drop(columns=["HPC", "Npy", "Other"])
    assert list(truth.columns) == list(expected.columns)
    assert len(truth.columns) == 12
    np.testing.assert_allclose(truth.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-15)
    assert (truth.sum(axis=1) <= 1 + 1e-12).all() and (truth.sum(axis=1) < 1 - 1e-12).any()

    for raw in benchmark["raw"].values():
        pred = li2022_prediction(raw, truth.columns)
        expected = (raw.T / raw.sum(axis=1)).T.fillna(0)[truth.columns].clip(0, 1)
        assert list(pred.columns) == list(truth.columns)
        np.testing.assert_allclose(pred.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-15)


@needs_data
def test_published_predictions_match_plain_calculation(benchmark: dict) -> None:
    truth = li2022_truth(benchmark["counts"], benchmark["reference"])
    summary = {}
    for method, raw in benchmark["raw"].items():
        pred = li2022_prediction(raw, truth.columns)
        scores = score(truth, pred)
        assert isinstance(scores, Scores)
        assert scores.per_cell_type.index.name == "cell_type" and scores.per_spot.index.name == "spot"
        assert list(scores.per_cell_type.columns) == list(METRICS)
        assert scores.per_cell_type.shape == (12, 4) and scores.per_spot.shape == (189, 4)

        per_type, per_spot = plain_tables(truth, pred)
        for got, want in ((scores.per_cell_type, per_type), (scores.per_spot, per_spot)):
            np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-10, equal_nan=True)

        means = scores.means()
        for metric in METRICS:
            assert means[f"{metric}_cell_type"] == pytest.approx(plain_mean(per_type[metric], metric), abs=1e-10)
            assert means[f"{metric}_spot"] == pytest.approx(plain_mean(per_spot[metric], metric), abs=1e-10)
        summary[method] = means
        summary[method]["ssim_grid"] = float(grid_ssim(truth, pred, benchmark["grid"]).mean())

    table = pd.DataFrame(summary).T
    print("\nLi et al. 2022 STARmap (Dataset 10), published predictions, benchmark scoring:")
    print(table.round(4).to_string())
    for method in summary:
        assert -1 <= summary[method]["pcc_cell_type"] <= 1
        assert 0 < summary[method]["rmse_cell_type"] < 0.3
        assert 0 < summary[method]["js_cell_type"] < math.sqrt(math.log(2))  # JS distance, natural log
    c2l, destvi = summary["Cell2location"], summary["DestVI"]
    assert c2l["pcc_cell_type"] > 0.3 and 0.2 < c2l["ssim_cell_type"] < 1
    # The DestVI proportions published with the benchmark are close to uniform and carry almost no
    # signal here (mean PCC ~0.02; every other published method scores 0.49-0.64).
    assert abs(destvi["pcc_cell_type"]) < 0.2
    as_ = accuracy_score(table)
    print(as_.round(4).to_string())
    assert as_["Cell2location"] == 1.0 and as_["DestVI"] == 0.5


# ---------------------------------------------------------------------------------------------
# small hand-made cases


def toy(seed: int = 0, spots: int = 20, types: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.dirichlet(np.ones(types), size=spots)
    return pd.DataFrame(values, index=[f"s{i}" for i in range(spots)], columns=[f"t{j}" for j in range(types)])


def test_identical_is_perfect() -> None:
    truth = toy()
    scores = score(truth, truth.copy())
    for frame in (scores.per_cell_type, scores.per_spot):
        np.testing.assert_allclose(frame["pcc"], 1, atol=1e-12)
        np.testing.assert_allclose(frame["ssim"], 1, atol=1e-12)
        np.testing.assert_allclose(frame["rmse"], 0, atol=1e-12)
        np.testing.assert_allclose(frame["js"], 0, atol=1e-7)
    means = scores.means()
    assert list(means) == [f"{m}_{d}" for d in ("cell_type", "spot") for m in METRICS]


def test_order_of_labels_does_not_matter() -> None:
    truth, pred = toy(0), toy(1)
    shuffled = pred.iloc[::-1, ::-1]
    a, b = score(truth, pred), score(truth, shuffled)
    pd.testing.assert_frame_equal(a.per_cell_type, b.per_cell_type)
    pd.testing.assert_frame_equal(a.per_spot, b.per_spot)


def test_constant_column_gives_nan_and_the_nan_rule() -> None:
    truth, pred = toy(0), toy(1)
    truth["t3"] = 0.0  # a type absent everywhere: pcc, ssim, js undefined, rmse defined
    pred["t2"] = 0.25  # a constant prediction: pcc undefined only
    scores = score(truth, pred)
    raw = scores.per_cell_type
    assert raw.loc["t3", ["pcc", "ssim", "js"]].isna().all()
    assert raw.loc["t3", "rmse"] == pytest.approx(plain_rmse(truth["t3"].to_numpy(), pred["t3"].to_numpy()))
    assert np.isnan(raw.loc["t2", "pcc"]) and np.isfinite(raw.loc["t2", ["ssim", "rmse", "js"]]).all()
    means = scores.means()
    for metric, fill in (("pcc", 0.0), ("ssim", 0.0), ("rmse", 1.0), ("js", 1.0)):
        assert means[f"{metric}_cell_type"] == pytest.approx(raw[metric].fillna(fill).mean())
    assert means["pcc_cell_type"] == pytest.approx((raw.loc["t0", "pcc"] + raw.loc["t1", "pcc"]) / 4)
    assert means["rmse_cell_type"] == pytest.approx(raw["rmse"].mean())  # no NaN: nothing replaced
    assert means["js_cell_type"] == pytest.approx((raw["js"].iloc[:3].sum() + 1) / 4)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda p: p.rename(columns={"t0": "tX"}), r"cell types .*tX"),
        (lambda p: p.rename(index={"s0": "sX"}), r"spots .*sX"),
        (lambda p: p.drop(columns=["t1"]), r"cell types .*t1"),
        (lambda p: p.assign(t0=np.nan), "NaN"),
    ],
)
def test_mismatch_raises(change, match: str) -> None:
    truth = toy()
    with pytest.raises(SpotsweepError, match=match):
        score(truth, change(truth.copy()))


def test_li2022_truth_counts_dropped_types_in_denominator() -> None:
    counts = pd.DataFrame({"A": [1, 0, 0], "B": [1, 2, 0], "Other": [2, 2, 0]}, index=["s0", "s1", "s2"])
    truth = li2022_truth(counts, ["B", "A", "Z"])
    assert list(truth.columns) == ["A", "B"]
    np.testing.assert_allclose(truth.to_numpy(), [[0.25, 0.25], [0, 0.5], [0, 0]])
    with pytest.raises(SpotsweepError, match="no cell type"):
        li2022_truth(counts, ["Q"])


def test_li2022_prediction_normalises_over_all_types() -> None:
    raw = pd.DataFrame({"A": [2.0, 0.0, -1.0], "B": [1.0, 0.0, 3.0], "X": [1.0, 0.0, 0.0]})
    pred = li2022_prediction(raw, ["B", "A"])
    assert list(pred.columns) == ["B", "A"]
    np.testing.assert_allclose(pred.to_numpy(), [[0.25, 0.5], [0, 0], [1.0, 0.0]])
    with pytest.raises(SpotsweepError, match="Z"):
        li2022_prediction(raw, ["A", "Z"])


def test_accuracy_score_toy() -> None:
    means = pd.DataFrame(
        {"pcc": [0.9, 0.5, 0.7], "ssim": [0.2, 0.8, 0.5], "rmse": [0.1, 0.3, 0.2], "js": [0.5, 0.4, 0.6]},
        index=["A", "B", "C"],
    )
    # ranks (best = 3): pcc A3 B1 C2; ssim A1 B3 C2; rmse A3 B1 C2; js A2 B3 C1
    got = accuracy_score(means)
    assert got["A"] == pytest.approx((3 + 1 + 3 + 2) / 12)
    assert got["B"] == pytest.approx((1 + 3 + 1 + 3) / 12)
    assert got["C"] == pytest.approx((2 + 2 + 2 + 1) / 12)
    renamed = means.rename(columns=lambda c: f"{c}_cell_type")
    pd.testing.assert_series_equal(accuracy_score(renamed), got)
    with pytest.raises(SpotsweepError, match="js"):
        accuracy_score(means.drop(columns=["js"]))


def test_grid_ssim_identical_is_one() -> None:
    truth = toy(spots=30)
    grid = pd.DataFrame({"x": np.arange(30) // 6, "y": np.arange(30) % 6}, index=truth.index)
    got = grid_ssim(truth, truth.copy(), grid)
    assert got.index.name == "cell_type" and list(got.index) == list(truth.columns)
    np.testing.assert_allclose(got, 1.0, atol=1e-12)
    assert (grid_ssim(truth, toy(5, spots=30), grid) < 1).all()
    with pytest.raises(SpotsweepError, match="window"):
        grid_ssim(truth, truth, grid, win_size=4)
    narrow = pd.DataFrame({"x": np.arange(30) % 2, "y": np.arange(30) // 2}, index=truth.index)
    assert grid_ssim(truth, truth, narrow).isna().all()  # two grid columns: no SSIM window fits, no failure


def test_state_agreement_rotation() -> None:
    rng = np.random.default_rng(3)
    spots, dims, types = 60, 4, 3
    true = rng.normal(size=(spots, dims, types))
    q, _ = np.linalg.qr(rng.normal(size=(dims, dims)))
    rotated = np.einsum("sdt,de->set", true, q) + 2.0
    got = state_agreement(true, rotated, cell_types=["a", "b", "c"])
    assert list(got.columns) == ["pearson", "linear_r2"] and list(got.index) == ["a", "b", "c"]
    np.testing.assert_allclose(got["linear_r2"], 1.0, atol=1e-10)
    assert (got["pearson"] < 0.99).all()
    same = state_agreement(true, true.copy())
    np.testing.assert_allclose(same["pearson"], 1.0, atol=1e-12)

    weights = np.ones((spots, types))
    weights[:30, 0] = 0
    noisy = true + rng.normal(scale=5, size=true.shape)
    noisy[30:, :, 0] = true[30:, :, 0]  # type 0 is exact where present
    got = state_agreement(true, noisy, weights=weights)
    assert got.loc[0, "pearson"] == pytest.approx(1.0) and got.loc[0, "linear_r2"] == pytest.approx(1.0)
    assert got.loc[1, "linear_r2"] < 0.5
    with pytest.raises(SpotsweepError, match="weights"):
        state_agreement(true, noisy, weights=np.ones(spots))
