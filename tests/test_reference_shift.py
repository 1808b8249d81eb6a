"""A reference measured as another technology would (issue 38's E2): the seeded transform, and a dataset
that asks for it going through the real prepare stage into a shifted reference and its own reference model."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import TINY_SWEEP
from toolkit.config import identity, parse_sweep
from toolkit.data.shift import shift_reference
from toolkit.data.synthetic import simulate
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare_dataset, reference_model_id, shift_report_file
from toolkit.pseudospots import read_spots
from toolkit.sweep import expand


@pytest.fixture(scope="module")
def reference() -> ad.AnnData:
    """A small synthetic reference: 600 cells x 60 genes of counts."""
    reference, _ = simulate("starmap-like", 1, n_spatial_cells=500, n_reference_cells=600, n_genes=60)
    return reference


def _dense(matrix: Any) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix)


def _libraries(matrix: Any) -> np.ndarray:
    return _dense(matrix).sum(axis=1)


# --- the transform ---------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_reference_and_another_seed_another(reference: ad.AnnData) -> None:
    a, report_a = shift_reference(reference, 0.5, 0.33, seed=3)
    b, report_b = shift_reference(reference, 0.5, 0.33, seed=3)
    _, report_c = shift_reference(reference, 0.5, 0.33, seed=4)
    np.testing.assert_array_equal(_dense(a.X), _dense(b.X))
    assert report_a == report_b and list(a.var_names) == list(b.var_names)
    assert report_a.genes_removed != report_c.genes_removed
    assert report_a.capture_factors != report_c.capture_factors


def test_each_cell_keeps_its_library_size_and_zeros_stay_zero(reference: ad.AnnData) -> None:
    before = _dense(reference.X)
    for sd in (0.0, 0.5, 1.0):
        shifted, report = shift_reference(reference, sd, seed=0)
        after = _dense(shifted.X)
        np.testing.assert_array_equal(_libraries(after), before.sum(axis=1))
        assert not after[before == 0].any()  # a gene a cell never showed is not made up
        assert np.all(after >= 0) and np.all(after == np.round(after))  # counts, still
        assert report.library_size["median_before"] == report.library_size["median_after"]
        assert report.zero_fraction["after"] >= report.zero_fraction["before"]
        assert shifted.obs.equals(reference.obs)
    assert not np.array_equal(_dense(shift_reference(reference, 0.0, seed=0)[0].X), before)  # every count redrawn


def test_the_factors_are_log_normal_with_median_one_and_scale_with_the_sd(reference: ad.AnnData) -> None:
    half = np.array(list(shift_reference(reference, 0.5, seed=0)[1].capture_factors.values()))
    one = np.array(list(shift_reference(reference, 1.0, seed=0)[1].capture_factors.values()))
    assert np.median(half) == pytest.approx(1.0) and np.median(one) == pytest.approx(1.0)
    offset = np.log(one) - 2 * np.log(half)  # the same draws, doubled (up to the two medians' scales)
    np.testing.assert_allclose(offset, offset[0], atol=1e-9)
    assert 0.3 < np.log(one).std() < 1.7  # 60 draws of sd 1


def test_a_stronger_shift_moves_the_counts_further(reference: ad.AnnData) -> None:
    """Each type's mean profile, as a share of its counts, moves further from the original's at sd 1 than
    at sd 0.5, and further at 0.5 than with the redraw alone."""
    types = reference.obs["cell_type"].to_numpy()

    def profiles(matrix: Any) -> np.ndarray:
        dense = _dense(matrix)
        means = np.stack([dense[types == name].mean(axis=0) for name in np.unique(types)])
        return means / means.sum(axis=1, keepdims=True)

    original = profiles(reference.X)
    distance = {
        sd: np.abs(profiles(shift_reference(reference, sd, seed=0)[0].X) - original).sum() for sd in (0.0, 0.5, 1.0)
    }
    assert distance[0.0] < distance[0.5] < distance[1.0]


def test_missing_genes_are_a_seeded_share_of_the_candidates_and_reported(reference: ad.AnnData) -> None:
    genes = list(reference.var_names)
    candidates = genes[:30]
    shifted, report = shift_reference(reference, 1.0, 0.33, seed=0, candidates=candidates)
    assert len(report.genes_removed) == round(0.33 * 30) == 10
    assert set(report.genes_removed) <= set(candidates)
    assert list(shifted.var_names) == [gene for gene in genes if gene not in set(report.genes_removed)]
    assert report.n_genes_before == 60 and report.n_genes_after == 50
    assert shift_reference(reference, 0.5, 0.33, seed=0, candidates=candidates)[1].genes_removed == report.genes_removed
    assert json.loads(json.dumps(report.to_json()))["genes_removed"] == report.genes_removed
    np.testing.assert_array_equal(_dense(reference.X).shape, (600, 60))  # the input is untouched


@pytest.mark.parametrize(
    ("sd", "missing", "message"),
    [(-0.1, 0.0, "capture_sd -0.1 is negative"), (0.5, 1.0, "not a fraction"), (0.5, 0.999, "would remove all 60")],
)
def test_impossible_shifts_are_refused(reference: ad.AnnData, sd: float, missing: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shift_reference(reference, sd, missing)


# --- through the sweep file and prepare --------------------------------------------------------------


def _shifted_sweep(shift: dict[str, Any] | None) -> dict[str, Any]:
    """TINY_SWEEP's tissue, once as it is and once with `shift` (if any) under a second name."""
    data = copy.deepcopy(TINY_SWEEP)
    plain = data["datasets"][0]
    if shift is not None:
        data["datasets"].append({**copy.deepcopy(plain), "name": "tiny-shifted", "reference_shift": shift})
    return data


