"""What batch size to use: the evidence table behind the answer, and the five-line answer the repository's
README opens with, both computed from the committed summaries (findings.py writes them into the READMEs).

Every number in the answer is read here, with findings.py's measure and its one verdict rule; its words
only join them, and say "not run yet" or "so far" where an experiment is missing or unfinished.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr
from contrasts import compare, resolved
from findings import (
    CLAIMS,
    COMPARISONS,
    E1,
    EPOCHS,
    EXPERIMENTS,
    SCALE_TOLERANCE,
    SHIFTS,
    _batch_key,
    _measure,
    at_budget_side,
    base_epochs,
    cell,
    fmt,
    judge,
    n_spots,
    pick,
    settings,
    side_seeds,
)

ADVICE_EXPERIMENTS = (
    "starmap-57", "starmap-57-seeds", "starmap-189", "starmap-189-seeds", "starmap-189-current",
    "starmap-189-reference-shift", "starmap-like", "merfish-scaled",
)  # fmt: skip
"""Where a batch-size rule can be judged: experiments sweeping the batch at one epoch budget."""
RULES = {
    "min(n/10, 128)": lambda n: min(n // 10, 128),
    "min(n/20 + 3, 128)": lambda n: min(n // 20 + 3, 128),
}
"""Batch-size rules: the study's, and openproblems' (its destVI runs use min(n_spots / 20 + 3, 128))."""


@dataclass(frozen=True)
class Advice:
    """One batch sweep of one reference, variant and amortization, as the batch-size rules see it."""

    where: str
    spots: int
    variant: str
    amortization: str
    best: int
    best_values: np.ndarray
    values: dict[int, np.ndarray]
    """Every batch's per-seed values."""
    near: list[int]
    """The batches the rule does not resolve below the best (the best among them)."""
    batches: list[int]
    rules: dict[str, tuple[int, float | None, str]]
    """Per rule: its batch, that batch's mean (None: not run) and "the best" / "(not) resolved below"."""
    nnls: str
    epochs: int
    """The epochs its tasks trained (the experiment's base)."""


def advice_records(name: str, summary: xr.Dataset) -> list[Advice]:
    """Per reference (dataset), variant and amortization at the base epochs: the best batch by mean, the
    batches the rule does not resolve below it, and where each batch-size rule lands."""
    frame = settings(name, summary)
    frame = frame[frame["max_epochs"] == base_epochs(summary)]
    spots = n_spots(summary)
    nnls = pick(summary, {"method": "control", "variant": "nnls"})
    nnls_value = _measure(name, nnls).where(nnls["status"] == "done").values
    nnls_text = fmt(float(np.nanmean(nnls_value)), 3) if np.isfinite(nnls_value).any() else "not run"
    records = []
    for (dataset, variant, amortization), part in frame.groupby(["dataset", "variant", "amortization"]):
        by_batch = {int(g["used"].max()): g["value"].to_numpy() for _, g in part.groupby("batch_size")}
        best = max(by_batch, key=lambda b: by_batch[b].mean())
        near = [b for b in sorted(by_batch) if b == best or resolved(compare(by_batch[b], by_batch[best])) != -1]
        rules = {}
        for words, rule in RULES.items():
            batch = rule(spots)
            if batch not in by_batch:
                rules[words] = (batch, None, "not run")
                continue
            below = resolved(compare(by_batch[batch], by_batch[best])) == -1
            verdict = "the best" if batch == best else "resolved below" if below else "not resolved below"
            rules[words] = (batch, float(by_batch[batch].mean()), verdict)
        where = f"{name} ({SHIFTS[dataset]})" if dataset in SHIFTS else name
        records.append(
            Advice(
                where,
                spots,
                variant,
                amortization,
                best,
                by_batch[best],
                by_batch,
                near,
                sorted(by_batch),
                rules,
                nnls_text,
                base_epochs(summary),
            )
        )
    return records


def advice_row(record: Advice) -> str:
    rules = [f"{batch}: not run" if mean is None else f"{batch}: {fmt(mean, 3)}, {verdict}"
             for batch, mean, verdict in record.rules.values()]  # fmt: skip
    return (
        f"| {record.where} | {record.spots:,} | {record.epochs:,}{'' if counted(record) else ' (not counted)'} | "
        f"{record.variant} | {record.amortization} | "
        f"{record.best}: {cell(record.best_values)} | {', '.join(map(str, record.near))} of "
        f"{', '.join(map(str, record.batches))} | " + " | ".join(rules) + f" | {record.nnls} |"
    )


