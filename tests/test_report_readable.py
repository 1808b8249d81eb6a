"""The report's figures stay readable: proportion maps of elongated grids (Li et al.'s 3 x 19 columns, a
MERFISH strip) are longer and wrap into bands that each start with the truth, never a line one pixel
high; titles wrap to a narrow figure; batch-size labels never run into each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from toolkit.report import MAP_SHORT_SIDE_IN, MAPS_MAX_WIDTH_IN, _map_bands, _tick_labels, proportion_maps
from toolkit.trajectories import _line_label

DPI = 110  # toolkit.report._save


def _summary(columns: int, rows: int, n_configs: int) -> xr.Dataset:
    """A one-seed sweep of `n_configs` finished destVI batch sizes on a columns x rows grid."""
    grid_x, grid_y = (axis.ravel() for axis in np.meshgrid(np.arange(columns), np.arange(rows)))
    types = ["ExcitatoryL2and3", "Olig", "Vip"]
    batches = [str(2**i) for i in range(n_configs)]
    rng = np.random.default_rng(0)
    truth = rng.dirichlet(np.ones(len(types)), grid_x.size)
    coords = {
        "dataset": ["strip"],
        "method": ["destvi"],
        "variant": ["2022"],
        "amortization": ["both"],
        "batch_size": batches,
        "max_epochs": [100],
        "seed": [0],
    }
    shape = tuple(len(values) for values in coords.values())
    dims = list(coords)
    return xr.Dataset(
        {
            "status": (dims, np.full(shape, "done")),
            "proportion": ([*dims, "spot", "cell_type"], np.broadcast_to(truth, (*shape, *truth.shape))),
            "true_proportion": (("dataset", "spot", "cell_type"), truth[None]),
            "spots_window": (("dataset",), [40.0]),
        },
        coords=coords
        | {"spot": [f"s{i}" for i in range(grid_x.size)], "cell_type": types}
        | {"grid_x": ("spot", grid_x), "grid_y": ("spot", grid_y)},
    )


@pytest.mark.parametrize(("n_configs", "panel", "expected"), [(5, 1.1, [5]), (16, 2.5, [6, 5, 5]), (13, 2.0, [7, 6])])
def test_configurations_wrap_into_evenly_filled_bands(n_configs: int, panel: float, expected: list[int]) -> None:
    assert _map_bands(n_configs, panel, label_width=1.0) == expected


def test_a_strip_of_many_configurations_keeps_its_short_side_readable(tmp_path: Path) -> None:
    path = tmp_path / "maps.png"
    assert proportion_maps(_summary(columns=6, rows=60, n_configs=16), "strip", path)
    width, height = Image.open(path).size
    bands = _map_bands(16, MAP_SHORT_SIDE_IN * 60 / 6, label_width=1.64)
    assert len(bands) > 1
    assert height >= len(bands) * 3 * MAP_SHORT_SIDE_IN * DPI  # 3 cell-type rows per band, each map that high
    assert width <= MAPS_MAX_WIDTH_IN * DPI  # wrapped, not 17 maps side by side


def test_a_square_grid_of_few_configurations_stays_one_band(tmp_path: Path) -> None:
    path = tmp_path / "maps.png"
    assert proportion_maps(_summary(columns=10, rows=10, n_configs=4), "strip", path)
    width, height = Image.open(path).size
    assert width > height  # one row of 5 maps per cell type


def test_the_title_and_caption_of_a_narrow_figure_stay_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One configuration on a small grid: a figure about 4 inches wide, narrower than the title's one line."""
    import toolkit.report as report

    drawn = []
    monkeypatch.setattr(report, "_save", lambda fig, path: drawn.append(fig))
    assert proportion_maps(_summary(columns=8, rows=8, n_configs=1), "strip", tmp_path / "m.png")
    (fig,) = drawn
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = fig.bbox
    for text in (fig._suptitle, fig._supxlabel):
        box = text.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, text.get_text()


def test_a_batch_label_that_would_touch_its_neighbour_is_left_out_but_its_tick_stays() -> None:
    """starmap-189's `auto` batch is 18, beside 16: the two labels ran together as "1618"."""
    assert _tick_labels([4, 8, 12, 16, 18, 32, 48, 64, 128]) == ["4", "8", "12", "16", "", "32", "48", "64", "128"]
    assert _tick_labels([4, 5, 8, 12, 16, 32]) == ["4", "5", "8", "12", "16", "32"]  # 57 spots: auto is 5
    assert _tick_labels([189.0]) == ["189"]


def test_a_trajectory_line_names_its_swept_settings_in_words() -> None:
    """E6's legend wrote `reference_seed 0`: a setting's name is written with spaces, as the other labels."""
    config = {"batch_size": 16, "amortization": "both", "reference_seed": 0, "drop_last": True}
    assert _line_label(config, ["batch_size", "amortization", "reference_seed", "drop_last"]) == (
        "batch 16, reference seed 0, drop last True"
    )