def test_a_shift_counts_in_ids_only_where_set() -> None:
    plain = parse_sweep(_shifted_sweep(None), "t")
    both = parse_sweep(_shifted_sweep({"capture_sd": 1.0, "missing_genes": 0.33}), "t")
    assert "reference_shift" not in identity(plain.datasets[0])
    assert identity(both.datasets[1])["reference_shift"] == {"capture_sd": 1.0, "missing_genes": 0.33, "seed": 0}
    plain_ids = [task.id for task in expand(plain)]
    tasks = expand(both)
    assert [task.id for task in tasks if task.dataset == "tiny-tissue"] == plain_ids
    models = {task.dataset: reference_model_id(task) for task in tasks}
    assert models["tiny-tissue"] != models["tiny-shifted"]  # the shifted reference trains its own model


@pytest.mark.parametrize(
    ("shift", "message"),
    [
        ({"missing_genes": 0.3}, r"datasets\[1\].reference_shift.capture_sd' is missing"),
        ({"capture_sd": 1, "missing_genes": 1}, r"datasets\[1\].reference_shift.missing_genes'"),
        ({"capture_sd": 1, "sd": 1}, r"unknown key 'datasets\[1\].reference_shift.sd'"),
    ],
)
def test_a_bad_shift_is_one_sentence(shift: dict, message: str) -> None:
    with pytest.raises(SpotsweepError, match=message):
        parse_sweep(_shifted_sweep(shift), "sweep.yaml")


def test_prepare_gives_a_shifted_dataset_a_shifted_reference_and_the_spots_its_genes(tmp_path: Path) -> None:
    sweep = parse_sweep(_shifted_sweep({"capture_sd": 1.0, "missing_genes": 0.33, "seed": 0}), "t")
    layout = OutputLayout(tmp_path)
    for dataset in sweep.datasets:
        prepare_dataset(dataset, layout)
    plain, shifted = (ad.read_h5ad(layout.reference(name)) for name in ("tiny-tissue", "tiny-shifted"))
    report = json.loads(shift_report_file(layout, "tiny-shifted").read_text())
    assert not shift_report_file(layout, "tiny-tissue").exists()
    removed = set(report["genes_removed"])
    assert len(removed) == round(0.33 * plain.n_vars)  # a third of the genes the spots share
    assert list(shifted.var_names) == [gene for gene in plain.var_names if gene not in removed]
    assert list(read_spots(layout.spots("tiny-shifted")).var_names) == list(shifted.var_names)
    np.testing.assert_array_equal(  # the spots themselves are untouched, only fewer genes
        _dense(read_spots(layout.spots("tiny-shifted")).X),
        _dense(read_spots(layout.spots("tiny-tissue"))[:, list(shifted.var_names)].X),
    )
    np.testing.assert_array_equal(shifted.obs["cell_type"].to_numpy(), plain.obs["cell_type"].to_numpy())
    assert not np.array_equal(_dense(shifted.X), _dense(plain[:, list(shifted.var_names)].X))
    assert report["capture_sd"] == 1.0 and report["seed"] == 0 and report["model"].startswith("multinomial")
