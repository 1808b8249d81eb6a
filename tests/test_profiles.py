"""Cluster profiles: the shipped ones are valid, and every mistake is one sentence naming file, key and fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO, TINY_SWEEP
from toolkit.backends.slurm.profile import load_profile, parse_profile
from toolkit.cli import app
from toolkit.config import parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.launch import with_executor

PROFILES = sorted((REPO / "hpc" / "profiles").glob("*.yaml"))


def _profile(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_shipped_profiles_are_valid(path: Path) -> None:
    profile = load_profile(path)
    assert profile.gpus_per_task >= 1


def test_there_is_a_gpu_cluster_example_and_a_local_test_cluster_profile() -> None:
    assert {p.name for p in PROFILES} >= {"gpu-cluster.yaml", "local.yaml"}
    local = load_profile(REPO / "hpc" / "profiles" / "local.yaml")
    assert local.partition == "debug" and local.cpus_per_task == 1 and local.array_parallelism == 2


def test_unknown_key_names_file_key_and_the_likely_fix(tmp_path: Path) -> None:
    path = _profile(tmp_path, {"partition": "gpu", "gpus_per_taks": 1})
    with pytest.raises(SpotsweepError) as error:
        load_profile(path)
    message = str(error.value)
    assert message.startswith(str(path)) and "gpus_per_taks" in message and "did you mean 'gpus_per_task'" in message
    assert message.count(".") >= 1 and "\n" not in message


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(SpotsweepError, match=r"cluster\.yaml: 'time_min'"):
        load_profile(_profile(tmp_path, {"time_min": 0}))


def test_options_the_launcher_sets_cannot_be_overridden(tmp_path: Path) -> None:
    with pytest.raises(SpotsweepError, match="'sbatch' sets array, which the launcher sets itself; remove it"):
        load_profile(_profile(tmp_path, {"sbatch": {"array": "0-3"}}))


def test_missing_profile_and_missing_container_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(SpotsweepError, match="no such cluster profile"):
        load_profile(tmp_path / "absent.yaml")
    with pytest.raises(SpotsweepError, match="container points to"):
        load_profile(_profile(tmp_path, {"container": str(tmp_path / "absent.sif")}))


def test_not_a_mapping() -> None:
    with pytest.raises(SpotsweepError, match="must be a YAML mapping"):
        parse_profile(["partition"], "list.yaml")


def test_slurm_executor_needs_a_profile() -> None:
    data = copy.deepcopy(TINY_SWEEP)
    data["executor"] = {"kind": "slurm"}
    with pytest.raises(SpotsweepError, match="'executor' kind 'slurm' needs a cluster profile"):
        parse_sweep(data, "sweep.yaml")
    sweep = parse_sweep(TINY_SWEEP, "sweep.yaml")
    with pytest.raises(SpotsweepError, match="--executor slurm needs a cluster profile"):
        with_executor(sweep, "slurm", None)
    with pytest.raises(SpotsweepError, match="--executor 'pbs' is unknown"):
        with_executor(sweep, "pbs", None)


def test_command_line_profile_selects_slurm(tmp_path: Path) -> None:
    sweep = with_executor(parse_sweep(TINY_SWEEP, "sweep.yaml"), None, REPO / "hpc" / "profiles" / "local.yaml")
    assert sweep.executor.kind == "slurm" and sweep.executor.profile.name == "local.yaml"
    assert sweep.executor.max_parallel == TINY_SWEEP["executor"]["max_parallel"]  # the rest is kept


def test_cli_reports_a_bad_profile_in_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    data = copy.deepcopy(TINY_SWEEP)
    data["output"] = str(tmp_path / "out")
    sweep.write_text(yaml.safe_dump(data))
    profile = _profile(tmp_path, {"gpu": 1})
    result = CliRunner().invoke(app, ["run", str(sweep), "--profile", str(profile)], standalone_mode=False)
    assert isinstance(result.exception, SpotsweepError)
    assert "unknown key 'gpu'" in str(result.exception)
    assert not (tmp_path / "out").exists()  # stopped before anything ran