def all_advice(summaries: Mapping[str, xr.Dataset | None]) -> list[Advice]:
    return [r for name in ADVICE_EXPERIMENTS if (s := summaries.get(name)) is not None for r in advice_records(name, s)]


def advice_block(summaries: Mapping[str, xr.Dataset | None]) -> str:
    """The evidence behind "what batch size to use": every batch sweep, all its seeds, judged by the one rule."""
    lines = [
        "| experiment | spots | epochs | destVI | amortization | best batch by mean | batches not resolved below the "
        "best (of those run) | " + " | ".join(RULES) + " | NNLS control |",
        "| --- | ---: | ---: | --- | --- | --- | --- |" + " --- |" * (len(RULES) + 1),
    ]  # fmt: skip
    return "\n".join(lines + [advice_row(record) for record in all_advice(summaries)])


# --- the five-line answer -------------------------------------------------------------------------------


def _row(says: str, summaries: Mapping[str, xr.Dataset | None]):
    """findings.py's row of the claim or comparison that says `says`."""
    claim = next(c for c in [*CLAIMS, *COMPARISONS] if c.says == says)
    return judge(claim, summaries)


def _mean(values: np.ndarray) -> str:
    return fmt(float(values.mean()), 3) if len(values) else "n/a"


def _verdict(outcome: str) -> str:
    return {"A above B": "resolved above", "A below B": "resolved below"}.get(outcome, outcome)


def _outcomes(rows: list) -> str:
    """The rule's outcomes of parallel rows, said once where they agree."""
    outcomes = [row.outcome for row in rows]
    return f"{outcomes[0]} in both" if len(set(outcomes)) == 1 else " and ".join(outcomes)


def line_189(summaries: Mapping[str, xr.Dataset | None]) -> str:
    rows = [_row(f"batch 16 beats 128 ({am})", summaries) for am in ("both", "latent")]
    dips = [_row(f"the dip: auto vs 16 ({am})", summaries) for am in ("both", "latent")]
    if any(r.contrast is None for r in rows + dips):
        return "1. **189 STARmap spots**: starmap-189 not run yet."
    pairs = " and ".join(f"{_mean(r.a.values)} against {_mean(r.b.values)}" for r in rows)
    rule = dips[0].a.label.split("(")[-1].strip(")")
    return (
        f"1. **189 STARmap spots: the study's direction, not its loss.** Batch 16 beats 128 with both "
        f"amortizations (excitatory-layer PCC {pairs}; {_outcomes(rows)}), yet batch 128 still draws the layers, "
        f"and the rule's batch, {rule}, falls to {_mean(dips[0].a.values)} and {_mean(dips[1].a.values)} "
        f"(against 16: {_outcomes(dips).replace('A below B', 'resolved below')})."
        + last_minibatch_clause(summaries)
        + reference_clause(summaries)
    )


def last_minibatch_clause(summaries: Mapping[str, xr.Dataset | None]) -> str:
    """E3 beside line 1: is the dip at 18 its short last minibatch (189 = 10 x 18 + 9)? Batch 18 against 16 with
    every minibatch full, once every task of those rows is done (the one gate)."""
    amortizations = ("both", "latent")
    rows = [_row(f"18 vs 16 (last minibatch dropped, {am})", summaries) for am in amortizations]
    if any(row.contrast is None or row.outcome.startswith("no verdict") for row in rows):
        return ""
    pairs = zip(rows, amortizations, strict=True)
    each = " and ".join(f"{_mean(r.a.values)} against {_mean(r.b.values)} ({am})" for r, am in pairs)
    return (
        f" Not its short last minibatch (9 spots): with it dropped, every minibatch full (E3), 18 against 16 is "
        f"{each}, {_outcomes(rows).replace('A below B', 'resolved below')}."
    )


REFERENCE_SEEDS = (0, 1, 2)
"""E6's CondSCVI seeds (starmap-189-reference-seed.yaml)."""


def reference_clause(summaries: Mapping[str, xr.Dataset | None]) -> str:
    """E6 beside line 1: batch 18 (the rule's) against 16 within each of three reference models trained from
    different seeds, once every task of those rows is done (the one gate: no verdict on part of the seeds)."""
    rows = [_row(f"18 vs 16 (reference seed {seed})", summaries) for seed in REFERENCE_SEEDS]
    if any(row.contrast is None or row.outcome.startswith("no verdict") for row in rows):
        return ""
    below = sum(row.outcome == "A below B" for row in rows)
    each = "; ".join(
        f"seed {seed}: {_mean(row.a.values)} against {_mean(row.b.values)}, {_verdict(row.outcome)}"
        for seed, row in zip(REFERENCE_SEEDS, rows, strict=True)
    )
    return (
        f" With the CondSCVI reference itself trained from three seeds (E6, both, 3 training seeds against each), "
        f"18 is resolved below 16 with {below} of the 3 reference models ({each})."
    )


