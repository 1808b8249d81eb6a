"""The study's findings table is recomputable: findings.py reads the committed summary.nc files and its
output is exactly the table in results/study-2022/README.md."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import xarray as xr

from tests.conftest import REPO
from toolkit.backends.checkpointed import checkpoint_dir
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep
from toolkit.layout import OutputLayout, write_json


def _run_script(script: str, *arguments: str) -> str:
    """A results/study-2022 script as a reader runs it, from the repository root; what it printed."""
    done = subprocess.run(
        [sys.executable, str(REPO / "results" / "study-2022" / script), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_readme_findings_table_is_what_findings_py_computes() -> None:
    _run_script("findings.py", "--check")


def test_the_readme_quotes_the_last_minibatch_table_as_last_batch_py_computes_it() -> None:
    table = _run_script("last_batch.py").strip()
    assert table in (REPO / "results" / "study-2022" / "README.md").read_text(), (
        "results/study-2022/README.md: the last-minibatch table differs from last_batch.py's; paste its output there."
    )


def test_the_overview_figure_is_drawn_from_the_committed_summaries(tmp_path: Path) -> None:
    figure = tmp_path / "overview.png"
    _run_script("overview.py", "--out", str(figure))
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_collect_keeps_what_is_committed_slim_and_restore_gives_a_fresh_run_its_done_tasks(
    tmp_path: Path, tiny_sweep_data: dict
) -> None:
    """collect.py on a real (tiny) run: no per-spot metrics, the first seed's proportions only, the report,
    and the experiment's sweep file copied from sweeps/ (the folder is named as the experiment); then
    restore.py on that folder without its tasks/, as on a fresh clone."""
    folder = tmp_path / "starmap-like"
    tiny_sweep_data["methods"][0] |= {
        "amortization": "latent", "batch_size": 64, "seed": [0, 1], "drop_last": [False, True],
    }  # fmt: skip
    tiny_sweep_data["output"] = str(folder)
    assert run_sweep(parse_sweep(tiny_sweep_data, "tiny"), report=False).states["done"] == 4
    _run_script("collect.py", str(folder))
    summary = xr.load_dataset(folder / "summary.nc")
    assert not [name for name in summary.data_vars if str(name).endswith("_spot")]
    proportion = summary["proportion"].sel({"method": "destvi"})
    assert proportion.sel(seed=0).notnull().any() and proportion.sel(seed=1).isnull().all()
    assert summary["proportion"].dtype == np.float32  # the maps' values: half the bytes
    assert (folder / "report" / "index.md").exists() and not (folder / "summary.zarr").exists()
    assert (folder / "sweep.yaml").read_bytes() == (REPO / "sweeps" / "starmap-like.yaml").read_bytes()

    # A fresh machine has the committed summary but no tasks/: restore.py gives the run its done tasks back,
    # the run skips them, and collect.py writes the same committed values again.
    shutil.rmtree(folder / "tasks")
    _run_script("restore.py", str(folder))
    restored = json.loads(next((folder / "tasks").glob("*-s1-*/result.json")).read_text())
    assert restored["restored_from"].endswith("summary.nc (slimmed summary)")
    assert len(restored["trajectory"]["points"]) == min(50, restored["n_steps"])  # the trajectory comes back too
    assert run_sweep(parse_sweep(tiny_sweep_data, "tiny"), report=False).states["done"] == 4
    assert not list((folder / "tasks").glob("*/history.csv")), "a restored task was trained again"
    _run_script("collect.py", str(folder))
    xr.testing.assert_identical(xr.load_dataset(folder / "summary.nc"), summary)


def test_an_unfinished_tasks_checkpoint_is_carried_to_the_next_machine_and_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """collect.py copies the last checkpoint of each task still training into checkpoints/<id>/ (committed);
    on a fresh clone restore.py puts it back where the task's training resumes from (the resume itself:
    tests/test_local_resume.py). Files only, no training: a checkpoint's bytes are all that travel."""
    monkeypatch.syspath_prepend(str(REPO / "results" / "study-2022"))
    import collect
    import restore

    folder = tmp_path / "merfish-scaled"
    layout = OutputLayout(folder)
    training = checkpoint_dir(layout, "training")
    training.mkdir(parents=True)
    (training / "last.pt").write_bytes(b"epoch 2,650")
    (training / ".last.pt.99.tmp").write_bytes(b"half written")
    (folder / "checkpoints" / "finished").mkdir(parents=True)  # carried last time, done since
    write_json(layout.result("finished"), {"status": "done"})
    (folder / "checkpoints" / "not-started-here").mkdir()  # carried last time, waiting for its turn
    (folder / "checkpoints" / "not-started-here" / "last.pt").write_bytes(b"epoch 400")

    assert collect.carry_checkpoints(folder) == ["not-started-here", "training"]
    assert [path.name for path in (folder / "checkpoints" / "training").iterdir()] == ["last.pt"]

    shutil.rmtree(folder / "tasks")  # a fresh clone: what was committed, nothing else
    write_json(layout.result("finished"), {"status": "done"})  # restore.restore's work, from the summary
    (folder / "checkpoints" / "finished").mkdir()
    assert restore.restore_checkpoints(folder) == 2
    assert (checkpoint_dir(layout, "training") / "last.pt").read_bytes() == b"epoch 2,650"
    assert (checkpoint_dir(layout, "not-started-here") / "last.pt").read_bytes() == b"epoch 400"
    assert not checkpoint_dir(layout, "finished").exists()
    (checkpoint_dir(layout, "training") / "last.pt").write_bytes(b"epoch 2,700")  # trained on here
    assert restore.restore_checkpoints(folder) == 0  # a checkpoint of its own is further along: kept
    assert (checkpoint_dir(layout, "training") / "last.pt").read_bytes() == b"epoch 2,700"


