"""Tests for the synthetic reference + spatial generator: truths known, layout realistic, runs fast."""

from __future__ import annotations

import json
import time

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from toolkit.data.synthetic import PRESETS, SimulationPreset, simulate
from toolkit.errors import SpotsweepError

SMALL = {
    "starmap-like": {"n_spatial_cells": 800, "n_reference_cells": 1500, "n_genes": 200},
    "merfish-like": {"n_spatial_cells": 3000, "n_reference_cells": 3000, "n_genes": 150},
}


@pytest.fixture(scope="module", params=sorted(SMALL))
def small(request: pytest.FixtureRequest) -> tuple[str, ad.AnnData, ad.AnnData]:
    """One reduced-size simulation per preset, shared by the structural tests."""
    name = request.param
    reference, spatial = simulate(name, seed=3, **SMALL[name])
    return name, reference, spatial


def window_counts(xy: np.ndarray, window: float) -> np.ndarray:
    """Cells per non-empty square window anchored at 0, as the pseudospot builder bins them."""
    _, counts = np.unique(np.floor(xy / window).astype(np.int64), axis=0, return_counts=True)
    return counts


def test_presets_are_frozen_and_complete() -> None:
    assert {"starmap-like", "merfish-like"} <= set(PRESETS)
    for preset in PRESETS.values():
        assert isinstance(preset, SimulationPreset)
        assert preset.window > 0 and preset.n_state_dims >= 1
        assert np.isclose(preset.spatial_frequencies.sum(), 1)
        assert np.isclose(preset.reference_frequencies.sum(), 1)
        with pytest.raises(AttributeError):
            preset.window = 1.0  # type: ignore[misc]
    assert len(PRESETS["starmap-like"].cell_types) == 12
    assert len(PRESETS["merfish-like"].cell_types) == 15
    assert PRESETS["starmap-like"].window == 750 and PRESETS["merfish-like"].window == 40


def test_shapes_and_names(small: tuple[str, ad.AnnData, ad.AnnData]) -> None:
    name, reference, spatial = small
    size = SMALL[name]
    assert reference.shape == (size["n_reference_cells"], size["n_genes"])
    assert spatial.shape == (size["n_spatial_cells"], size["n_genes"])
    assert list(reference.var_names) == list(spatial.var_names)
    assert reference.var_names[0] == "Gene0001" and reference.var_names.is_unique
    assert reference.obs_names.is_unique and spatial.obs_names.is_unique
    assert spatial.obsm["spatial"].shape == (size["n_spatial_cells"], 2)
    assert spatial.obsm["spatial"].dtype == np.float64
    for adata in (reference, spatial):
        assert adata.obsm["state"].dtype == np.float32
        assert adata.obsm["state"].shape == (adata.n_obs, PRESETS[name].n_state_dims)


def test_counts_are_sparse_nonnegative_integers(small: tuple[str, ad.AnnData, ad.AnnData]) -> None:
    _, reference, spatial = small
    for adata in (reference, spatial):
        assert isinstance(adata.X, sp.csr_matrix) and adata.X.dtype == np.float32
        assert np.all(adata.X.data >= 0) and np.array_equal(adata.X.data, np.round(adata.X.data))
        assert np.asarray(adata.X.sum(axis=1)).min() > 0


def test_same_categories_in_both(small: tuple[str, ad.AnnData, ad.AnnData]) -> None:
    name, reference, spatial = small
    expected = PRESETS[name].type_names
    assert list(reference.obs["cell_type"].cat.categories) == expected
    assert list(spatial.obs["cell_type"].cat.categories) == expected


def test_type_frequencies_match_tables(small: tuple[str, ad.AnnData, ad.AnnData]) -> None:
    """Counts are allocated by largest remainder, so each type is within one cell of n * frequency."""
    name, reference, spatial = small
    preset = PRESETS[name]
    for adata, freqs in ((spatial, preset.spatial_frequencies), (reference, preset.reference_frequencies)):
        counts = adata.obs["cell_type"].value_counts().reindex(preset.type_names).to_numpy()
        assert np.all(np.abs(counts - adata.n_obs * freqs) < 1.0)


def test_spatial_inside_scaled_extent(small: tuple[str, ad.AnnData, ad.AnnData]) -> None:
    _, _, spatial = small
    extent = np.asarray(spatial.uns["simulation"]["extent"])
    xy = spatial.obsm["spatial"]
    assert np.all(xy >= 0) and np.all(xy < extent)


def test_cortical_layers_in_depth_order() -> None:
    _, spatial = simulate("starmap-like", seed=5, n_spatial_cells=1000, n_reference_cells=50, n_genes=50)
    depth = spatial.obsm["spatial"][:, 1]
    layers = ["ExcitatoryL2and3", "ExcitatoryL4", "ExcitatoryL5", "ExcitatoryL6"]
    means = [depth[(spatial.obs["cell_type"] == layer).to_numpy()].mean() for layer in layers]
    assert means == sorted(means), means
    olig = depth[(spatial.obs["cell_type"] == "Olig").to_numpy()].mean()
    assert olig > means[2]  # white matter at the deep end


