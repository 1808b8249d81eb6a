"""Issue 36: never a silent wrong, stale or lost result (each of these failed before).

- an input replaced at the same path: `run` refuses in one sentence while its finished results stand,
  `--rerun-changed` retrains them into the same folder, `status` names the input;
- a prepared copy under data/ is rebuilt when its source changed (a fixed input is read again);
- an output folder belongs to one sweep: another sweep is refused unless `--merge`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import anndata as ad
import pytest
import xarray as xr

from tests.conftest import TINY_SWEEP
from toolkit.config import parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.fingerprint import fingerprint
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout, read_json
from toolkit.prepare import prepare_dataset
from toolkit.sweep import expand


def _tissue(folder: Path, seed: int, n_reference_cells: int = 300) -> tuple[Path, Path]:
    """A small synthetic tissue as the files a user gives: cells.h5ad and reference.h5ad."""
    from toolkit.data.synthetic import simulate

    folder.mkdir(parents=True, exist_ok=True)
    reference, cells = simulate(
        "starmap-like", seed, n_spatial_cells=400, n_reference_cells=n_reference_cells, n_genes=30
    )
    reference.write_h5ad(folder / "reference.h5ad")
    cells.write_h5ad(folder / "cells.h5ad")
    return folder / "cells.h5ad", folder / "reference.h5ad"


def _sweep(out: Path, cells: Path, reference: Path, name: str = "files") -> dict:
    data = copy.deepcopy(TINY_SWEEP)
    data.update(name=name, output=str(out), methods=[{"name": "control", "kind": ["truth", "nnls"]}])
    data["datasets"] = [{"name": "tissue", "spatial": str(cells), "reference": str(reference), "window": 750}]
    return data


def test_a_replaced_input_is_refused_named_by_status_and_retrained_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_faults import cli

    cells, reference = _tissue(tmp_path / "in", seed=1)
    out = tmp_path / "out"
    data = _sweep(out, cells, reference)
    run_sweep(parse_sweep(data, "t"))
    layout = OutputLayout(out)
    task = expand(parse_sweep(data, "t"))[1]
    first = read_json(layout.result(task.id))
    assert first["inputs"]["reference"]["sha256"] == fingerprint(reference)["sha256"]

    _tissue(tmp_path / "other", seed=2, n_reference_cells=350)
    reference.write_bytes((tmp_path / "other" / "reference.h5ad").read_bytes())  # other data, same path
    with pytest.raises(SpotsweepError, match=r"reference.h5ad: the reference input of dataset 'tissue' changed since "
                       r"2 finished task\(s\) were trained on it .*--rerun-changed.*--out"):  # fmt: skip
        run_sweep(parse_sweep(data, "t"))
    status, printed = cli(["status", str(out)], capsys, monkeypatch)
    assert status == 0 and "input changed:" in printed and "reference.h5ad" in printed

    again = run_sweep(parse_sweep(data, "t"), rerun_changed=True)
    assert again.submitted == 2 and again.states["done"] == 2
    assert list(layout.task_dir(task.id).glob("result.stale-*.json"))  # moved aside, not deleted
    assert read_json(layout.result(task.id))["inputs"]["reference"]["sha256"] == fingerprint(reference)["sha256"]
    assert ad.read_h5ad(layout.reference("tissue")).n_obs == 350  # the prepared copy was rebuilt
    status, printed = cli(["status", str(out)], capsys, monkeypatch)
    assert "input changed" not in printed


def test_a_prepared_copy_is_rebuilt_when_its_source_changed(tmp_path: Path) -> None:
    """After a bad input is fixed, `--retry-failed` must not reuse the copy prepared from the bad one."""
    cells, reference = _tissue(tmp_path / "in", seed=1)
    sweep = parse_sweep(_sweep(tmp_path / "out", cells, reference), "t")
    layout = OutputLayout(tmp_path / "out")
    prepare_dataset(sweep.datasets[0], layout)
    assert ad.read_h5ad(layout.reference("tissue")).n_obs == 300
    _tissue(tmp_path / "in", seed=1, n_reference_cells=320)  # the input, fixed in place
    prepare_dataset(sweep.datasets[0], layout)
    assert ad.read_h5ad(layout.reference("tissue")).n_obs == 320


def test_an_output_folder_belongs_to_one_sweep_unless_merged(tmp_path: Path) -> None:
    cells, reference = _tissue(tmp_path / "in", seed=1)
    out = tmp_path / "out"
    sweep_a = _sweep(out, cells, reference, name="a")
    run_sweep(parse_sweep(sweep_a, "t"))
    sweep_b = _sweep(out, cells, reference, name="b")
    sweep_b["methods"] = [{"name": "control", "kind": ["uniform"]}]
    with pytest.raises(SpotsweepError, match=r"holds the results of sweep 'a', not 'b'; .*--merge"):
        run_sweep(parse_sweep(sweep_b, "t"))
    assert read_json(OutputLayout(out).sweep_file)["name"] == "a"  # untouched
    merged = run_sweep(parse_sweep(sweep_b, "t"), merge=True)
    assert merged.submitted == 1
    assert [s.state for s in sweep_states(out)] == ["done"] * 3  # a's two and b's one
    assert xr.open_dataset(out / "summary.nc", engine="h5netcdf").attrs["n_done"] == 3
    run_sweep(parse_sweep(sweep_a, "t"))  # a again: b's task stays in the folder's record
    assert [s.state for s in sweep_states(out)] == ["done"] * 3


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("X/0.0", r"misses 1 of the \d+ chunks of its array 'X', which would read as zeros"),
        ("obsm/cell_counts/0.0", r"misses 1 of the \d+ chunks of its array 'obsm/cell_counts'"),
        ("X/.zarray", r"has chunks in X but no array metadata \(.zarray\) there"),
    ],
)
def test_a_spot_store_with_a_missing_chunk_or_metadata_is_refused_naming_it(
    tmp_path: Path, damage: str, expected: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spot store with one chunk deleted read as zeros: the task ended "done" with a NaN PCC."""
    import yaml

    from tests.test_faults import cli
    from toolkit.launch import load_sweep

    cells, reference = _tissue(tmp_path / "in", seed=1)
    store = tmp_path / "spots.zarr"
    status, printed = cli(["build", str(cells), "--window", "750", "--out", str(store), "--no-progress"], capsys,
                          monkeypatch)  # fmt: skip
    assert status == 0, printed
    data = _sweep(tmp_path / "out", cells, reference)
    data["datasets"] = [{"name": "tissue", "spots": str(store), "reference": str(reference)}]
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(data))
    load_sweep(sweep_file)  # complete: accepted
    (store / damage).unlink()
    with pytest.raises(SpotsweepError, match=r"datasets\[0\].spots: .*spots.zarr " + expected):
        load_sweep(sweep_file)
    with pytest.raises(SpotsweepError, match=expected):  # and the prepare job, which may run much later
        prepare_dataset(parse_sweep(data, "t").datasets[0], OutputLayout(tmp_path / "out"))