def line_steps(summaries: Mapping[str, xr.Dataset | None]) -> str:
    summary = summaries.get(E1)
    if summary is None:
        return "2. **Equal steps (E1)**: not run yet."
    at = "30,000 steps"
    batches = sorted({str(b) for b in settings(E1, summary)["batch_size"]}, key=_batch_key)
    parts, partial = [], False
    for am in ("both", "latent"):
        sides = {int(b): side_seeds(at_budget_side(am, int(b), at), summaries) for b in batches}
        values = {b: side.values for b, side in sides.items() if len(side.values)}
        if not values:
            continue
        listed = ", ".join(f"{b}: {_mean(v)}" for b, v in values.items())
        best = max(values, key=lambda b: values[b].mean())
        seeds = sorted({len(v) for v in values.values()})
        judged = ""
        if any(side.done < side.total for side in sides.values()):  # findings.py's gate: no verdict on part
            partial = True
        else:
            below = [b for b, v in values.items() if b != best and resolved(compare(v, values[best])) == -1]
            judged = f", {', '.join(map(str, below))} resolved below it" if below else ", none resolved below it"
        parts.append(f"{am} (batch {listed}; {'-'.join(map(str, seeds))} seeds): best {best}" + judged)
    done = int((summary["status"] == "done").sum())
    total = int((summary["status"] != "absent").sum())
    so_far = "" if done == total else f", {done} of {total} tasks done so far"
    return (
        f"2. **Equal steps (E1{so_far}).** Given every batch the same {at} and the same KL warm-up in steps, "
        "excitatory-layer PCC at the end is: "
        + "; ".join(parts)
        + (" (best by mean so far: the rule judges once every seed is done)" if partial else "")
        + ". In starmap-189 every batch had 2,500 epochs, "
        "so batch 4 took 24x the steps of batch 128."
    )


def _controls(name: str, summary: xr.Dataset) -> tuple[float, int, int, int, float]:
    """NNLS's measure, the destVI settings below it by mean and with every seed below it, their number, and
    Cell2location's mean."""
    frame = settings(name, summary)
    by_setting = frame.groupby([k for k in frame if k not in ("seed", "epochs", "steps", "used", "value")])["value"]
    means, highs = by_setting.mean(), by_setting.max()
    nnls = pick(summary, {"method": "control", "variant": "nnls"})
    value = float(np.nanmean(_measure(name, nnls).where(nnls["status"] == "done").values))
    c2l = pick(summary, {"method": "cell2location", "variant": "default"})
    c2l_value = float(np.nanmean(_measure(name, c2l).where(c2l["status"] == "done").values))
    return value, int((means < value).sum()), int((highs < value).sum()), len(means), c2l_value


def line_controls(summaries: Mapping[str, xr.Dataset | None]) -> str:
    parts, c2l = [], []
    for name in ("starmap-57", "starmap-189"):
        if (summary := summaries.get(name)) is None:
            continue
        value, below, every_seed, total, c2l_value = _controls(name, summary)
        parts.append(
            f"{fmt(value, 3)} on {n_spots(summary)} spots (above {below} of its {total} destVI settings by mean, "
            f"above every seed of {every_seed})"
        )
        c2l.append(fmt(c2l_value, 3))
    return (
        "3. **Controls first.** An untrained NNLS fit of each spot on the reference's mean profiles reaches "
        + " and ".join(parts)
        + f"; Cell2location, the study's baseline, reaches {' and '.join(c2l)}, above every destVI setting."
    )


CHECKED = (20, 10, 5)
"""The three-batch check the answer proposes: the batches nearest n/20, n/10 and n/5 (at most 128)."""


def checked(record: Advice) -> list[int]:
    """The batches of `record`'s sweep a three-batch check would have trained: the nearest (on a log scale)
    to n/20, n/10 and n/5, each at most 128."""
    targets = [min(max(record.spots / d, 1), 128) for d in CHECKED]
    return sorted({min(record.batches, key=lambda b, t=t: abs(math.log(b / t))) for t in targets})