# --- the verdict rule, on hand-made seeds ------------------------------------------------------------


def _study_module(name: str) -> ModuleType:
    """A results/study-2022 module as its scripts import it (the folder on the path: findings imports contrasts)."""
    folder = str(REPO / "results" / "study-2022")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, REPO / "results" / "study-2022" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # fresh each time (a test may change its constants); dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_separated_seeds_with_an_interval_clear_of_0_reproduce_a_claim_in_their_direction() -> None:
    contrasts = _study_module("contrasts")
    higher = contrasts.compare([0.833, 0.828, 0.836], [0.791, 0.795, 0.789])
    assert higher.low > 0 and higher.separated == 1 and (higher.n_a, higher.n_b) == (3, 3)
    assert higher.difference == pytest.approx(0.04066667)
    assert contrasts.verdict(higher, "higher") == "reproduced"
    assert contrasts.verdict(higher, "lower") == "contradicted"  # the same data against the opposite claim
    lower = contrasts.compare([0.70, 0.71, 0.69], [0.80, 0.81, 0.79])
    assert contrasts.verdict(lower, "lower") == "reproduced" and contrasts.verdict(lower, "higher") == "contradicted"


def test_overlapping_seeds_are_not_resolved_whatever_the_means_say() -> None:
    contrasts = _study_module("contrasts")
    overlapping = contrasts.compare([0.83, 0.77, 0.82], [0.79, 0.80, 0.78])
    assert overlapping.separated == 0 and overlapping.difference > 0
    assert contrasts.verdict(overlapping, "higher") == "not resolved at 3 seeds"
    # With 5 seeds a side the interval can clear 0 while one seed still crosses over: both are asked for.
    crossing = contrasts.compare([1.0, 1.1, 1.2, 1.3, 0.9], [0.0, 0.1, 0.2, 0.3, 0.95])
    assert crossing.low > 0 and crossing.separated == 0
    assert contrasts.verdict(crossing, "higher") == "not resolved at 5 seeds"


def test_separation_alone_does_not_resolve_a_difference_whose_interval_spans_0() -> None:
    """batch 12 against 128 on 189 spots, both: every seed below, but one seed's spread keeps 0 in the interval."""
    contrasts = _study_module("contrasts")
    wide = contrasts.compare([0.758, 0.663, 0.740], [0.795, 0.790, 0.789])
    assert wide.separated == -1 and wide.low < 0 < wide.high
    assert contrasts.verdict(wide, "higher") == "not resolved at 3 seeds"