def test_an_undefined_score_is_n_a_with_why_in_the_report_and_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prediction the same in every spot has no PCC: it was averaged as 0 and printed 0.000."""
    import numpy as np
    import pandas as pd

    from tests.test_faults import cli

    cells, reference = _tissue(tmp_path / "in", seed=1)
    data = _sweep(tmp_path / "out", cells, reference)
    data["methods"] = [{"name": "control", "kind": ["truth", "uniform"]}]
    run_sweep(parse_sweep(data, "t"))
    page = (tmp_path / "out" / "report" / "index.md").read_text()
    uniform = next(line for line in page.splitlines() if line.startswith("| control | uniform"))
    assert "| n/a |" in uniform and "0.000" not in uniform
    assert "control uniform: constant prediction: the same in every spot" in page
    assert uniform.split("|")[-3].strip() == "1"  # its seed, scored though undefined
    assert "| n/a |" in (tmp_path / "out" / "report" / "index.html").read_text().replace("<td>n/a</td>", "| n/a |")

    rng = np.random.default_rng(0)
    truth = pd.DataFrame(rng.dirichlet([1, 1, 1], 20), columns=["a", "b", "c"], index=[f"s{i}" for i in range(20)])
    truth.to_csv(tmp_path / "truth.csv")
    constant = pd.DataFrame(1 / 3, index=truth.index, columns=truth.columns)
    constant.to_csv(tmp_path / "constant.csv")
    status, printed = cli(["score", str(tmp_path / "truth.csv"), str(tmp_path / "constant.csv")], capsys, monkeypatch)
    pcc_row = next(line for line in printed.splitlines() if "pcc" in line)
    assert status == 0 and "n/a (constant prediction" in pcc_row and "0.0000" not in pcc_row


# --- every input checked alike --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (float("nan"), r"reference.h5ad: X has missing \(NaN\) or infinite values"),
        (-1.0, r"reference.h5ad: X has negative values \(min -1\)"),
        (0.5, r"reference.h5ad: X has non-integer values \(such as 0.5\)"),
    ],
)
def test_the_reference_counts_are_checked_as_the_spatial_ones(tmp_path: Path, value: float, expected: str) -> None:
    import numpy as np

    cells, reference = _tissue(tmp_path / "in", seed=1)
    bad = ad.read_h5ad(reference)
    bad.X = np.asarray(bad.X.todense() if hasattr(bad.X, "todense") else bad.X, dtype=np.float32)
    bad.X[3, 2] = value
    bad.write_h5ad(reference)
    sweep = parse_sweep(_sweep(tmp_path / "out", cells, reference), "t")
    with pytest.raises(SpotsweepError, match=expected):
        prepare_dataset(sweep.datasets[0], OutputLayout(tmp_path / "out"))


def test_gene_names_given_twice_are_refused_where_the_file_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    import pandas as pd

    from tests.test_faults import cli

    cells, _ = _tissue(tmp_path / "in", seed=1)
    twice = ad.read_h5ad(cells)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's own warning is all there was
        twice.var_names = [*twice.var_names[:-2], twice.var_names[0], twice.var_names[1]]
    twice.write_h5ad(cells)
    status, printed = cli(["build", str(cells), "--window", "750", "--out", str(tmp_path / "s.zarr")], capsys,
                          monkeypatch)  # fmt: skip
    first, second = twice.var_names[0], twice.var_names[1]
    assert status == 2 and f"cells.h5ad: 2 gene names repeat ({first}, {second})" in printed, printed
    assert not (tmp_path / "s.zarr").exists()
    counts = pd.DataFrame([[1, 2, 3]], index=["c1"], columns=["Gad1", "Sst", "Gad1"])
    counts.to_csv(tmp_path / "counts.csv")
    pd.DataFrame({"x": [0.0], "y": [0.0], "cell_type": ["a"]}, index=["c1"]).to_csv(tmp_path / "cells.csv")
    from toolkit.data.readers import read_cells

    with pytest.raises(SpotsweepError, match=r"counts.csv: 1 gene columns repeat \(Gad1\)"):
        read_cells(tmp_path / "counts.csv", cells_table=tmp_path / "cells.csv")


@pytest.mark.parametrize("name", ["..", ".hidden", "-rf", "a/b", "x" * 101])
def test_a_dataset_name_is_a_plain_name(name: str) -> None:
    data = copy.deepcopy(TINY_SWEEP)
    data["datasets"][0]["name"] = name
    with pytest.raises(SpotsweepError, match=r"sweep.yaml: 'datasets\[0\].name' .* is not a plain name"):
        parse_sweep(data, "sweep.yaml")


def test_a_key_given_twice_in_a_sweep_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_faults import cli

    text = Path("sweeps/demo.yaml").read_text()
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(text.replace("executor:\n", "executor:\n  max_parallel: 1\n  max_parallel: 4\n", 1))
    status, printed = cli(["plan", str(sweep)], capsys, monkeypatch)
    assert status == 2 and "the key 'max_parallel' is given twice (line" in printed, printed


def test_score_refuses_negative_proportions_and_repeated_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_faults import cli

    (tmp_path / "truth.csv").write_text("spot,a,b,c\ns1,0.2,0.3,0.5\ns2,0.5,0.5,0\ns3,0.1,0.1,0.8\n")
    (tmp_path / "negative.csv").write_text("spot,a,b,c\ns1,0.2,0.3,0.5\ns2,0.6,0.5,-0.1\ns3,0.1,0.1,0.8\n")
    (tmp_path / "twice.csv").write_text("spot,a,b,a\ns1,0.2,0.3,0.5\ns2,0.5,0.5,0\ns3,0.1,0.1,0.8\n")
    status, printed = cli(["score", str(tmp_path / "truth.csv"), str(tmp_path / "negative.csv")], capsys, monkeypatch)
    assert status == 2 and "negative.csv: the predicted table has 1 negative values (such as -0.1 at spot s2" in printed
    status, printed = cli(["score", str(tmp_path / "truth.csv"), str(tmp_path / "twice.csv")], capsys, monkeypatch)
    assert status == 2 and "twice.csv: the predicted table names column a more than once" in printed, printed


def test_settings_that_do_not_apply_are_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_faults import cli

    args = ["run", "sweeps/demo.yaml", "--executor", "local", "--profile", "hpc/profiles/local.yaml"]
    status, printed = cli([*args, "--out", str(tmp_path / "o")], capsys, monkeypatch)
    assert status == 2 and "is a SLURM cluster profile, but --executor local" in printed, printed
    data = _controls_sweep(tmp_path)
    data["executor"] = {"kind": "local", "profile": "hpc/profiles/local.yaml"}
    with pytest.raises(SpotsweepError, match=r"executor.profile .* but executor.kind is 'local'"):
        run_sweep(parse_sweep(data, "t"))
    data["executor"] = {"kind": "local", "binds": ["/data"]}
    with pytest.raises(SpotsweepError, match=r"executor.binds \(/data\) are for an Apptainer image"):
        run_sweep(parse_sweep(data, "t"))
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()


def _controls_sweep(tmp_path: Path) -> dict:
    data = copy.deepcopy(TINY_SWEEP)
    data.update(output=str(tmp_path / "out"), methods=[{"name": "control", "kind": ["truth"]}])
    return data


# --- never destroy an input -----------------------------------------------------------------------


def test_no_command_writes_over_or_inside_its_own_input(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`spotsweep build CELLS --out CELLS --overwrite` deleted CELLS to write the spots there."""
    from tests.test_faults import cli

    cells, reference = _tissue(tmp_path / "in", seed=1)
    before = cells.read_bytes()
    for out in (cells, tmp_path / "in"):  # the input itself; the folder holding it
        status, printed = cli(["build", str(cells), "--window", "750", "--out", str(out), "--overwrite"], capsys,
                              monkeypatch)  # fmt: skip
        assert status == 2 and "an output never replaces or enters an input" in printed, printed
        assert cells.read_bytes() == before
    store = tmp_path / "spots.zarr"
    built = cli(["build", str(cells), "--window", "750", "--out", str(store), "--no-progress"], capsys, monkeypatch)
    assert built[0] == 0
    inside = store / "again.zarr"
    status, printed = cli(["build", str(store), "--window", "750", "--out", str(inside)], capsys, monkeypatch)
    assert status == 2 and "--out lies inside the input" in printed and not inside.exists()

    truth = tmp_path / "scores" / "per_cell_type.csv"  # named as score's own output
    truth.parent.mkdir()
    truth.write_text("spot,a,b\ns1,0.2,0.8\ns2,0.5,0.5\ns3,0.9,0.1\n")
    status, printed = cli(["score", str(truth), str(truth), "--out", str(truth.parent)], capsys, monkeypatch)
    assert status == 2 and "--out is the input" in printed and truth.read_text().startswith("spot,a,b")

    data = _sweep(store / "results", cells, reference)  # a sweep's output inside a spot store it reads
    data["datasets"] = [{"name": "tissue", "spots": str(store), "reference": str(reference)}]
    with pytest.raises(SpotsweepError, match=r"the output \(--out\) lies inside the input"):
        run_sweep(parse_sweep(data, "t"))


