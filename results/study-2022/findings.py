"""The findings table of results/study-2022/README.md, read from the committed summary.nc files alone.

    .venv/bin/python results/study-2022/findings.py           # prints the table (markdown)
    .venv/bin/python results/study-2022/findings.py --check   # exit 1 if the README's table differs
    .venv/bin/python results/study-2022/findings.py --write   # put the table into the README

Every number is a mean +- sd over seeds of per-cell-type PCC (Li et al.'s metric), for destVI (2022
settings) and Cell2location. On STARmap the measure is the excitatory layers, the mean over eL2/3, eL4,
eL5 and eL6, the types whose layered bands the study's maps show; on MERFISH, where the study looked at
every type, the mean over all cell types. An experiment that has not finished gets no verdict; a scaled
one gets "not testable at this scale" where the scaling removes what the finding hinges on.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from toolkit.layout import write_atomically

HERE = Path(__file__).resolve().parent
EXCITATORY = ["eL2/3", "eL4", "eL5", "eL6"]
SYNTHETIC_LAYERS = ["ExcitatoryL2and3", "ExcitatoryL4", "ExcitatoryL5", "ExcitatoryL6"]
"""The starmap-like tissue's names for eL2/3 ... eL6 (toolkit.data.synthetic)."""
EPOCHS = 2500
MERFISH = ("merfish", "merfish-scaled")
"""The full-size run first: where it exists, its numbers are the findings' and the scaled run is not read."""
STUDY_SPOTS = 27_395
STUDY_MINUTES = {32: 211, 48: 104, 64: 86, 128: 36, 256: 21, 512: 11, 1024: 10}
"""The study's destVI training times on one RTX 3090 (27,395 spots, 2,500 epochs); Cell2location 123 min."""
GPU_CHECKS = HERE.parent / "gpu-h200"
"""The H200 check's runs (tests/benchmarks/gpu_check.py): per-step times at the study's size, for F5."""
BEGIN, END = "<!-- findings: begin (findings.py) -->", "<!-- findings: end -->"


def load(experiment: str) -> xr.Dataset | None:
    path = HERE / experiment / "summary.nc"
    return xr.load_dataset(path, engine="h5netcdf") if path.exists() else None


def layers(summary: xr.Dataset, method: str = "destvi", types: list[str] = EXCITATORY) -> pd.DataFrame:
    """Excitatory-layer PCC per configuration: mean, sd and number of seeds; rows (amortization, batch)."""
    pcc = summary["pcc"].sel({"cell_type": types}).mean("cell_type")
    return seeds_table(pcc, method, EPOCHS)


def measure(name: str, summary: xr.Dataset, method: str = "destvi") -> pd.DataFrame:
    """An experiment's measure: the excitatory layers on STARmap (real or synthetic), every type on MERFISH."""
    if name in MERFISH:
        return quality(summary, method, base_epochs(summary) if method == "destvi" else None)
    return layers(summary, method, SYNTHETIC_LAYERS if name == "starmap-like" else EXCITATORY)


def quality(summary: xr.Dataset, method: str = "destvi", epochs: int | None = None) -> pd.DataFrame:
    """MERFISH: PCC averaged over every cell type, per configuration (as `layers`), at `epochs` for destVI."""
    return seeds_table(summary["mean_pcc_cell_type"], method, epochs)


def seeds_table(pcc: xr.DataArray, method: str, epochs: int | None) -> pd.DataFrame:
    """Mean, sd and number of seeds of `pcc` per (amortization, batch) of one method at one epoch count."""
    pcc = pcc.sel({"method": method, "variant": "2022" if method == "destvi" else "default"})
    if method == "destvi":
        pcc = pcc.sel({"max_epochs": epochs})
    frame = pcc.squeeze(drop=True).to_dataframe(name="pcc").reset_index().dropna(subset=["pcc"])
    if "batch_size" in frame:  # the aggregate's batch sizes are numbers, or text where one is "auto"
        frame["batch_size"] = frame["batch_size"].astype(str)
    keys = [k for k in ("amortization", "batch_size") if k in frame]
    table = frame.groupby(keys)["pcc"].agg(["mean", "std", "count"])
    return table