def test_a_side_with_one_run_has_no_interval_and_is_never_resolved() -> None:
    contrasts = _study_module("contrasts")
    one = contrasts.compare([0.905], [0.754, 0.760, 0.748])
    assert one.separated == 1 and np.isnan(one.low) and np.isnan(one.sd_a)
    assert contrasts.verdict(one, "higher") == "not resolved at 1 v 3 seeds"
    assert contrasts.verdict(contrasts.compare([296.0], [8.0]), "higher", unit="run") == "not resolved at 1 run"


def test_unfinished_seeds_are_left_out_and_identical_seeds_give_the_difference_itself() -> None:
    contrasts = _study_module("contrasts")
    assert contrasts.compare([0.8, np.nan, 0.8], [0.7, 0.7]).n_a == 2
    same = contrasts.compare([0.8, 0.8], [0.7, 0.7])
    assert same.low == same.high == pytest.approx(0.1) and contrasts.verdict(same, "higher") == "reproduced"


def test_not_testable_comes_from_the_setting_and_overrides_the_values() -> None:
    contrasts = _study_module("contrasts")
    clear = contrasts.compare([0.9, 0.91, 0.92], [0.5, 0.51, 0.52])
    assert contrasts.verdict(clear, "higher", not_testable="25x fewer steps") == "not testable at this scale"


def test_two_readings_of_the_same_seeds_are_compared_seed_by_seed() -> None:
    """E1 reads each task at 5,000 and at 30,000 steps: the seeds pair, so a small rise shared by every seed
    is resolved where the unpaired interval, swamped by the spread between seeds, would not be."""
    contrasts = _study_module("contrasts")
    late, early = [0.80, 0.85, 0.90, 0.83, 0.88], [0.79, 0.84, 0.89, 0.82, 0.87]
    paired = contrasts.compare_paired(late, early)
    assert paired.paired and paired.separated == 1 and paired.low == paired.high == pytest.approx(0.01)
    assert contrasts.resolved(paired) == 1 and contrasts.resolved(contrasts.compare(late, early)) == 0
    assert paired.rank_p == pytest.approx(2 / 2**5)  # the sign test's smallest p at 5 pairs
    mixed = contrasts.compare_paired([0.80, 0.85, np.nan, 0.83], [0.79, 0.86, 0.89, 0.82])
    assert mixed.n_a == 3 and mixed.separated == 0  # a seed missing on either side is left out of both
    assert contrasts.verdict(mixed, "higher") == "not resolved at 3 seeds"
    assert "ttest_rel" in contrasts.RULE


def test_the_rules_rows_are_not_testable_on_a_run_trained_far_off_the_studys_epochs() -> None:
    findings = _study_module("findings")
    values = {32: [0.907, 0.907, 0.907], 128: [0.909, 0.908, 0.910], 256: [0.904, 0.903, 0.905]}
    scaled = _summary({("latent", b, 1000): v for b, v in values.items()}, spots=2692)
    (claim,) = findings.rule_claims({"merfish-scaled": scaled})
    row = findings.judge(claim, {"merfish-scaled": scaled})
    assert row.outcome == "not testable at this scale"
    assert row.reason == "merfish-scaled trains 1,000 epochs against the study's 2,500"


def test_complete_separation_is_worth_at_best_p_010_with_3_seeds_a_side() -> None:
    contrasts = _study_module("contrasts")
    assert contrasts.compare([1, 2, 3], [4, 5, 6]).rank_p == pytest.approx(0.1)
    assert contrasts.compare([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]).rank_p == pytest.approx(2 / 252)
    assert "2 / C(6, 3) = 0.10" in contrasts.RULE


# --- findings.py on summaries made to the shape aggregate writes ------------------------------------


LAYERS = ["eL2/3", "eL4", "eL5", "eL6"]


