"""Shared fixtures: paths to ../shared and a tiny but real sweep (real training, real processes)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
STARMAP = SHARED / "data" / "starmap"

TINY_SWEEP: dict[str, Any] = {
    "name": "tiny",
    "output": "unused",
    "datasets": [
        {
            "name": "tiny-tissue",
            "simulate": {
                "preset": "starmap-like",
                "seed": 1,
                "n_spatial_cells": 500,
                "n_reference_cells": 600,
                "n_genes": 60,
            },
        }
    ],
    "methods": [
        {
            "name": "destvi",
            "reference": {"max_epochs": 3, "batch_size": 128, "n_hidden": 16, "n_latent": 3, "n_layers": 1},
            "variant": "2022",
            "amortization": ["both", "latent"],
            "batch_size": [8, 64],
            "max_epochs": 3,
            "n_epochs_kl_warmup": 1,
            "seed": 0,
        }
    ],
    "executor": {"kind": "local", "max_parallel": 2, "timeout_min": 20},
}


@pytest.fixture
def tiny_sweep_data() -> dict[str, Any]:
    """A fresh copy of the tiny sweep mapping, free to modify."""
    return copy.deepcopy(TINY_SWEEP)