def text(table: pd.DataFrame, key: tuple | str) -> str:
    if key not in table.index:
        return "not run"
    row = table.loc[key]
    if int(row["count"]) == 1:  # one seed has no spread
        return f"{row['mean']:.3f} (n=1)"
    return f"{row['mean']:.3f} +- {row['std']:.3f} (n={int(row['count'])})"


def _batch_key(batch: str) -> tuple[int, int]:
    return (1, 0) if batch == "auto" else (0, int(batch))


def best_batch(table: pd.DataFrame, amortization: str) -> tuple[str, float, float]:
    rows = table.loc[amortization]
    best = rows["mean"].idxmax()
    return str(best), float(rows.loc[best, "mean"]), float(rows.loc[best, "std"])


def finding_f2(summary: xr.Dataset | None) -> list[str]:
    says = "57 spots: only batch 4 separates the excitatory layers; there latent amortization beats both"
    if summary is None:
        return ["F2", says, "not run yet", "no verdict"]
    table = layers(summary)
    parts, wins = [], []
    for amortization in ("both", "latent"):
        if amortization not in table.index.get_level_values(0):
            parts.append(f"{amortization}: not run yet")
            wins.append(("", 0.0, 0.0))
            continue
        batches = sorted(table.loc[amortization].index, key=_batch_key)
        cells = ", ".join(f"{b}: {text(table, (amortization, b))}" for b in batches)
        best, mean, _ = best_batch(table, amortization)
        others = table.loc[amortization].drop(index=best)
        margin = mean - others["mean"].max()
        spread = float(np.nanmax(table.loc[amortization]["std"]))
        wins.append((best, margin, spread))
        parts.append(f"{amortization}: {cells}; best batch {best}")
    both4, latent4 = (table.loc[(a, "4")] if (a, "4") in table.index else None for a in ("both", "latent"))
    if both4 is not None and latent4 is not None:
        parts.append(f"batch 4 latent - both: {latent4['mean'] - both4['mean']:+.3f}")
    c2l = layers(summary, "cell2location")
    if not c2l.empty:
        parts.append(f"Cell2location {text(c2l, c2l.index[0])}")
    four_best = [best == "4" for best, _, _ in wins]
    clear = [best == "4" and margin > spread for best, margin, spread in wins]
    latent_wins = (
        both4 is not None
        and latent4 is not None
        and latent4["mean"] - both4["mean"] > max(both4["std"], latent4["std"])
    )
    if all(clear) and latent_wins:
        verdict = "reproduced"
    elif any(four_best) or latent_wins:
        verdict = "partly: " + ", ".join(
            [f"batch 4 best with {a}" for a, b in zip(("both", "latent"), four_best, strict=True) if b]
            + (["latent beats both at batch 4"] if latent_wins else ["latent does not beat both at batch 4"])
        )
    else:
        bests = ", ".join(f"{best} ({a})" for a, (best, _, _) in zip(("both", "latent"), wins, strict=True) if best)
        verdict = f"not reproduced: the best batch is {bests}, not 4"
        if both4 is not None and latent4 is not None:
            verdict += (
                f"; latent vs both at batch 4 is within the seeds' spread ({max(both4['std'], latent4['std']):.3f})"
            )
    return ["F2", says, "; ".join(parts), verdict]


def destvi_progress(summary: xr.Dataset) -> tuple[int, int]:
    """(done, in the sweep) of the experiment's destVI tasks: a verdict waits for all of them."""
    return tasks_read(summary, {"method": "destvi"})


