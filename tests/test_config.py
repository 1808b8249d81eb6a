"""A sweep file with a mistake stops before anything runs, with one sentence naming file, field and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from toolkit.config import load_sweep, parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.sweep import expand


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_sweep_is_valid_and_has_four_tasks() -> None:
    sweep = load_sweep(REPO / "sweeps" / "demo.yaml")
    tasks = expand(sweep)
    assert len(tasks) == 4
    assert {(t.amortization, t.batch_size) for t in tasks} == {("both", 8), ("both", 64), ("latent", 8), ("latent", 64)}


def test_typo_in_a_key_names_it_and_suggests_the_fix(tmp_path: Path, tiny_sweep_data: dict) -> None:
    tiny_sweep_data["methods"][0]["bath_size"] = tiny_sweep_data["methods"][0].pop("batch_size")
    path = write(tmp_path, tiny_sweep_data)
    with pytest.raises(SpotsweepError) as error:
        load_sweep(path)
    message = str(error.value)
    assert str(path) in message
    assert "methods[0].bath_size" in message
    assert "did you mean 'batch_size'" in message
    assert "\n" not in message


def test_typo_at_top_level(tmp_path: Path, tiny_sweep_data: dict) -> None:
    tiny_sweep_data["dataset"] = tiny_sweep_data.pop("datasets")
    with pytest.raises(SpotsweepError, match=r"unknown key 'dataset'; did you mean 'datasets'"):
        load_sweep(write(tmp_path, tiny_sweep_data))


def test_missing_input_path_is_named(tmp_path: Path, tiny_sweep_data: dict) -> None:
    tiny_sweep_data["datasets"][0] = {
        "name": "real",
        "spatial": str(tmp_path / "nowhere" / "cells.h5ad"),
        "reference": str(tmp_path / "reference.h5ad"),
        "window": 750,
    }
    (tmp_path / "reference.h5ad").touch()
    with pytest.raises(
        SpotsweepError, match=r"datasets\[0\]\.spatial points to '.*nowhere/cells.h5ad', which does not exist"
    ):
        load_sweep(write(tmp_path, tiny_sweep_data))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("amortization", ["both", "lattent"], "amortization 'lattent' is unknown"),
        ("batch_size", [0, 8], "batch_size 0 must be a whole number of at least 1"),
        ("variant", "2021", "variant '2021' is unknown"),
        ("seed", [0, 0], "lists a value twice"),
    ],
)
def test_nonsense_values_are_refused(
    tmp_path: Path, tiny_sweep_data: dict, field: str, value: object, expected: str
) -> None:
    tiny_sweep_data["methods"][0][field] = value
    with pytest.raises(SpotsweepError, match=expected):
        load_sweep(write(tmp_path, tiny_sweep_data))


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: demo\nmethods: [destvi\n")
    with pytest.raises(SpotsweepError, match=r"not valid YAML at line"):
        load_sweep(path)


def test_same_config_same_id_and_a_new_seed_a_new_id(tiny_sweep_data: dict) -> None:
    from toolkit.config import parse_sweep

    first = [t.id for t in expand(parse_sweep(tiny_sweep_data, "a"))]
    again = [t.id for t in expand(parse_sweep(tiny_sweep_data, "b"))]
    tiny_sweep_data["methods"][0]["seed"] = 1
    other = [t.id for t in expand(parse_sweep(tiny_sweep_data, "c"))]
    assert first == again
    assert len(set(first)) == 4
    assert not set(first) & set(other)


def test_units_and_orientation_say_how_to_read_and_never_change_an_id(tiny_sweep_data: dict) -> None:
    from toolkit.config import parse_sweep

    plain = parse_sweep(tiny_sweep_data, "a")
    tiny_sweep_data["datasets"][0].update(units="um", orientation="dorsal at low y")
    described = parse_sweep(tiny_sweep_data, "b")
    assert [t.id for t in expand(plain)] == [t.id for t in expand(described)]
    assert plain.datasets[0].described_axes() == ("px", "cortical depth along y: pia at low y, white matter at high y")
    assert described.datasets[0].described_axes() == ("um", "dorsal at low y")


def test_cli_prints_one_line_and_no_traceback(tmp_path: Path, tiny_sweep_data: dict) -> None:
    tiny_sweep_data["methods"][0]["bath_size"] = 8
    path = write(tmp_path, tiny_sweep_data)
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "run", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("spotsweep: error: ") and "bath_size" in lines[0]
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    ("executor", "sentence"),
    [
        (
            {"kind": "slurm", "profile": "hpc/profiles/local.yaml", "timeout_min": 30},
            "executor.timeout_min (30) is a setting of kind 'local', but executor.kind is 'slurm'; remove it, "
            "or set kind: local.",
        ),
        (
            {"kind": "inline", "container": "image.sif"},
            "executor.container (image.sif) is a setting of kind 'local' (and 'slurm'), but executor.kind is "
            "'inline'; remove it, or set kind: local.",
        ),
        (
            {"kind": "local", "profile": "hpc/profiles/local.yaml"},
            "executor.profile (hpc/profiles/local.yaml) is a setting of kind 'slurm', but executor.kind is 'local'",
        ),
    ],
)
def test_a_setting_of_another_backend_is_one_sentence_naming_it(
    tiny_sweep_data: dict, executor: dict, sentence: str
) -> None:
    """Each backend owns its settings (its `Options` beside its code): the executor block is validated by
    the model its kind names, and a setting that belongs to another backend says which one."""
    tiny_sweep_data["executor"] = executor
    with pytest.raises(SpotsweepError) as caught:
        parse_sweep(tiny_sweep_data, "sweep.yaml")
    assert str(caught.value).startswith(f"sweep.yaml: {sentence}"), caught.value


def test_each_kind_gets_its_backends_options(tiny_sweep_data: dict) -> None:
    from toolkit.backends import BACKENDS, options_model

    for kind in BACKENDS:
        data = {**tiny_sweep_data, "executor": {"kind": kind, **({"profile": "p.yaml"} if kind == "slurm" else {})}}
        sweep = parse_sweep(data, "sweep.yaml")
        assert type(sweep.executor) is options_model(kind)
        assert parse_sweep(sweep.model_dump(mode="json"), "again").executor == sweep.executor  # what a job re-reads