def _summary(
    pcc: dict[tuple[str, int | str, int], float | list[float]],
    spots: int = 2692,
    sd: float = 0.005,
    controls: dict[str, float] | None = None,
    c2l: float = 0.8,
) -> xr.Dataset:
    """A done sweep: destVI `pcc[(amortization, batch, epochs)]` (a mean, +- sd over 3 seeds, or the seeds'
    values), every cell type alike; its steps, a training time proportional to them, Cell2location and the
    `controls` (kind: PCC); what findings.py reads."""
    batches = sorted({batch for _, batch, _ in pcc}, key=str)
    epochs = sorted({e for _, _, e in pcc} | {0, 12000})
    coords = {
        "dataset": ["x"],
        "method": ["cell2location", "control", "destvi"],
        "variant": ["2022", "default", "nnls", "reference_frequencies", "truth", "uniform"],
        "amortization": ["both", "latent", "n/a"],
        "batch_size": [str(b) for b in [0, *batches]],
        "max_epochs": epochs,
        "seed": [0, 1, 2],
    }
    shape = tuple(len(values) for values in coords.values())
    status = np.full(shape, "absent", dtype=object)
    quality, steps, seconds, used = (np.full(shape, np.nan) for _ in range(4))
    index = {name: {value: i for i, value in enumerate(values)} for name, values in coords.items()}

    def at(method: str, variant: str, amortization: str, batch: object, epoch: int, seed: int) -> tuple:
        return (0, index["method"][method], index["variant"][variant], index["amortization"][amortization],
                index["batch_size"][str(batch)], index["max_epochs"][epoch], seed)  # fmt: skip

    for (amortization, batch, epoch), value in pcc.items():
        values = value if isinstance(value, list) else [value - sd, value, value + sd]
        size = spots // 10 if batch == "auto" else int(batch)
        for seed, v in enumerate(values):
            where = at("destvi", "2022", amortization, batch, epoch, seed)
            status[where], quality[where], used[where] = "done", v, size
            steps[where] = epoch * -(-spots // size)
            seconds[where] = steps[where] * (0.005 + size * 1e-5)
    for seed in range(3):
        where = at("cell2location", "default", "n/a", 0, 12000, seed)
        status[where], quality[where], seconds[where] = "done", c2l, 3000.0
    for kind, value in (controls or {}).items():
        where = at("control", kind, "n/a", 0, 0, 0)
        status[where], quality[where] = "done", value
    dims = list(coords)
    per_type = np.repeat(quality[..., None], len(LAYERS), axis=-1)
    return xr.Dataset(
        {
            "status": (dims, status.astype(str)),
            "mean_pcc_cell_type": (dims, quality),
            "mean_rmse_cell_type": (dims, 1 - quality),
            "pcc": ([*dims, "cell_type"], per_type),
            "n_steps": (dims, steps),
            "batch_size_used": (dims, used),
            "train_time_s": (dims, seconds),
            "true_proportion": (("dataset", "spot"), np.zeros((1, spots))),
        },
        coords=coords | {"cell_type": LAYERS},
        attrs={"provenance": json.dumps({"device": "cpu"})},
    )


def _merfish(findings: ModuleType, name: str, **summary: object) -> Callable[[Any], Any]:
    """findings.judge on a made-up MERFISH run called `name` (the full size when 'merfish')."""
    summaries = {name: _summary(**summary)}
    return lambda claim: findings.judge(claim, summaries)


AS_THE_STUDY = {("both", b, 1000): v for b, v in {32: 0.80, 256: 0.80, 512: 0.70, 1024: 0.60}.items()} | {
    ("latent", 32, 1000): 0.80,
    ("latent", 1024, 1000): 0.80,
    ("both", 512, 2000): 0.80,
    ("both", 1024, 4000): 0.65,
}


def test_a_scaled_merfish_run_is_not_testable_at_this_scale_and_says_why() -> None:
    findings = _study_module("findings")
    judge = _merfish(findings, "merfish-scaled", pcc=AS_THE_STUDY)
    for claim in [c for c in findings.CLAIMS if c.finding in ("F3", "F4")]:
        row = judge(claim)
        assert row.outcome == "not testable at this scale", claim.says
        assert row.contrast is not None and row.contrast.n_a == 3  # the numbers are still shown
        assert "2,692 spots against the study's 27,395" in row.reason
        assert "batch 256 takes 11,000 optimizer steps (270,000 in the study, 25x fewer)" in row.reason
        assert "batch 1,024 covers 38% of the spots in each step (3.7% in the study)" in row.reason


def test_at_the_studys_size_f3_and_f4_are_judged_by_the_rule() -> None:
    findings = _study_module("findings")
    full = {(a, b, e * 5 // 2): v for (a, b, e), v in AS_THE_STUDY.items()}  # 2,500 epochs, 5,000, 10,000
    judge = _merfish(findings, "merfish", pcc=full, spots=27_000)
    claims = {c.says: c for c in findings.CLAIMS if c.finding in ("F3", "F4")}
    for says, claim in claims.items():
        long = {2000: 5000, 4000: 10000}
        claims[says] = replace(claim, a=replace(claim.a, epochs=long.get(claim.a.epochs, claim.a.epochs)))
    outcomes = {says: judge(claim).outcome for says, claim in claims.items()}
    assert outcomes == {
        "quality holds to batch 256 (both): 256 not below 32": "not resolved at 3 seeds",  # equal: not shown
        "quality drops at 512 (both)": "reproduced",
        "quality drops at 1,024 (both)": "reproduced",
        "latent stable: 1,024 not below 32": "not resolved at 3 seeds",
        "512 recovers with 2x the epochs (the study's 5,000)": "reproduced",
        "1,024 does not recover with 4x the epochs (the study's 10,000): stays below 256": "reproduced",
    }


def test_a_claim_waits_for_its_own_tasks_only() -> None:
    findings = _study_module("findings")
    summary = _summary(AS_THE_STUDY)
    where = {"method": "destvi", "variant": "2022", "amortization": "both", "batch_size": "512", "max_epochs": 2000}
    status = summary["status"].copy()
    status.loc[where | {"seed": 1}] = "started"
    summary["status"] = status
    rows = {c.says: findings.judge(c, {"merfish-scaled": summary}) for c in findings.CLAIMS if c.finding == "F4"}
    assert rows["512 recovers with 2x the epochs (the study's 5,000)"].outcome == "no verdict yet: 5 of 6 tasks done"
    assert rows["1,024 does not recover with 4x the epochs (the study's 10,000): stays below 256"].contrast
    assert findings.judge(findings.CLAIMS[0], {}).outcome == "not run"  # starmap-189 absent


def test_f5_on_a_cpu_is_not_testable_and_one_gpu_timing_per_batch_is_not_resolved(tmp_path: Path) -> None:
    findings = _study_module("findings")
    findings.GPU_CHECKS = tmp_path
    rows = [
        {"batch": b, "engine": "fast", "n_spots": 26984, "minutes_2500_epochs": m} for b, m in ((32, 296), (1024, 8))
    ]
    (tmp_path / "run.json").write_text(json.dumps({"device_name": "NVIDIA H200", "sections": {"runtime_table": rows}}))
    summaries = {"merfish-scaled": _summary(AS_THE_STUDY), findings.GPU: findings.gpu_summary()}
    cpu, gpu = (findings.judge(c, summaries) for c in findings.CLAIMS if c.finding == "F5")
    assert cpu.outcome == "not testable at this scale" and "trained on a CPU" in cpu.reason
    assert gpu.outcome == "not resolved at 1 run" and gpu.reason is None
    assert gpu.a.values.tolist() == [296.0] and gpu.contrast.difference == 288.0


def test_each_small_batch_of_f1_is_its_own_contrast_against_128() -> None:
    findings = _study_module("findings")
    at = {
        8: [0.777, 0.832, 0.822],
        12: [0.755, 0.741, 0.771],
        16: [0.832, 0.838, 0.836],
        32: [0.822, 0.826, 0.820],
        128: [0.795, 0.799, 0.797],
    }
    starmap = _summary({(a, b, 2500): v for a in ("both", "latent") for b, v in at.items()}, spots=189)
    outcomes = {c.says: findings.judge(c, {"starmap-189": starmap}).outcome for c in findings.CLAIMS[:9]}
    assert outcomes["batch 16 beats 128 (both)"] == "reproduced"
    assert outcomes["batch 8 beats 128 (latent)"] == "not resolved at 3 seeds"
    assert outcomes["batch 12 beats 128 (latent)"] == "contradicted"
    assert outcomes["both at batch 32 does worse than at 12"] == "contradicted"


def test_the_rule_is_judged_against_the_best_other_batch_of_each_experiment() -> None:
    findings = _study_module("findings")
    starmap = _summary({("both", b, 2500): v for b, v in {8: 0.80, 16: 0.83, "auto": 0.70}.items()}, spots=189)
    (claim,) = findings.rule_claims({"starmap-189": starmap})
    assert claim.b.label == "both 16" and claim.a.label == "both auto"
    row = findings.judge(claim, {"starmap-189": starmap})
    assert row.outcome == "contradicted" and row.a.label == "both auto (18)"


def test_the_controls_table_counts_the_destvi_settings_a_control_beats() -> None:
    findings = _study_module("findings")
    pcc = {("both", b, 2500): v for b, v in {8: 0.80, 16: 0.84, 128: 0.79}.items()}
    summary = _summary(pcc, spots=189, controls={"nnls": 0.81, "truth": 0.99, "uniform": np.nan})
    table = findings.controls_table("starmap-189", summary)
    assert "| nnls | 1 | 0.810 | 0.810 | 0.190 | 2 | 2 |" in table  # above 8 and 128 (every seed), below 16
    assert "| uniform | 1 | undefined (one value in every spot) |" in table
    assert "| Cell2location | 3 | 0.800 +- 0.000 | 0.800 +- 0.000 | 0.200 +- 0.000 | 1 | 1 |" in table  # above 128 only
    assert "destVI, its 3 settings" in table


def test_a_new_experiment_and_claim_are_one_entry_each() -> None:
    """E1-E6 add summaries and rows: a Claim on an experiment findings.py has never heard of is judged as is."""
    findings = _study_module("findings")
    e3 = _summary({(a, b, 2500): v for a in ("both",) for b, v in {17: 0.70, 19: 0.84}.items()}, spots=189)
    claim = findings.Claim(
        "E3", "17 below 19", findings.destvi("e3", "both", 17), findings.destvi("e3", "both", 19), "lower", 189
    )
    assert findings.judge(claim, {"e3": e3}).outcome == "reproduced"
    block = findings.experiment_block("e3", e3)
    assert "| 17 | 2,500 | 30,000 | 0.700 +- 0.005 (n=3) |" in block


def test_every_measured_number_of_the_top_readmes_study_paragraph_is_findings_py_output() -> None:
    """The front page's summary of the study quotes findings.py: each decimal it gives (a PCC, a mean, an sd,
    minutes) is in findings.py's output or last_batch.py's, so it cannot drift from the committed summaries."""
    readme = (REPO / "README.md").read_text()
    paragraph = readme.split("## What the study finds here", 1)[1].split("![", 1)[0]
    output = _run_script("findings.py") + _run_script("last_batch.py")
    quoted = set(re.findall(r"(?<![\d.])\d+\.\d+(?![\d.])", paragraph))
    assert quoted, "the paragraph quotes no numbers: the test would check nothing"
    missing = sorted(number for number in quoted if number not in output)
    assert not missing, f"README.md 'What the study finds here' quotes {missing}, which findings.py does not print"


NOT_FROM_THE_SUMMARIES = {
    "0.4": "merfish-scaled's epochs against the study's: a setting, not a result",
    "0.675": "batch 18 seed 0 trained eagerly, a one-off check on 2026-11-30 not in the summaries (said so)",
    "0.686": "the same task compiled, its pair",
}


def test_the_study_readmes_findings_prose_quotes_only_findings_py_output() -> None:
    """The narratives between the generated blocks of results/study-2022/README.md's Findings: each decimal
    they give is printed by findings.py or last_batch.py, but for the few named above and why."""
    readme = (REPO / "results" / "study-2022" / "README.md").read_text()
    prose = readme.split("## Findings", 1)[1].split("## Training time against batch size", 1)[0]
    prose = re.sub(r"<!-- findings.py: (.*?) begin -->.*?<!-- findings.py: \1 end -->", "", prose, flags=re.DOTALL)
    output = _run_script("findings.py") + _run_script("last_batch.py")
    quoted = set(re.findall(r"(?<![\d.])\d+\.\d+(?![\d.])", prose)) - set(NOT_FROM_THE_SUMMARIES)
    assert quoted
    missing = sorted(number for number in quoted if number not in output)
    assert not missing, f"results/study-2022/README.md's Findings quote {missing}, which findings.py does not print"


# --- E1-E6: budgets read from trajectories, sides keyed by the optional settings -------------------------


def test_a_budget_is_read_between_trajectory_points_and_never_beyond_a_run() -> None:
    budgets = _study_module("budgets")
    steps = xr.DataArray([[600.0, 1200.0, 1800.0], [600.0, 1200.0, np.nan]], dims=("seed", "point"))
    scores = xr.DataArray([[0.5, 0.7, 0.9], [0.4, 0.6, np.nan]], dims=("seed", "point"))
    assert budgets.at_budget(steps, scores, 900).values == pytest.approx([0.6, 0.5])
    assert budgets.at_budget(steps, scores, 1800).values[0] == pytest.approx(0.9)
    assert np.isnan(budgets.at_budget(steps, scores, 1800).values[1])  # seed 1 stopped at 1,200
    assert np.isnan(budgets.at_budget(steps, scores, 300).values).all()  # before the first point


def test_e3_and_e6_sides_pick_their_own_setting_of_drop_last_and_reference_seed() -> None:
    findings = _study_module("findings")
    summary = _summary({("both", 16, 2500): 0.80, ("both", 128, 2500): 0.70}, spots=189)
    kept, dropped = summary.copy(), summary.copy()
    dropped["pcc"] = dropped["pcc"] + 0.1
    both = xr.concat([kept, dropped], dim=xr.DataArray([False, True], dims="drop_last", name="drop_last"))
    both["status"] = both["status"].astype(str)
    claims = {c.says: c for c in findings.COMPARISONS if c.finding == "E3 last minibatch"}
    row = findings.judge(claims["16: dropped vs kept (both)"], {"starmap-189-drop-last": both})
    assert row.contrast.difference == pytest.approx(0.1)
    assert row.a.label == "both 16, drop last True"
    seeds = xr.concat([kept, dropped], dim=xr.DataArray([0, 1], dims="reference_seed", name="reference_seed"))
    table = findings.reference_seed_table("starmap-189-reference-seed", seeds)
    assert "| 16 | 0.800 +- 0.005 (n=3) | 0.900 +- 0.005 (n=3) | 0.071 | 0.005 |" in table


def test_the_three_batch_check_takes_the_batches_nearest_n_over_20_10_and_5() -> None:
    advice = _study_module("advice")
    record = advice.Advice("starmap-189", 189, "2022", "both", 16, np.array([0.8]), {}, [16],
                           [4, 8, 12, 16, 18, 32, 48, 64, 128], {}, "", 2500)  # fmt: skip
    assert advice.checked(record) == [8, 18, 32]
    # the answer counts only sweeps near the study's 2,500 epochs, as the verdict rule tests only those
    assert advice.counted(record) and not advice.counted(replace(record, epochs=1000))
    assert advice.checked(replace(record, spots=2692, batches=[32, 64, 128, 256, 512, 1024])) == [128]


def test_the_answers_first_line_adds_e6_once_every_reference_seed_is_done() -> None:
    """Batch 18 against 16 within each of E6's three reference models, beside line 1; nothing before all are
    done (the one gate)."""
    advice = _study_module("advice")
    by_seed = [
        _summary({("both", 16, 2500): 0.85, ("both", 18, 2500): 0.74, ("both", 128, 2500): 0.80}, spots=189),
        _summary({("both", 16, 2500): 0.835, ("both", 18, 2500): 0.83, ("both", 128, 2500): 0.78}, spots=189),
        _summary({("both", 16, 2500): 0.83, ("both", 18, 2500): 0.82, ("both", 128, 2500): 0.79}, spots=189),
    ]
    seeds = xr.DataArray([0, 1, 2], dims="reference_seed", name="reference_seed")
    e6 = xr.concat(by_seed, dim=seeds)
    e6["status"] = e6["status"].astype(str)
    clause = advice.reference_clause({"starmap-189-reference-seed": e6})
    assert "18 is resolved below 16 with 1 of the 3 reference models" in clause
    assert "seed 0: 0.740 against 0.850, resolved below; seed 1: 0.830 against 0.835, not resolved" in clause
    partial = e6.copy()
    partial["status"] = partial["status"].where(partial["reference_seed"] != 2, "absent")
    assert advice.reference_clause({"starmap-189-reference-seed": partial}) == ""
    assert advice.reference_clause({}) == ""


def test_the_answers_last_line_names_only_the_experiments_still_open() -> None:
    """Line 5 named E6 as open after all its tasks were done: a finished experiment leaves the line."""
    advice = _study_module("advice")
    done = _summary({("both", 16, 2500): 0.85}, spots=189)
    summaries = {name: done for name in advice.EXPERIMENTS} | {"starmap-189-drop-last": None}
    assert advice.line_pending(summaries) == (
        "5. **Still open**, and able to change lines 1-4: the last minibatch (E3); "
        "not done yet: starmap-189-drop-last (not run)."
    )
    assert advice.line_pending({name: done for name in advice.EXPERIMENTS}) == "5. Every experiment has run."


def test_the_last_minibatch_table_sets_kept_and_dropped_side_by_side_within_one_reference() -> None:
    """E3 swept drop_last against one reference: its table has a column per amortization and rule."""
    last_batch = _study_module("last_batch")
    kept = _summary({("both", 16, 2500): 0.83, ("latent", 16, 2500): 0.84, ("both", 18, 2500): 0.70}, spots=189)
    dropped = _summary({("both", 16, 2500): 0.82, ("latent", 16, 2500): 0.85, ("both", 18, 2500): 0.80}, spots=189)
    e3 = xr.concat([kept, dropped], dim=xr.DataArray([False, True], dims="drop_last", name="drop_last"))
    e3["status"] = e3["status"].astype(str)
    e3["reference_time_s"] = xr.full_like(e3["train_time_s"], 120.0)
    table = last_batch.reference_table("starmap-189-drop-last", e3)
    assert "(120 s of training; " in table
    assert "| batch | last minibatch (spots) | both, last kept | both, last dropped | latent, last kept |" in table
    assert "| 18 | 9 | 0.700 +- 0.005 (n=3) | 0.800 +- 0.005 (n=3) | not run | not run |" in table


def test_the_readme_quotes_which_experiments_share_a_reference_as_references_py_computes_it() -> None:
    """The reference models are named by their weights: the table is recomputed from the committed models."""
    table = _run_script("references.py").strip()
    assert table in (REPO / "results" / "study-2022" / "README.md").read_text(), (
        "results/study-2022/README.md: the reference models' table is not references.py's; paste its output there."
    )


def test_the_answers_first_line_adds_e3_once_its_dropped_rows_are_done() -> None:
    """Batch 18 against 16 with every minibatch full, beside line 1; nothing while a seed is missing."""
    advice = _study_module("advice")
    sides = {("both", 16, 2500): 0.84, ("latent", 16, 2500): 0.82, ("both", 18, 2500): 0.73, ("latent", 18, 2500): 0.77}
    e3 = xr.concat(
        [_summary(sides, spots=189), _summary(sides, spots=189)],
        dim=xr.DataArray([False, True], dims="drop_last", name="drop_last"),
    )
    e3["status"] = e3["status"].astype(str)
    clause = advice.last_minibatch_clause({"starmap-189-drop-last": e3})
    expected = "18 against 16 is 0.730 against 0.840 (both) and 0.770 against 0.820 (latent), resolved below in both"
    assert expected in clause
    partial = e3.copy()
    partial["status"] = partial["status"].where((partial["seed"] != 2) | (partial["status"] != "done"), "running")
    assert advice.last_minibatch_clause({"starmap-189-drop-last": partial}) == ""
    assert advice.last_minibatch_clause({}) == ""