def tasks_read(summary: xr.Dataset, *selections: dict[str, Any]) -> tuple[int, int]:
    """(done, in the sweep) of the tasks that the (disjoint) selections pick: a finding's verdict waits for
    the tasks it reads, not for arms it does not. Values are compared as text: the aggregate stores batch
    sizes as numbers, or as text where one is `auto`."""
    done = total = 0
    for selection in selections:
        status = summary["status"]
        for key, value in selection.items():
            status = status.where(status[key].astype(str) == str(value), "absent")
        done += int((status == "done").sum())
        total += int((status != "absent").sum())
    return done, total


def base_arms(summary: xr.Dataset) -> list[dict[str, Any]]:
    """Every destVI task at the experiment's base epochs (F3, the rule)."""
    return [{"method": "destvi", "max_epochs": base_epochs(summary)}]


def both_base_arms(summary: xr.Dataset) -> list[dict[str, Any]]:
    """destVI amortization both at the base epochs (F5's times)."""
    return [{"method": "destvi", "amortization": "both", "max_epochs": base_epochs(summary)}]


def long_arms(summary: xr.Dataset) -> list[dict[str, Any]]:
    """F4's: both at the base epochs, 512 at 2x and 1,024 at 4x the epochs (the study's 5,000 and 10,000)."""
    epochs = base_epochs(summary)
    arm = {"method": "destvi", "amortization": "both"}
    return [arm | {"max_epochs": epochs}] + [
        arm | {"batch_size": batch, "max_epochs": times * epochs} for batch, times in ((512, 2), (1024, 4))
    ]


def finding_f1(summary: xr.Dataset | None) -> list[str]:
    says = (
        "189 spots: batch 8-16 recover the excitatory layers that batch 128 loses (both amortizations); "
        "both-amortization at batch 32 does badly"
    )
    if summary is None:
        return ["F1", says, "not run yet (sweeps/starmap-189.yaml)", "no verdict"]
    table = layers(summary)
    done, total = destvi_progress(summary)
    if done < total:
        so_far = "; ".join(
            f"{amortization} batch {batch}: {text(table, (amortization, batch))}"
            for amortization, batch in sorted(table.index, key=lambda k: (k[0], _batch_key(k[1])))
        )
        return ["F1", says, f"running: {done} of {total} destVI tasks done; so far {so_far}", "no verdict yet"]
    claims: dict[str, tuple[bool, str]] = {}
    """Each of the study's claims: whether it holds, and the numbers it was judged on."""
    for amortization in ("both", "latent"):
        small = [table.loc[(amortization, b)] for b in ("8", "12", "16") if (amortization, b) in table.index]
        if small and (amortization, "128") in table.index:
            large = table.loc[(amortization, "128")]
            spread = max(float(large["std"]), *(float(row["std"]) for row in small))
            low, high = min(r["mean"] for r in small), max(r["mean"] for r in small)
            claims[f"batch 8-16 beat 128 ({amortization})"] = (
                low - large["mean"] > spread,
                f"8-16 {low:.3f}-{high:.3f} vs 128 {large['mean']:.3f}, sd up to {spread:.3f}",
            )
    if ("both", "32") in table.index and all(("both", b) in table.index for b in ("8", "12", "16")):
        at32 = table.loc[("both", "32")]
        small = [table.loc[("both", b)] for b in ("8", "12", "16")]
        spread = max(float(at32["std"]), *(float(row["std"]) for row in small))
        low, high = min(r["mean"] for r in small), max(r["mean"] for r in small)
        claims["both at batch 32 does badly"] = (
            low - at32["mean"] > spread,
            f"32 {at32['mean']:.3f} vs 8-16 {low:.3f}-{high:.3f}, sd up to {spread:.3f}",
        )
    parts = [by_batch(table, "both"), by_batch(table, "latent")]
    c2l = layers(summary, "cell2location")
    if not c2l.empty:
        parts.append(f"Cell2location {text(c2l, c2l.index[0])}")
    holding = [f"{claim} ({numbers})" for claim, (ok, numbers) in claims.items() if ok]
    failing = [f"{claim} ({numbers})" for claim, (ok, numbers) in claims.items() if not ok]
    if claims and not failing:
        verdict = "reproduced"
    elif holding:
        verdict = f"partly: {'; '.join(holding)}; not: {'; '.join(failing)} (by more than the seeds' largest sd)"
    else:
        verdict = (
            "not reproduced: no claim holds by more than the seeds' largest sd: " + "; ".join(failing)
            if failing
            else "not reproduced: none of its claims could be judged"
        )
    return ["F1", says, "; ".join(parts), verdict]