# --- no traceback left ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Small file systems (tmpfs of the size asked for; root only, as in CI): a full disk, for real."""
    import subprocess

    mounts: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
        mounts.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in mounts:
            subprocess.run(["umount", str(folder)], check=False)


def _fill(disk: Path) -> None:
    """Fill the disk to its last byte."""
    try:
        with open(disk / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass


def test_a_full_disk_is_one_sentence_and_leaves_nothing_half_written(
    small_disk: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from tests.test_faults import cli

    cells, reference = _tissue(tmp_path / "in", seed=1)
    disk = small_disk("300k")
    status, printed = cli(["build", str(cells), "--window", "100", "--out", str(disk / "spots.zarr"),
                           "--no-progress"], capsys, monkeypatch)  # fmt: skip
    assert status == 2 and "spots.zarr: no space left on its device" in printed, printed
    assert "Traceback" not in printed and list(disk.iterdir()) == []
    small_disk = small_disk("128m")

    out = tmp_path / "out"  # a finished sweep, copied onto the small disk, which then fills up
    run_sweep(parse_sweep(_sweep(out, cells, reference), "t"))
    shutil.copytree(out, small_disk / "out", ignore=shutil.ignore_patterns("summary.zarr", "logs", "report"))
    _fill(small_disk)
    summary = (small_disk / "out" / "summary.nc").read_bytes()
    status, printed = cli(["aggregate", str(small_disk / "out")], capsys, monkeypatch)
    assert status == 2 and "no space left on its device" in printed and "Traceback" not in printed, printed
    assert (small_disk / "out" / "summary.nc").read_bytes() == summary  # the old one stands, whole
    status, printed = cli(["report", str(small_disk / "out")], capsys, monkeypatch)
    assert status == 2 and "report" in printed and "no space left" in printed and "Traceback" not in printed
    assert not [p for p in (small_disk / "out").rglob("*.tmp")]


def test_an_empty_or_corrupt_summary_given_to_report_says_run_aggregate(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_faults import cli

    cells, reference = _tissue(tmp_path / "in", seed=1)
    out = tmp_path / "out"
    run_sweep(parse_sweep(_sweep(out, cells, reference), "t"))
    whole = (out / "summary.nc").read_bytes()
    for broken in (b"", whole[: len(whole) // 2], b"CDF\x01 not a summary"):
        (out / "summary.nc").write_bytes(broken)
        status, printed = cli(["report", str(out)], capsys, monkeypatch)
        assert status == 2 and "summary.nc: cannot be read as a sweep summary" in printed, printed
        assert f"run `spotsweep aggregate {out}`" in printed and "Traceback" not in printed


def test_an_h5ad_whose_obs_has_no_columns_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import pandas as pd

    from tests.test_faults import cli

    bare = ad.AnnData(X=np.ones((20, 4), np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(20)]))
    bare.obsm["spatial"] = np.random.default_rng(0).random((20, 2)) * 1000
    bare.write_h5ad(tmp_path / "bare.h5ad")
    status, printed = cli(["build", str(tmp_path / "bare.h5ad"), "--window", "100", "--out", str(tmp_path / "s.zarr")],
                          capsys, monkeypatch)  # fmt: skip
    assert status == 2 and "bare.h5ad: obs has no cell-type column 'cell_type' (it has no columns at all)" in printed


# --- the newcomer's path --------------------------------------------------------------------------


def _cost_figures(text: str) -> dict[str, str | None]:
    """Tasks, steps, CPU and GPU hours and unmeasured tasks, as plan's last line or a Cost comment words them."""
    import re

    def first(pattern: str) -> str | None:
        found = re.search(pattern, text)
        return found.group(1).replace(",", "") if found else None

    return {
        "tasks": first(r"(\d[\d,]*) tasks\b"),
        "steps": first(r"(\d[\d,]*) optimizer steps"),
        "CPU hours": first(r"about ([\d.]+) CPU hours"),
        "unmeasured": first(r"plus (\d+) tasks without a measured figure"),
        "GPU hours": first(r"about ([\d.]+) GPU hours"),
    }


@pytest.mark.parametrize("sweep", sorted(p.name for p in (Path(__file__).parents[1] / "sweeps").glob("*.yaml")))
def test_each_sweep_files_cost_comment_is_what_plan_says(
    sweep: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comments said 2.7 h where plan said 2.2, or "see the plan's last line": a newcomer reads the comment."""
    from tests.conftest import REPO, STARMAP
    from tests.test_faults import cli

    path = REPO / "sweeps" / sweep
    if "shared/data/starmap" in path.read_text() and not STARMAP.exists():
        pytest.skip(f"{sweep} reads {STARMAP}, which is not here")
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("# Cost (`spotsweep plan")), None)
    assert start is not None, f"sweeps/{sweep} has no '# Cost (`spotsweep plan sweeps/{sweep}`): ...' comment"
    assert f"`spotsweep plan sweeps/{sweep}`" in lines[start]
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line.lstrip("#").strip())
    monkeypatch.chdir(REPO)
    status, printed = cli(["plan", f"sweeps/{sweep}", "--out", str(tmp_path / "out")], capsys, monkeypatch)
    assert status == 0, printed
    last = next(line for line in reversed(printed.splitlines()) if "optimizer steps" in line)
    said, planned = _cost_figures(" ".join(block)), _cost_figures(last)
    assert said == planned, f"sweeps/{sweep}: its Cost comment says {said}; `spotsweep plan` says {planned}: {last}"
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep's sweep file (two controls on a small tissue), run once by `spotsweep run` for the
    tests below; its output folder is OUT beside it."""
    import subprocess
    import sys

    import yaml

    base = tmp_path_factory.mktemp("finished")
    cells, reference = _tissue(base / "in", seed=1)
    sweep = base / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(_sweep(base / "out", cells, reference)))
    done = subprocess.run([sys.executable, "-m", "toolkit", "run", str(sweep)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (base / "run.log").write_text(done.stdout)
    return sweep


def test_report_and_run_print_the_html_pages_path(
    finished: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page to open is index.html (figures inside); report printed only index.md's path."""
    from tests.test_faults import cli

    page = finished.parent / "out" / "report" / "index.html"
    assert f"report: {page}" in (finished.parent / "run.log").read_text().replace("\n", "")
    status, printed = cli(["report", str(finished.parent / "out")], capsys, monkeypatch)
    assert status == 0 and str(page) in printed.replace("\n", "") and page.exists(), printed


# --- beyond the named cases: the same classes elsewhere ------------------------------------------


def test_overwrite_replaces_a_store_never_another_folder_or_file(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`export ... --to FOLDER --overwrite` deleted FOLDER and everything in it (so did `build --out`)."""
    from tests.test_faults import cli

    out = finished.parent / "out"
    task = next(state.task.id for state in sweep_states(out) if state.state == "done")
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "thesis.txt").write_text("years of work")
    (tmp_path / "table.csv").write_text("a,b\n")
    for target, what in ((mine, "a folder that is no Zarr store"), (tmp_path / "table.csv", "a file, not a Zarr")):
        status, printed = cli(["export", str(out), task, "--to", str(target), "--overwrite"], capsys, monkeypatch)
        assert status == 2 and f"--to is {what}" in printed, printed
        cells = str(finished.parent / "in" / "cells.h5ad")
        status, printed = cli(["build", cells, "--window", "750", "--out", str(target), "--overwrite"], capsys,
                              monkeypatch)  # fmt: skip
        assert status == 2 and f"--out is {what}" in printed, printed
    assert (mine / "notes" / "thesis.txt").read_text() == "years of work"
    assert (tmp_path / "table.csv").read_text() == "a,b\n"
    store = tmp_path / "task.zarr"  # a store is still replaced when asked
    for _ in range(2):
        status, printed = cli(["export", str(out), task, "--to", str(store), "--overwrite"], capsys, monkeypatch)
        assert status == 0, printed


def test_simulate_never_replaces_files_already_in_its_folder_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`simulate --out DATA` wrote over DATA/cells.h5ad and DATA/reference.h5ad, a user's own files by those names."""
    from tests.test_faults import cli

    (tmp_path / "cells.h5ad").write_bytes(b"a user's own cells")
    small = ["--n-spatial-cells", "60", "--n-reference-cells", "60", "--n-genes", "12"]
    status, printed = cli(["simulate", "--out", str(tmp_path), *small], capsys, monkeypatch)
    assert status == 2 and "cells.h5ad: already exists, and simulate would replace it" in printed, printed
    assert (tmp_path / "cells.h5ad").read_bytes() == b"a user's own cells" and not (
        tmp_path / "reference.h5ad"
    ).exists()
    status, printed = cli(["simulate", "--out", str(tmp_path), *small, "--overwrite"], capsys, monkeypatch)
    assert status == 0 and ad.read_h5ad(tmp_path / "cells.h5ad").n_obs == 60, printed


def test_a_spot_store_given_as_cells_or_reference_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given as `reference:`, plan accepted a spot store and the prepare job failed on it, advising a CLI option;
    given a cells file, `spots:` advised building the store over that very file."""
    import yaml

    from tests.test_faults import cli

    cells, reference = _tissue(tmp_path / "in", seed=1)
    store = tmp_path / "spots.zarr"
    built = cli(["build", str(cells), "--window", "750", "--out", str(store), "--no-progress"], capsys, monkeypatch)
    assert built[0] == 0, built[1]
    cases = [
        ({"spatial": str(store), "reference": str(reference), "window": 750}, "datasets[0].spatial", "give it as"),
        ({"spatial": str(cells), "reference": str(store), "window": 750}, "datasets[0].reference", "a reference is"),
    ]
    for given, where, fix in cases:
        data = _sweep(tmp_path / "out", cells, reference)
        data["datasets"] = [{"name": "tissue", **given}]
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
        for command in ("plan", "run"):
            status, printed = cli([command, str(tmp_path / "sweep.yaml")], capsys, monkeypatch)
            assert status == 2 and f"{where} points to '{store}', a pseudospot store" in printed and fix in printed
    assert not (tmp_path / "out").exists()
    data["datasets"] = [{"name": "tissue", "spots": str(cells), "reference": str(reference)}]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    status, printed = cli(["plan", str(tmp_path / "sweep.yaml")], capsys, monkeypatch)
    assert status == 2 and "which is not a pseudospot store" in printed and f"--out {cells}" not in printed, printed


def test_ctrl_c_is_one_sentence_and_leaves_the_summary_whole(finished: Path, tmp_path: Path) -> None:
    """Ctrl-C in aggregate (or any command) ended in silence with status 130, or in a traceback while the CLI
    started; a real SIGINT, sent while aggregate waits its turn behind another aggregation."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from filelock import FileLock

    out = tmp_path / "out"
    shutil.copytree(finished.parent / "out", out)
    before = (out / "summary.nc").read_bytes()
    with FileLock(str(out / ".aggregate.lock")):  # another aggregation holds the folder: this one waits
        aggregate = subprocess.Popen([sys.executable, "-m", "toolkit", "aggregate", str(out)], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        deadline = time.monotonic() + 600
        while not _waits_at_the_lock(aggregate.pid):  # inside the command, held at the folder's lock
            assert time.monotonic() < deadline and aggregate.poll() is None, aggregate.communicate()
            time.sleep(0.2)
        aggregate.send_signal(signal.SIGINT)
        printed, errors = aggregate.communicate(timeout=600)
    assert aggregate.returncode == 130, (printed, errors)
    assert "spotsweep: interrupted (Ctrl-C): nothing it writes is left half-written" in errors, errors
    assert "Traceback" not in errors + printed
    assert (out / "summary.nc").read_bytes() == before and not list(out.rglob("*.tmp"))


def _waits_at_the_lock(pid: int) -> bool:
    """Whether the process's main thread sleeps between FileLock's tries: its imports done (libhdf5 loaded)
    and it blocked in nanosleep or clock_nanosleep (x86-64: 35, 230; aarch64: 101, 115), which the imports never do.
    Which libraries are loaded alone says little: that depends on the import order, and a Ctrl-C while the
    command still imports is another case."""
    try:
        number = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):  # no /proc/PID/syscall here: the imports' end is the best sign left
        return _has_loaded(pid, "libhdf5")
    return number in ("35", "230", "101", "115") and _has_loaded(pid, "libhdf5")  # x86-64, then aarch64


def _has_loaded(pid: int, library: str) -> bool:
    """Whether the process has mapped a shared library whose name holds `library`."""
    import contextlib

    import psutil

    with contextlib.suppress(psutil.Error):
        return any(library in region.path for region in psutil.Process(pid).memory_maps())
    return False


def test_score_of_a_table_with_a_header_and_no_rows_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header-only table was refused as "column a holds text, not numbers": the fix it named was wrong."""
    from tests.test_faults import cli

    (tmp_path / "truth.csv").write_text("spot,a,b,c\ns1,0.2,0.3,0.5\ns2,0.5,0.5,0\ns3,0.1,0.1,0.8\n")
    (tmp_path / "empty.csv").write_text("spot,a,b,c\n")
    for args in (["truth.csv", "empty.csv"], ["empty.csv", "truth.csv"]):
        status, printed = cli(["score", *(str(tmp_path / name) for name in args)], capsys, monkeypatch)
        assert status == 2 and "empty.csv: the" in printed and "table has a header but no rows" in printed, printed


def test_a_reference_that_cannot_be_opened_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan opened the spatial cells but never the reference: an empty reference.h5ad, or a counts CSV
    without its cell table, passed plan, and run claimed the output folder before its prepare failed."""
    import yaml

    from tests.test_faults import cli

    cells, _ = _tissue(tmp_path / "in", seed=1)
    (tmp_path / "empty.h5ad").write_bytes(b"")
    (tmp_path / "counts.csv").write_text("cell,Gad1\nc1,3\n")
    cases = [
        (tmp_path / "empty.h5ad", "empty.h5ad: cannot open the AnnData store"),
        (tmp_path / "counts.csv", "counts.csv: a counts table needs the cell table"),
    ]
    for given, expected in cases:
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(_sweep(tmp_path / "out", cells, given)))
        for command in ("plan", "run"):
            status, printed = cli([command, str(tmp_path / "sweep.yaml")], capsys, monkeypatch)
            assert status == 2 and f"datasets[0].reference: {tmp_path / expected}" in printed, printed
    assert not (tmp_path / "out").exists()