def test_state_varies_smoothly_in_space(small: tuple[str, ad.AnnData, ad.AnnData]) -> None:
    name, reference, spatial = small
    state, xy = spatial.obsm["state"], spatial.obsm["spatial"]
    assert np.corrcoef(state[:, 0], xy[:, 0])[0, 1] > 0.8
    windows = np.floor(xy / PRESETS[name].window).astype(np.int64)
    _, inverse = np.unique(windows, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    spot_mean = np.bincount(inverse, weights=state[:, 0]) / np.bincount(inverse)
    assert spot_mean.std() > 0.3  # pseudospots differ in mean state
    ref_state = reference.obsm["state"]
    for dim in range(state.shape[1]):
        lo, hi = np.quantile(state[:, dim], [0.05, 0.95])
        ref_lo, ref_hi = np.quantile(ref_state[:, dim], [0.05, 0.95])
        assert abs(lo - ref_lo) < 0.25 and abs(hi - ref_hi) < 0.25


def test_state_shifts_expression() -> None:
    """Within one type, genes respond to the state: high-state and low-state cells differ."""
    reference, _ = simulate("starmap-like", seed=2, n_spatial_cells=50, n_reference_cells=3000, n_genes=200)
    cells = (reference.obs["cell_type"] == "ExcitatoryL6").to_numpy()
    x = reference.X[cells].toarray()
    x = x / x.sum(axis=1, keepdims=True)
    state = reference.obsm["state"][cells, 0]
    high, low = x[state > 0.5].mean(axis=0), x[state < -0.5].mean(axis=0)
    keep = (high + low) > 1e-3
    assert np.abs(np.log(high[keep] / low[keep])).max() > 0.7


def test_platform_effect_only_in_spatial(small: tuple[str, ad.AnnData, ad.AnnData]) -> None:
    _, reference, spatial = small
    kind = spatial.obs["cell_type"].value_counts().index[0]

    def profile(adata: ad.AnnData) -> np.ndarray:
        x = adata.X[(adata.obs["cell_type"] == kind).to_numpy()]
        return np.asarray(x.sum(axis=0)).ravel(), x.sum()

    sp_sum, sp_total = profile(spatial)
    ref_sum, ref_total = profile(reference)
    keep = (sp_sum >= 30) & (ref_sum >= 30)
    assert keep.sum() > 20
    log_ratio = np.log(sp_sum[keep] / sp_total) - np.log(ref_sum[keep] / ref_total)
    truth = np.log(spatial.var["platform_effect"].to_numpy()[keep])
    assert log_ratio.std() > 0.3
    assert np.corrcoef(log_ratio, truth)[0, 1] > 0.7
    assert "platform_effect" not in reference.var


def test_parameters_serialise(small: tuple[str, ad.AnnData, ad.AnnData], tmp_path) -> None:
    name, reference, spatial = small
    params = json.loads(json.dumps(spatial.uns["simulation"]))
    assert params["preset"] == name and params["seed"] == 3
    assert params["n_spatial_cells"] == SMALL[name]["n_spatial_cells"]
    assert params["n_reference_cells"] == SMALL[name]["n_reference_cells"]
    assert params["n_genes"] == SMALL[name]["n_genes"]
    json.dumps(reference.uns["simulation"])
    path = tmp_path / "spatial.h5ad"
    spatial[:100].copy().write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.uns["simulation"]["preset"] == name
    assert np.array_equal(back.obsm["spatial"], spatial.obsm["spatial"][:100])


def test_same_seed_identical_different_seed_different() -> None:
    size = {"n_spatial_cells": 300, "n_reference_cells": 300, "n_genes": 80}
    first = simulate("merfish-like", seed=11, **size)
    again = simulate("merfish-like", seed=11, **size)
    other = simulate("merfish-like", seed=12, **size)
    for a, b in zip(first, again, strict=True):
        assert (a.X != b.X).nnz == 0
        assert np.array_equal(a.obsm["state"], b.obsm["state"])
        assert a.obs["cell_type"].equals(b.obs["cell_type"])
    assert np.array_equal(first[1].obsm["spatial"], again[1].obsm["spatial"])
    assert (first[0].X != other[0].X).nnz > 0
    assert not np.array_equal(first[1].obsm["spatial"], other[1].obsm["spatial"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"preset": "visium-like"}, "preset"),
        ({"n_spatial_cells": 0}, "n_spatial_cells"),
        ({"n_reference_cells": -5}, "n_reference_cells"),
        ({"n_genes": 2.5}, "n_genes"),
        ({"n_genes": True}, "n_genes"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, field: str) -> None:
    with pytest.raises(SpotsweepError, match=field):
        simulate(**kwargs)


def test_full_size_starmap_windows_match_real_data() -> None:
    """The real STARmap slice gives 189 windows of 750 px holding 1..17 cells."""
    start = time.perf_counter()
    reference, spatial = simulate("starmap-like", seed=0)
    elapsed = time.perf_counter() - start
    assert spatial.shape == (1523, 1020) and reference.shape == (14000, 1020)
    xy = spatial.obsm["spatial"]
    assert xy[:, 0].min() >= 0 and xy[:, 0].max() < 7100 and xy[:, 1].min() >= 0 and xy[:, 1].max() < 13800
    counts = window_counts(xy, PRESETS["starmap-like"].window)
    print(
        f"starmap-like full size: {len(counts)} windows, {counts.min()}..{counts.max()} cells per window, "
        f"generated in {elapsed:.2f} s"
    )
    assert 170 <= len(counts) <= 208
    assert counts.min() == 1 and 12 <= counts.max() <= 22
    assert elapsed < 10


def test_merfish_reduced_windows_scale_with_size() -> None:
    """A tenth of the cells keeps cell density, so about a tenth of the 27,000 windows with 1..~16 cells."""
    _, spatial = simulate("merfish-like", seed=0, n_spatial_cells=8400, n_reference_cells=10, n_genes=20)
    counts = window_counts(spatial.obsm["spatial"], PRESETS["merfish-like"].window)
    print(
        f"merfish-like 8,400 cells: {len(counts)} windows, {counts.min()}..{counts.max()} cells, "
        f"mean {counts.mean():.2f}"
    )
    assert 2300 <= len(counts) <= 3100
    assert counts.min() == 1 and 8 <= counts.max() <= 20
    assert 2.5 <= counts.mean() <= 3.8
