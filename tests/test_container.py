"""The Apptainer image: the command jobs run with, and a real image built from containers/Apptainer.def.

The first group needs nothing: the command line, binds, digest cache and the def file's build arguments.
The second group builds (or reuses the cached) image with hpc/apptainer/build.sh --base local, runs its
%test, and runs a small sweep whose tasks execute inside it, then checks they really did: the interpreter,
the toolkit and the Python version are the image's, and the results record the image and its digest.

In CI (CI=true) the second group must run: Apptainer is installed (hpc/apptainer/install.sh, as root)
and the image built if needed, or the tests fail with the reason. Elsewhere they run when the image is
already built and up to date, and skip otherwise with how to enable them.
GPU: `--nv` is a no-op without an NVIDIA driver, so nothing here checks CUDA inside the image; on a GPU
node run `SPOTSWEEP_REQUIRE_GPU=1 apptainer test --nv IMAGE` (the %test then fits on the GPU).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import submitit
import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.slurm_cluster import slurm_cluster  # noqa: F401  (the SLURM variant's cluster)
from toolkit import provenance
from toolkit.backends import apptainer as container
from toolkit.config import load_sweep, parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.launch import run_sweep
from toolkit.layout import OutputLayout, read_json
from toolkit.sweep import expand

DEF_FILE = REPO / "containers" / "Apptainer.def"
BUILD = REPO / "hpc" / "apptainer" / "build.sh"
INSTALL = REPO / "hpc" / "apptainer" / "install.sh"
ENABLE = "run `hpc/apptainer/install.sh && make image IMAGE_BASE=local` (or set CI=true to build it here)"
IN_IMAGE_PYTHON = "/opt/spotsweep/venv/bin/python3"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


# ---------------------------------------------------------------------------------------------------
# Without apptainer


@pytest.fixture
def fake_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPOTSWEEP_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "img.sif"
    image.write_bytes(b"not really an image" * 1000)
    return image


def test_python_command_runs_the_image_python_isolated_with_binds_and_digest(fake_image: Path, tmp_path: Path) -> None:
    command = shlex.split(container.python_command(fake_image, [tmp_path / "out", "/data:/in", "/data:/in"]))
    digest = "sha256:" + hashlib.sha256(fake_image.read_bytes()).hexdigest()
    assert command == [
        "apptainer", "exec", "--nv",
        "--bind", str(tmp_path / "out"), "--bind", "/data:/in",
        "--env", f"{provenance.DIGEST_ENV}={digest}",
        str(fake_image), "python3", "-I",
    ]  # fmt: skip


def test_python_command_adds_slurm_binds_on_request(fake_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        container, "slurm_binds", lambda image: ["/usr/bin/scontrol:/usr/local/bin/scontrol", "/etc/slurm"]
    )
    command = shlex.split(container.python_command(fake_image, ["/r"], slurm=True, digest=False))
    assert command[3:9] == [
        "--bind",
        "/r",
        "--bind",
        "/usr/bin/scontrol:/usr/local/bin/scontrol",
        "--bind",
        "/etc/slurm",
    ]
    assert "--env" not in command


def test_missing_image_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(SpotsweepError, match=r"no such container image; build it with `make image`"):
        container.python_command(tmp_path / "absent.sif", [])


def test_image_digest_is_cached_by_path_size_and_mtime(fake_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = container.image_digest(fake_image)
    assert first == "sha256:" + hashlib.sha256(fake_image.read_bytes()).hexdigest()
    calls = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda *a: calls.append(1) or real(*a))
    assert container.image_digest(fake_image) == first and calls == []  # from the cache
    fake_image.write_bytes(b"rebuilt")
    os.utime(fake_image, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert container.image_digest(fake_image) == "sha256:" + hashlib.sha256(b"rebuilt").hexdigest()
    assert calls == [1]


def test_job_binds_checks_hosts_and_adds_input_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    binds = container.job_binds(tmp_path / "out", [f"{data}:/data", str(data)], inputs=[data / "x.h5ad", None])
    assert binds == [str((tmp_path / "out").resolve()), f"{data}:/data", str(data)]
    with pytest.raises(SpotsweepError, match=r"does not exist on this machine; fix executor\.binds"):
        container.job_binds(tmp_path / "out", [str(tmp_path / "nowhere")])


def test_slurm_binds_are_existing_host_paths_and_never_glibc() -> None:
    binds = container.slurm_binds()
    assert all(Path(spec.split(":")[0]).exists() for spec in binds)
    assert not any(re.search(r"/(libc|libm|ld-linux[^/]*)\.so", spec) for spec in binds)
    if binds:  # scontrol is installed here: it goes on the image's PATH
        assert any(spec.endswith(":/usr/local/bin/scontrol") for spec in binds)


def test_runtime_info_is_none_on_the_host_and_reads_the_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    assert provenance.container_runtime() is None
    assert provenance.runtime_facts()["image"] is None
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/x.sif")
    monkeypatch.setenv(provenance.DIGEST_ENV, "sha256:abc")
    info = provenance.container_runtime()
    assert info is not None and info["image"] == "/images/x.sif" and info["sha256"] == "sha256:abc"


def test_def_file_defaults_every_build_argument_and_has_the_sections() -> None:
    text = DEF_FILE.read_text()
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text))
    arguments = re.split(r"^%arguments\b", text, flags=re.MULTILINE)[1].split("\n%", 1)[0]
    defaults = dict(line.strip().split("=", 1) for line in arguments.splitlines() if "=" in line)
    assert used <= set(defaults), f"build args without a default: {used - set(defaults)}"
    assert defaults["BOOTSTRAP"] == "docker" and "cuda" in defaults["BASE"]  # clusters get CUDA by default
    for section in ("%files", "%labels", "%environment", "%post", "%runscript", "%test", "%help"):
        assert re.search(rf"^{section}\b", text, re.MULTILINE), section
    assert 'exec spotsweep "$@"' in text.split("%runscript", 1)[1]


def test_build_script_help_and_syntax() -> None:
    for script in (BUILD, INSTALL):
        subprocess.run(["bash", "-n", str(script)], check=True)
    done = subprocess.run([str(BUILD), "--help"], capture_output=True, text=True, check=True)
    assert "--base cuda" in done.stdout and "--base local" in done.stdout


# ---------------------------------------------------------------------------------------------------
# With apptainer and a real image


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"the container tests must run in CI but {reason}", pytrace=False)
    pytest.skip(f"container tests skipped: {reason}; {ENABLE}")


def _run(command: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    return " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])


@pytest.fixture(scope="module")
def image() -> Path:
    """The image of this checkout: built (CI) or found in the cache (elsewhere)."""
    if container.apptainer_version() is None:
        if not _in_ci():
            _unavailable("apptainer is not installed")
        if os.geteuid() != 0:
            _unavailable("apptainer is not installed and installing it needs root")
        done = _run([str(INSTALL)], timeout=900)
        if done.returncode != 0:
            _unavailable(f"hpc/apptainer/install.sh failed (exit {done.returncode}): {_tail(done)}")
    if not _in_ci():
        done = _run([str(BUILD), "--base", "local", "--check"], timeout=300)
        if done.returncode != 0:
            _unavailable("the image of this checkout is not built yet")
    else:
        # --notest: the image's %test (imports the stack, fits a tiny model) runs once, in
        # test_image_test_section_passes, not also inside the build
        done = _run([str(BUILD), "--base", "local", "--notest"], timeout=1800)
        if done.returncode != 0:
            _unavailable(f"hpc/apptainer/build.sh --base local failed (exit {done.returncode}): {_tail(done)}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def labels(image: Path) -> dict[str, str]:
    return container.image_labels(image)


def test_image_test_section_passes(image: Path) -> None:
    done = _run(["apptainer", "test", str(image)], timeout=600)
    assert done.returncode == 0, _tail(done)
    assert "spotsweep image OK" in done.stdout


def test_image_labels_name_this_toolkit_and_its_pins(labels: dict[str, str]) -> None:
    import toolkit

    assert labels["spotsweep.version"] == toolkit.__version__
    assert re.fullmatch(r"[0-9a-f]{64}", labels["spotsweep.inputs-sha256"])
    lock = (REPO / "hpc" / "apptainer" / "requirements.lock").read_text()
    for name in ("torch", "scvi-tools", "submitit"):
        assert f"{name}=={labels[f'spotsweep.{name}'].split('+')[0]}" in lock


def test_runscript_is_the_cli(image: Path) -> None:
    done = _run(["apptainer", "run", str(image), "--help"], timeout=300)
    assert done.returncode == 0, _tail(done)
    assert "Usage" in done.stdout and "run" in done.stdout


def test_a_job_runs_the_image_python_and_toolkit_even_from_the_checkout(image: Path, tmp_path: Path) -> None:
    """The exact command the launcher uses, from the repository root, with the host's PYTHONPATH set."""
    executor = submitit.LocalExecutor(
        folder=tmp_path / "logs", python=container.python_command(image, container.job_binds(tmp_path, []))
    )
    executor.update_parameters(timeout_min=10)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO)  # must not leak into the image
    try:
        facts = executor.submit(provenance.runtime_facts).result()
        info = executor.submit(provenance.container_runtime).result()
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous
    assert facts["image"] == str(image)
    assert facts["python"] == IN_IMAGE_PYTHON
    assert facts["toolkit"].startswith("/opt/spotsweep/venv/"), facts["toolkit"]
    assert facts["labels_in_image"] is True
    assert info is not None and info["sha256"] == container.image_digest(image)
    assert info["labels"]["spotsweep.inputs-sha256"]


