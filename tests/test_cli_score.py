"""`spotsweep score` on the benchmark's own files: the published Cell2location predictions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, STARMAP
from tests.test_metrics import SLICE1_TO_ALLEN as TO_ALLEN
from toolkit import metrics

LI2022 = STARMAP / "li2022"


def test_score_command_matches_the_library(tmp_path: Path) -> None:
    """The README's example, with the committed label map."""
    label_map = REPO / "sweeps" / "li2022-starmap-labels.csv"
    assert pd.read_csv(label_map, index_col=0).iloc[:, 0].to_dict() == TO_ALLEN
    excluded = [arg for name in metrics.LI2022_CATCH_ALL_TYPES for arg in ("--exclude", name)]
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "score", str(LI2022 / "simulated" / "combined_spot_clusters.txt"),
         str(LI2022 / "results" / "Cell2location_result.txt"), "--truth-is-counts",
         "--strip-prefix", "q05cell_abundance_w_sf_", "--label-map", str(label_map), *excluded, "--out", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "scored 12 cell types over 189 spots" in done.stdout.replace("\n", " ")
    assert "warning" not in done.stderr  # only HPC and Npy (no Allen counterpart) are left unscored: a note
    assert "note: not scored" in done.stderr and "HPC" in done.stderr
    per_type = pd.read_csv(tmp_path / "per_cell_type.csv", index_col=0)
    counts = pd.read_csv(LI2022 / "simulated" / "combined_spot_clusters.txt", sep="\t", index_col=0).rename(
        columns=TO_ALLEN
    )
    predicted = pd.read_csv(LI2022 / "results" / "Cell2location_result.txt", index_col=0)
    predicted.columns = [c.removeprefix("q05cell_abundance_w_sf_") for c in predicted.columns]
    kept = [c for c in predicted.columns if c not in metrics.LI2022_CATCH_ALL_TYPES]
    truth = metrics.li2022_truth(counts, kept)
    expected = metrics.score(truth, metrics.li2022_prediction(predicted, truth.columns)).per_cell_type
    pd.testing.assert_frame_equal(per_type, expected, check_names=False)
    assert per_type["pcc"].mean() == pytest.approx(0.5845, abs=1e-4)


def test_score_command_explains_unmatched_names() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "score", str(LI2022 / "simulated" / "combined_spot_clusters.txt"),
         str(LI2022 / "results" / "Cell2location_result.txt"), "--truth-is-counts"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert "map the labels" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_scoring_most_types_left_out_warns_and_names_them() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "score", str(LI2022 / "simulated" / "combined_spot_clusters.txt"),
         str(LI2022 / "results" / "Cell2location_result.txt"), "--truth-is-counts",
         "--strip-prefix", "q05cell_abundance_w_sf_"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "scored 6 cell types" in done.stdout
    (warning,) = done.stderr.strip().splitlines()
    assert warning.startswith("warning: not scored") and "ExcitatoryL4" in warning and "--label-map" in warning