def counted(record: Advice) -> bool:
    """Whether a batch sweep trained at about the study's epochs (the verdict rule's scale check): the
    answer's counts leave the others out, as the rule leaves them untested."""
    return max(record.epochs / EPOCHS, EPOCHS / record.epochs) <= SCALE_TOLERANCE


def line_advice(summaries: Mapping[str, xr.Dataset | None]) -> str:
    everything = all_advice(summaries)
    records = [record for record in everything if counted(record)]
    if not records:
        return "4. **What batch size to use**: no batch sweep at about the study's 2,500 epochs has run yet."
    left_out = sorted({f"{r.where} at {r.epochs:,} epochs" for r in everything if not counted(r)})
    study = [record.rules["min(n/10, 128)"] for record in records]
    ok = sum(verdict in ("the best", "not resolved below") for _, _, verdict in study)
    losses = [float(r.best_values.mean()) - mean for r, (_, mean, v) in zip(records, study, strict=True)
              if v == "resolved below" and mean is not None]  # fmt: skip
    hits = [record for record in records if set(checked(record)) & set(record.near)]
    misses = [r for r in records if r not in hits]
    gaps = [float(r.best_values.mean()) - max(float(np.mean(by)) for by in _values(r, checked(r))) for r in misses]
    fractions = sorted({round(r.spots / r.best, 1) for r in records})
    edges = sum(r.best in (min(r.batches), max(r.batches)) for r in records)
    return (
        f"4. **What batch size to use: check three.** Across {len(records)} batch sweeps (reference x variant x "
        f"amortization) at about the study's 2,500 epochs"
        + (f" (left out: {', '.join(left_out)})" if left_out else "")
        + f", the best batch by mean ranged from n/{fractions[-1]:g} to n/{fractions[0]:g} of the n spots"
        + (
            f" (in {edges} the largest or smallest batch run, so the range is the grids' as much as the data's)"
            if edges
            else ""
        )
        + ". "
        f"The study's min(n/10, 128) was the best or not resolved below it in {ok}, and resolved below it in "
        f"{len(records) - ok}"
        + (f", by {fmt(min(losses), 3)} to {fmt(max(losses), 3)}" if losses else "")
        + f". The batches nearest n/20, n/10 and n/5 (at most 128), 3 seeds each, held one not resolved below the "
        f"best in {len(hits)} of {len(records)}"
        + (f" (the others lost at most {fmt(max(gaps), 3)})" if gaps else "")
        + ": train those three (or `spotsweep tune` on pseudospots of your own cell-resolution data at your spots' "
        "size and number), keep the best, and keep destVI only where it beats the NNLS control (and Cell2location, "
        "where you can run it)."
    )


def _values(record: Advice, batches: list[int]) -> list[np.ndarray]:
    """The per-seed values of `batches` in `record`'s sweep (kept on the record for the check)."""
    return [record.values[b] for b in batches]


OPEN_QUESTIONS = {
    "starmap-189-reference-shift": "the cross-technology reference (E2)",
    "starmap-189-drop-last": "the last minibatch (E3)",
    "starmap-189-current": "today's destVI (E4)",
    "starmap-189-seeds": "5 seeds (E5)",
    "starmap-57-seeds": "5 seeds (E5)",
    "starmap-189-reference-seed": "the reference model's seed (E6)",
}
"""The issue's experiments that can still change lines 1-4, in the words line 5 names them while they run."""


def line_pending(summaries: Mapping[str, xr.Dataset | None]) -> str:
    """Which experiments have not finished, each with its state; only those are named as still open."""
    pending: dict[str, list[str]] = {}
    for name in EXPERIMENTS:
        summary = summaries.get(name)
        if summary is None:
            state = f"{name} (not run)"
        else:
            done, total = int((summary["status"] == "done").sum()), int((summary["status"] != "absent").sum())
            state = f"{name} ({done} of {total} tasks)" if done < total else ""
        if state:
            pending.setdefault(OPEN_QUESTIONS.get(name, name), []).append(state)
    if not pending:
        return "5. Every experiment has run."
    questions = list(pending)
    named = questions[0] if len(questions) == 1 else ", ".join(questions[:-1]) + " and " + questions[-1]
    states = [state for group in pending.values() for state in group]
    return f"5. **Still open**, and able to change lines 1-4: {named}; not done yet: " + ", ".join(states) + "."


def answer_block(summaries: Mapping[str, xr.Dataset | None]) -> str:
    """The README's opening answer: five lines, each number from the summaries."""
    lines = [line_189, line_steps, line_controls, line_advice, line_pending]
    return "\n".join(line(summaries) for line in lines)