def _container_sweep(tmp_path: Path, image: Path, executor: str) -> dict[str, Any]:
    data = copy.deepcopy(TINY_SWEEP)
    data["name"] = f"container-{executor}"
    data["methods"][0]["amortization"] = "both"  # two tasks: batch sizes 8 and 64
    if executor == "local":
        data["executor"] = {"kind": "local", "max_parallel": 2, "timeout_min": 20, "container": str(image)}
    else:
        profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
        profile["container"] = str(image)
        (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
        data["executor"] = {"kind": "slurm", "profile": str(tmp_path / "profile.yaml")}
    return data


@pytest.mark.parametrize(
    "executor",
    [
        "local",
        pytest.param(
            "slurm",
            marks=pytest.mark.skipif(
                os.environ.get("SPOTSWEEP_TEST_CONTAINER_SLURM") != "1",
                reason="the SLURM variant runs with SPOTSWEEP_TEST_CONTAINER_SLURM=1 (hpc/slurm harness)",
            ),
        ),
    ],
)
def test_sweep_tasks_run_inside_the_image(
    image: Path, labels: dict[str, str], executor: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if executor == "slurm":
        request.getfixturevalue("slurm_cluster")
    sweep = parse_sweep(_container_sweep(tmp_path, image, executor), "container")
    summary = run_sweep(sweep, tmp_path / "out", report=False)
    assert summary.states["done"] == 2, summary.states
    layout = OutputLayout(tmp_path / "out")
    for task in expand(sweep):
        provenance = read_json(layout.result(task.id))["provenance"]
        assert provenance["container_image"] == str(image)
        # The task's interpreter and libraries were the image's, whatever the host runs.
        assert provenance["versions"]["python"] == labels["spotsweep.python"]
        assert provenance["versions"]["torch"] == labels["spotsweep.torch"]
        if "container" in provenance:  # once toolkit.provenance records provenance.container_runtime()
            assert provenance["container"]["sha256"] == container.image_digest(image)


@pytest.mark.skipif(
    os.environ.get("SPOTSWEEP_TEST_CONTAINER_SLURM") != "1",
    reason="runs with SPOTSWEEP_TEST_CONTAINER_SLURM=1 (hpc/slurm harness)",
)
@pytest.mark.usefixtures("slurm_cluster")
def test_preempted_task_inside_the_image_requeues_and_resumes(image: Path, tmp_path: Path) -> None:
    """submitit's preemption (SIGTERM then USR2) reaches the task inside `apptainer exec`: it saves at the
    end of its epoch, SLURM requeues the same array element, and the image's python resumes from there."""
    from toolkit.backends.checkpointed import read_attempts
    from toolkit.backends.slurm import records as slurm
    from toolkit.backends.slurm.submit import wait_for
    from toolkit.engines import checkpoint

    data = _container_sweep(tmp_path, image, "slurm")
    profile = yaml.safe_load((tmp_path / "profile.yaml").read_text())
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump({**profile, "checkpoint_every_epochs": 5}))
    data["methods"][0].update(batch_size=8, max_epochs=300, seed=0)  # preempted at epoch 5: far from its end
    sweep = parse_sweep(data, "container-preemption")
    run_sweep(sweep, tmp_path / "out", wait=False)
    layout = OutputLayout(tmp_path / "out")
    (task,) = expand(sweep)
    submission = slurm.read_submissions(layout)[-1]
    element = submission.elements[task.id]
    saved = layout.task_dir(task.id) / "checkpoint" / checkpoint.FAST_CHECKPOINT_NAME
    deadline = time.monotonic() + 600
    while not saved.exists():
        assert not layout.result(task.id).exists(), "the task finished before it could be preempted"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    submitit.SlurmJob(folder=submission.folder, job_id=element)._interrupt()
    wait_for(layout, [task], submission, progress=False)

    first, last = read_attempts(layout, task.id)
    assert (first["outcome"], last["outcome"]) == ("requeued", "done")
    assert first["job"] == last["job"] == element
    assert last["resumed_from_epoch"] == first["checkpoint_epoch"] >= 5
    result = read_json(layout.result(task.id))
    assert result["provenance"]["container_image"] == str(image)
    assert result["n_steps"] == 300 * math.ceil(len(result["proportions"]["index"]) / 8)  # no epoch run twice


@pytest.mark.skipif(
    os.environ.get("SPOTSWEEP_TEST_CONTAINER_SLURM") != "1",
    reason="runs with SPOTSWEEP_TEST_CONTAINER_SLURM=1 (hpc/slurm harness)",
)
@pytest.mark.usefixtures("slurm_cluster")
def test_a_tune_trial_inside_the_image_is_preempted_requeued_and_completes(image: Path, tmp_path: Path) -> None:
    """`spotsweep tune --container` on SLURM: the trial's array task runs the image's python; preempted
    part way, it is requeued and resumed while the tuner waits, and the trial ends complete (not failed,
    not pruned), scored on the whole run, with no epoch trained twice."""
    import threading

    from toolkit.backends.checkpointed import read_attempts
    from toolkit.backends.slurm import records as slurm
    from toolkit.engines import checkpoint
    from toolkit.tune.loop import tune
    from toolkit.tune.study import load_study, open_study

    data = _container_sweep(tmp_path, image, "slurm")
    profile = yaml.safe_load((tmp_path / "profile.yaml").read_text())
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump({**profile, "checkpoint_every_epochs": 5}))
    search = {"batch_size": {"low": 4, "high": 64, "log": True}, "pruner": "none"}
    data["methods"][0].update(batch_size=8, max_epochs=300, seed=0, trajectory_points=5, search=search)
    data["output"] = str(tmp_path / "out")
    sweep = parse_sweep(data, "container-tune")
    layout = OutputLayout(tmp_path / "out")
    open_study(layout, sweep.name, sweep.methods[0].search).enqueue_trial({"batch_size": 8})

    preempted: list[str] = []

    def preempt_once_saved() -> None:  # as SLURM's preemption would, from beside the tuner
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not preempted:
            for submission in slurm.read_submissions(layout) if (layout.root / "slurm").exists() else []:
                for task_id, element in submission.elements.items():
                    if (layout.task_dir(task_id) / "checkpoint" / checkpoint.FAST_CHECKPOINT_NAME).exists():
                        submitit.SlurmJob(folder=submission.folder, job_id=element)._interrupt()
                        preempted.append(task_id)
            time.sleep(0.2)

    preempter = threading.Thread(target=preempt_once_saved, daemon=True)
    preempter.start()
    tune(sweep, "container-tune", trials=1, report=False)
    preempter.join(timeout=60)
    assert preempted, "the trial's task was never preempted"

    (trial,) = load_study(layout).get_trials(deepcopy=False)
    assert trial.state.name == "COMPLETE" and trial.value is not None
    (task_id,) = preempted
    first, last = read_attempts(layout, task_id)
    assert (first["outcome"], last["outcome"]) == ("requeued", "done")
    assert last["resumed_from_epoch"] == first["checkpoint_epoch"] >= 5
    result = read_json(layout.result(task_id))
    assert result["provenance"]["container_image"] == str(image)
    assert result["n_steps"] == 300 * math.ceil(len(result["proportions"]["index"]) / 8)  # no epoch run twice
    best = load_sweep(layout.root / "tune" / "best.yaml")  # the confirmation runs where the tune ran
    assert best.executor.kind == "slurm" and Path(best.executor.profile) == tmp_path / "profile.yaml"