def rule_batch(summary: xr.Dataset, table: pd.DataFrame, amortization: str) -> str:
    """The rule's batch as the sweep ran it: `auto`, else the batch min(n_spots // 10, 128) if it ran."""
    if (amortization, "auto") in table.index:
        return "auto"
    return str(min(summary.sizes["spot"] // 10, 128))


def finding_rule(summaries: dict[str, xr.Dataset | None]) -> list[str]:
    says = "batch size = min(n_spots / 10, 128)"
    parts: list[str] = []
    checks: list[bool] = []
    names: list[str] = []
    for name, summary in summaries.items():
        if summary is None:
            continue
        done, total = tasks_read(summary, *base_arms(summary))
        if done < total:
            parts.append(f"{name}: running ({done} of the {total} destVI tasks it reads done), not counted")
            continue
        table = measure(name, summary)
        for amortization in sorted(set(table.index.get_level_values(0))):
            best, mean, _ = best_batch(table, amortization)
            rule = rule_batch(summary, table, amortization)
            if (amortization, rule) in table.index:
                chosen = table.loc[(amortization, rule)]
                checks.append(bool(mean - chosen["mean"] <= max(chosen["std"], 1e-12)))
                names.append(f"{name} {amortization} (by {mean - chosen['mean']:.3f})")
            parts.append(
                f"{name} {amortization}: rule (batch {rule}) {text(table, (amortization, rule))} "
                f"vs best (batch {best}) {mean:.3f}"
            )
    if not checks:
        return ["rule", says, "; ".join(parts) or "not run yet", "no verdict"]
    verdict = (
        "holds where run: the rule's batch is the best or within one sd of it"
        if all(checks)
        else "partly: the rule's batch falls more than one sd below the best batch in "
        + ", ".join(name for name, ok in zip(names, checks, strict=True) if not ok)
    )
    return ["rule", says, "; ".join(parts), verdict]


def base_epochs(summary: xr.Dataset) -> int:
    """The epochs most destVI tasks train (2,500 in the study, 1,000 scaled); longer arms are F4's."""
    status = summary["status"].sel({"method": "destvi"})
    counts = (status != "absent").sum([d for d in status.dims if d != "max_epochs"])
    return int(counts.idxmax("max_epochs"))


def steps_here(summary: xr.Dataset, batch: int, epochs: int) -> int:
    """Optimizer steps a destVI both task of this batch and epochs trained (recorded by the task)."""
    arm = {"method": "destvi", "variant": "2022", "amortization": "both", "max_epochs": epochs}
    steps = summary["n_steps"].sel(arm)
    return int(np.nanmax(steps.where(steps["batch_size"].astype(str) == str(batch)).values))


def study_steps(batch: int, epochs: int = EPOCHS) -> int:
    return epochs * math.ceil(STUDY_SPOTS / batch)


def by_batch(table: pd.DataFrame, amortization: str) -> str:
    if amortization not in table.index.get_level_values(0):
        return f"{amortization}: not run"
    batches = sorted(table.loc[amortization].index, key=_batch_key)
    return f"{amortization}: " + ", ".join(f"{b}: {text(table, (amortization, b))}" for b in batches)


def merfish_run(summaries: dict[str, xr.Dataset | None]) -> tuple[str, xr.Dataset | None]:
    """The MERFISH experiment the findings read: the full size if it ran, else the scaled one."""
    for name in MERFISH:
        if summaries.get(name) is not None:
            return name, summaries[name]
    return MERFISH[-1], None


def holds_and_drops(both: pd.DataFrame) -> tuple[float, float, bool, list[str], list[str]]:
    """(best mean at batch <= 256, the sd, batch 256 within one sd of it, those of 512 and 1,024 below it by
    more, those within)."""
    small = [b for b in both.index if b != "auto" and int(b) <= 256]
    best = both.loc[small, "mean"].idxmax()
    level, sd = float(both.loc[best, "mean"]), float(np.nanmax(both["std"]))
    holds = "256" in both.index and float(both.loc["256", "mean"]) >= level - sd
    large = [b for b in ("512", "1024") if b in both.index]
    dropped = [b for b in large if float(both.loc[b, "mean"]) < level - sd]
    return level, sd, holds, dropped, [b for b in large if b not in dropped]


def _batches(batches: list[str]) -> str:
    return ", ".join(f"{int(b):,}" for b in batches)


def scale_note(summary: xr.Dataset, epochs: int) -> tuple[float, str]:
    """How many times fewer steps batch 256 trains here than in the study, and that said in words."""
    here, study = steps_here(summary, 256, epochs), study_steps(256)
    return study / here, f"batch 256 trains {here:,} steps here, {study:,} in the study ({study / here:.0f}x fewer)"


def unfinished(
    finding: str, says: str, name: str, summary: xr.Dataset | None, reads: Callable[[xr.Dataset], list[dict]]
) -> list[str] | None:
    """The row of a MERFISH finding whose run is missing or has tasks left among those the finding `reads`;
    None once they are done."""
    if summary is None:
        return [finding, says, f"not run yet (sweeps/{name}.yaml)", "no verdict"]
    done, total = tasks_read(summary, *reads(summary))
    if done < total:
        return [finding, says, f"{name}: running, {done} of the {total} destVI tasks it reads done", "no verdict yet"]
    return None


def finding_f3(name: str, summary: xr.Dataset | None) -> list[str]:
    says = "27,395 MERFISH spots: quality holds to batch 256, drops at 512-1,024 (both); latent stable"
    if (row := unfinished("F3", says, name, summary, base_arms)) is not None:
        return row
    epochs = base_epochs(summary)
    table = quality(summary, epochs=epochs)
    both = table.loc["both"]
    level, sd, holds, dropped, kept = holds_and_drops(both)
    latent = table.loc["latent"] if "latent" in table.index.get_level_values(0) else None
    stable = latent is not None and float(latent["mean"].max() - latent["mean"].min()) <= 2 * float(latent["std"].max())
    scale, steps = scale_note(summary, epochs)
    parts = [f"{name}, {epochs:,} epochs, all-type PCC", by_batch(table, "both"), by_batch(table, "latent"), steps]
    parts.append(f"one sd = the largest seed spread of both, {sd:.3f} (batch {both['std'].idxmax()})")
    if latent is not None:
        parts.append(f"latent range {float(latent['mean'].max() - latent['mean'].min()):.3f}")
    latent_words = "latent not run" if latent is None else "latent stable" if stable else "latent not stable"
    if latent is not None and not stable and "256" in latent.index and (arm := latent_long_arm(summary, epochs, sd)):
        parts.append(arm[0])
        latent_words += f" ({arm[1]})"
    if scale > 1.5 and not holds:
        verdict = (
            f"not testable at this scale: batch 256 already falls more than one sd ({sd:.3f}) below the best "
            f"smaller batch ({level:.3f}) with {scale:.0f}x fewer steps than in the study; where the drop starts "
            "hinges on steps"
        )
    elif holds and dropped and not kept:
        shape = "reproduced" if stable else "partly: holds to 256 and drops at 512-1,024"
        verdict = f"{shape} ({latent_words})" if stable else f"{shape}; {latent_words}"
        if scale > 1.5:
            verdict += f", with {scale:.0f}x fewer steps per batch than the study"
    elif holds and dropped:
        verdict = (
            f"partly: holds to 256 and drops at {_batches(dropped)}, but {_batches(kept)} stays within one sd "
            f"({sd:.3f}) of the best ({level:.3f}); {latent_words}"
        )
        if scale > 1.5:
            verdict += f", with {scale:.0f}x fewer steps per batch than the study"
    elif holds:
        verdict = (
            f"not reproduced: batch 512-1,024 stay within one sd ({sd:.3f}) of the best ({level:.3f}); {latent_words}"
        )
        if scale > 1.5:
            verdict += f", even with {scale:.0f}x fewer steps than the study"
    else:
        verdict = f"not reproduced: batch 256 falls below the best smaller batch by more than one sd; {latent_words}"
    return ["F3", says, "; ".join(parts), verdict]


def finding_f4(name: str, summary: xr.Dataset | None) -> list[str]:
    says = "batch 512 recovers with 5,000 epochs; 1,024 does not with 10,000"
    if (row := unfinished("F4", says, name, summary, long_arms)) is not None:
        return row
    epochs = base_epochs(summary)
    base = quality(summary, epochs=epochs).loc["both"]
    level, sd, holds, dropped, _ = holds_and_drops(base)
    arms = {e: quality(summary, epochs=e).loc["both"] for e in (2 * epochs, 4 * epochs)}
    reference = float(base.loc["256", "mean"])
    parts = [f"{name}, both; batch 256 at {epochs:,} epochs: {text(base, '256')}"]
    for batch in ("512", "1024"):
        runs = [f"{epochs:,}: {text(base, batch)}"] + [
            f"{e:,}: {arm_text(summary, arm, batch, e)}" for e, arm in arms.items()
        ]
        parts.append(f"batch {batch} at " + ", ".join(runs))
    scale, steps = scale_note(summary, epochs)
    parts.append(steps)
    relative = f" (2x and 4x the epochs, as the study's; {scale:.0f}x fewer steps)" if scale > 1.5 else ""
    if not holds:
        verdict = (
            f"not testable at this scale: batch 256, the level the long arms should reach, is itself more than one "
            f"sd ({sd:.3f}) below the best smaller batch ({level:.3f})"
        )
    else:
        verdict = f4_verdict(set(dropped), long_arm_recovers(arms, epochs, reference - sd), epochs) + relative
    return ["F4", says, "; ".join(parts), verdict]


def long_arm_recovers(arms: dict[int, pd.DataFrame], epochs: int, floor: float) -> dict[str, bool]:
    """Whether 512 at 2x and 1,024 at 4x the epochs reach batch 256's level (within one sd)."""
    return {
        batch: batch in arms[times * epochs].index and float(arms[times * epochs].loc[batch, "mean"]) >= floor
        for batch, times in (("512", 2), ("1024", 4))
    }


def f4_verdict(dropped: set[str], recovers: dict[str, bool], epochs: int) -> str:
    """The study's two claims, each judged only where its batch dropped (more than one sd below the best batch
    <= 256) at the base epochs, since only a batch that dropped can recover: 512 recovers with more epochs,
    1,024 does not."""
    said, agree = [], []
    for batch, study_recovers in (("512", True), ("1024", False)):
        name = f"{int(batch):,}"
        if batch not in dropped:
            said.append(f"{name} did not drop at {epochs:,} epochs (nothing to recover)")
            continue
        agree.append(recovers[batch] == study_recovers)
        said.append(f"{name} recovers" if recovers[batch] else f"{name} does not recover")
    if not agree:
        return "not testable: " + ", ".join(said)
    shape = "reproduced" if all(agree) and len(agree) == 2 else "partly" if any(agree) else "not reproduced"
    return f"{shape}: " + ", ".join(said)


def arm_text(summary: xr.Dataset, table: pd.DataFrame, batch: str, epochs: int, amortization: str = "both") -> str:
    """A long arm's PCC, or "not done yet" where the sweep has it and it is still running."""
    if batch in table.index:
        return text(table, batch)
    selection = {"method": "destvi", "amortization": amortization, "batch_size": batch, "max_epochs": epochs}
    return "not done yet" if tasks_read(summary, selection)[1] else "not run"


def latent_long_arm(summary: xr.Dataset, epochs: int, sd: float) -> tuple[str, str] | None:
    """Latent 1,024 at 4x the epochs (the steps latent 256 takes at the base epochs), where the sweep has it:
    (its PCC in words, what it says of an unstable latent). It tells a latent that needs more steps at this
    scale from one that fails at a large batch however long it trains. None where the sweep lacks the arm."""
    long = 4 * epochs
    selection = {"method": "destvi", "amortization": "latent", "batch_size": 1024, "max_epochs": long}
    if not tasks_read(summary, selection)[1]:
        return None
    table = quality(summary, epochs=long)
    arm = table.loc["latent"] if "latent" in table.index.get_level_values(0) else table.iloc[:0]
    shown = f"latent 1,024 at {long:,} epochs (the steps of 256 at {epochs:,}): " + arm_text(
        summary, arm, "1024", long, "latent"
    )
    if "1024" not in arm.index:
        return shown, f"1,024 at {long:,} epochs not done yet"
    reference = float(quality(summary, epochs=epochs).loc[("latent", "256"), "mean"])
    if float(arm.loc["1024", "mean"]) >= reference - sd:
        return shown, f"1,024 recovers with {long:,} epochs: too few steps at {epochs:,}, not too large a batch"
    return shown, f"1,024 stays more than one sd below 256 with {long:,} epochs too"


def gpu_minutes() -> tuple[str, dict[str, pd.Series]]:
    """(the GPU's name, per engine the 2,500-epoch minutes by batch) from the committed GPU checks."""
    device, series = "", {}
    for path in sorted(GPU_CHECKS.glob("*.json")):
        check = json.loads(path.read_text())
        device = check["device_name"]
        for row in check["sections"].get("runtime_table", []):
            if "minutes_2500_epochs" in row:
                series.setdefault(row["engine"], {})[int(row["batch"])] = row["minutes_2500_epochs"]
    return device, {engine: pd.Series(by_batch).sort_index() for engine, by_batch in series.items()}


def gpu_f5() -> tuple[str, str] | None:
    """F5's GPU part: what it measured and its verdict, or None without a committed check."""
    device, series = gpu_minutes()
    if not series:
        return None
    study_ratio = STUDY_MINUTES[32] / STUDY_MINUTES[1024]
    parts, verdicts = [], []
    for engine, minutes in series.items():
        first, last = int(minutes.index[0]), int(minutes.index[-1])
        ratio = minutes[first] / minutes[last]
        parts.append(f"{engine}: " + ", ".join(f"{b} {m:.0f}" for b, m in minutes.items()))
        if last == 1024 and first == 32:
            falls = bool((np.diff(minutes.to_numpy()) <= 0).all())
            verdicts.append(
                f"{'reproduced' if falls and ratio >= study_ratio / 2 else 'not reproduced'} on the "
                f"{device} ({engine}, batch 32 / 1,024: {ratio:.0f}x; the study {study_ratio:.0f}x)"
            )
    measured = (
        f"{device}, 26,984 merfish-like spots, minutes for 2,500 epochs extrapolated from timing epochs "
        f"(results/gpu-h200), by batch: " + "; ".join(parts)
    )
    return measured, "; ".join(verdicts) or "no verdict: no engine timed from batch 32 to 1,024"


def c2l_minutes(summary: xr.Dataset) -> str:
    """Cell2location's training minutes, the fastest of the seeds done as for destVI, or that none is (yet)."""
    seconds = summary["train_time_s"].sel({"method": "cell2location"}).values
    done, total = tasks_read(summary, {"method": "cell2location"})
    if not np.isfinite(seconds).any():
        return "Cell2location not done yet" if total else "Cell2location not run"
    seeds = "1 seed" if done == 1 else f"fastest of {done} seeds"
    return f"Cell2location {np.nanmin(seconds) / 60:.1f} ({seeds})"


def finding_f5(name: str, summary: xr.Dataset | None) -> list[str]:
    study = ", ".join(f"{b} {STUDY_MINUTES[b]}" for b in (32, 128, 1024))
    says = f"training time falls steeply with batch size (RTX 3090, minutes: batch {study}; Cell2location 123)"
    row = unfinished("F5", says, name, summary, both_base_arms)
    gpu = gpu_f5()
    if row is not None:
        return row if gpu is None else ["F5", says, f"{gpu[0]}; {row[2]}", f"{gpu[1]}; the {name} run: {row[3]}"]
    epochs = base_epochs(summary)
    seconds = summary["train_time_s"].sel(
        {"method": "destvi", "variant": "2022", "amortization": "both", "max_epochs": epochs}
    )
    # The fastest seed: on a shared machine other work only ever adds time, so the least disturbed run is
    # the best estimate of the model's own (as timeit reads its repeats).
    minutes = seconds.squeeze(drop=True).min("seed").to_series().dropna() / 60
    minutes.index = minutes.index.astype(int)
    minutes = minutes.sort_index()
    device = json.loads(summary.attrs.get("provenance", "{}")).get("device", "unknown device")
    first, last = int(minutes.index[0]), int(minutes.index[-1])
    ratio, study_ratio = minutes[first] / minutes[last], STUDY_MINUTES[first] / STUDY_MINUTES[last]
    parts = [
        f"{name} on {device}, {epochs:,} epochs, minutes (fastest of the seeds): "
        + ", ".join(f"batch {b} {m:.1f}" for b, m in minutes.items()),
        c2l_minutes(summary),
        f"batch {first} / {last}: {ratio:.1f}x here, {study_ratio:.1f}x in the study",
    ]
    falls = bool((np.diff(minutes.to_numpy()) <= 0).all())
    if ratio >= study_ratio / 2 and falls:
        verdict = "reproduced"
    elif ratio > 2:
        verdict = f"partly: falls {ratio:.1f}x, not {study_ratio:.0f}x"
    else:
        verdict = f"not reproduced: batch {first} takes {ratio:.1f}x batch {last}'s time"
    if device == "cpu" and not verdict.startswith("reproduced"):
        verdict += " (on a CPU a step's arithmetic grows with the batch, so an epoch costs about the same at any batch)"
    if gpu is not None:
        parts.append(gpu[0])
        verdict = f"{name}: {verdict}; {gpu[1]}"
    return ["F5", says, "; ".join(parts), verdict]


def table() -> str:
    starmap57, starmap189 = load("starmap-57"), load("starmap-189")
    merfish_name, merfish = merfish_run({name: load(name) for name in MERFISH})
    rows = [
        finding_f1(starmap189),
        finding_f2(starmap57),
        finding_f3(merfish_name, merfish),
        finding_f4(merfish_name, merfish),
        finding_f5(merfish_name, merfish),
        finding_rule(
            {"starmap-57": starmap57, "starmap-189": starmap189, "starmap-like": load("starmap-like")}
            | {merfish_name: merfish}
        ),
    ]
    lines = [
        "| finding | the study says | spotsweep measured (PCC, mean +- sd over seeds: STARmap excitatory layers,"
        " MERFISH all types) | verdict |",
        "| --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the table in README.md")
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args()
    current = table()
    if not (args.check or args.write):
        print(current)
        return
    readme = (HERE / "README.md").read_text()
    head, rest = readme.split(BEGIN, 1)
    committed, tail = rest.split(END, 1)
    if args.write:
        text_now = f"{head}{BEGIN}\n{current}\n{END}{tail}"
        write_atomically(HERE / "README.md", lambda tmp: tmp.write_text(text_now))  # never half a README
        print("wrote the findings table into results/study-2022/README.md")
        return
    committed = committed.strip()
    if committed != current:
        sys.exit("results/study-2022/README.md: the findings table differs from findings.py's; paste its output there.")
    print("the README's findings table is what findings.py computes")


if __name__ == "__main__":
    main()
