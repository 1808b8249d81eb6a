"""The one verdict rule of results/study-2022: a contrast between two settings, judged from their seeds alone.

findings.py applies `verdict` to every claim of the study and `resolved` to every comparison its narratives
rest on; the rule's words (`RULE`) are written into the README by `findings.py --write`, so the text a
reader sees and the code that decides are one. Plain numbers in, no xarray: the rule is testable on
hand-made seeds (tests/test_study_findings.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

Direction = Literal["higher", "lower"]
"""What the study says of A against B (a claim that A 'holds', i.e. does not fall below B, reads 'higher')."""

REPRODUCED, CONTRADICTED, NOT_TESTABLE = "reproduced", "contradicted", "not testable at this scale"
LEVEL = 0.95

RULE = """\
**The verdict rule**, the same for every row. A claim is a contrast between two settings A and B of one
experiment, with the study's direction (A above B, or below). From the seeds of A and B alone (each seed
one training run; no sd is taken from any other setting), `contrasts.py` computes the difference of means
A - B, its 95% Welch interval (`scipy.stats.ttest_ind`, unequal variances), n per side, and whether the
seeds separate completely (every seed of one side beyond every seed of the other). Then:

- **reproduced**: the interval excludes 0 in the study's direction *and* the seeds separate completely in
  that direction;
- **contradicted**: the interval excludes 0 in the opposite direction *and* the seeds separate completely
  in that direction;
- **not resolved at n seeds**: anything else, including a side with a single run (no interval);
- **not testable at this scale**: decided from the setting, not the values: the experiment cannot
  represent the study's condition (its number of spots, or of epochs, is more than 2x off the study's,
  so its optimizer steps per batch are too; or a CPU stands in for the study's GPU); the row names why
  and still shows the numbers. The study's batch-size rule is a claim for any number of spots, so only
  its epochs are checked.

Where A and B are the same runs read at two training budgets (a trajectory read at 5,000 and at 30,000
steps), the seeds are paired: the interval is that of the mean seed-by-seed difference (`ttest_rel`), and
the seeds separate when every seed's difference has the same sign (a sign test's smallest two-sided p:
2 / 2^n, 0.25 at 3 seeds, 0.06 at 5).

A claim that something *holds* (does not fall) is read in its direction, A not below B: the data
contradict it where A is resolved below B, reproduce it only where A is resolved above, and otherwise
leave it not resolved, since a few seeds cannot show two settings equal; the interval then says how large
a fall they still allow. Both conditions are asked for because each is weak alone with 3 seeds: the Welch
interval has about 2-4 degrees of freedom and leans on normality, and complete separation of 3 seeds
against 3 happens by chance with probability 2 / C(6, 3) = 0.10 (the exact two-sided rank test's
smallest p; 4 against 4: 0.029; 5 against 5: 0.008), so it can never by itself reach 0.05. The rule says
whether a difference is resolved, not whether it matters: each row prints the difference, so a resolved
0.004 reads as the small thing it is."""


@dataclass(frozen=True)
class Contrast:
    """A - B from the seeds of each side: what every verdict is read from."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    low: float
    """The 95% Welch interval of the difference (nan where a side has fewer than 2 seeds)."""
    high: float
    separated: int
    """+1: every seed of A above every seed of B; -1: every one below; 0: they overlap (or a side is empty).
    Paired: +1 where every seed's A is above its B, -1 where every one is below."""
    paired: bool = False
    """A and B are the same seeds' runs read twice (e.g. at two budgets): n_a == n_b pairs."""

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def rank_p(self) -> float:
        """The smallest two-sided p an exact rank test can give at these n (what complete separation is worth)."""
        if not (self.n_a and self.n_b):
            return 1.0
        if self.paired:  # the sign test: every one of n differences on one side
            return min(1.0, 2 / 2**self.n_a)
        return min(1.0, 2 / math.comb(self.n_a + self.n_b, self.n_a))


def compare(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Contrast:
    """The contrast A - B of two sides' per-seed values (nan values, e.g. unfinished tasks, are left out)."""
    x, y = (np.asarray([v for v in values if np.isfinite(v)], dtype=float) for values in (a, b))
    interval = None
    if len(x) > 1 and len(y) > 1 and (x.std() > 0 or y.std() > 0):
        interval = stats.ttest_ind(x, y, equal_var=False).confidence_interval(level)
    separated = 0
    if len(x) and len(y):
        separated = 1 if x.min() > y.max() else -1 if x.max() < y.min() else 0
    return _contrast(x, y, interval, separated, paired=False)


def compare_paired(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Contrast:
    """The contrast A - B of the same seeds' runs read twice (a[i] and b[i] one seed's); a seed with either
    value missing is left out."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    differences = x - y
    interval = None
    if len(differences) > 1 and differences.std() > 0:
        interval = stats.ttest_rel(x, y).confidence_interval(level)
    separated = 0
    if len(differences):
        separated = 1 if (differences > 0).all() else -1 if (differences < 0).all() else 0
    return _contrast(x, y, interval, separated, paired=True)


def _contrast(x: np.ndarray, y: np.ndarray, interval: Any, separated: int, paired: bool) -> Contrast:
    """The Contrast of two sides' kept values and their interval; where the values leave no spread (every
    difference the same) the interval is the difference itself, and where a side has one value, none."""
    low = high = math.nan
    if interval is not None:
        low, high = float(interval.low), float(interval.high)
    elif len(x) > 1 and len(y) > 1:
        low = high = float(x.mean() - y.mean())
    return Contrast(
        n_a=len(x),
        n_b=len(y),
        mean_a=float(x.mean()) if len(x) else math.nan,
        mean_b=float(y.mean()) if len(y) else math.nan,
        sd_a=float(x.std(ddof=1)) if len(x) > 1 else math.nan,
        sd_b=float(y.std(ddof=1)) if len(y) > 1 else math.nan,
        low=low,
        high=high,
        separated=separated,
        paired=paired,
    )


def resolved(contrast: Contrast) -> int:
    """+1 where A is resolved above B (interval above 0 and the seeds separate), -1 below, 0 not resolved."""
    if contrast.low > 0 and contrast.separated == 1:
        return 1
    if contrast.high < 0 and contrast.separated == -1:
        return -1
    return 0


def seeds(contrast: Contrast, unit: str = "seed") -> str:
    """'3 seeds', or '1 v 3 seeds' where the sides differ: the n a 'not resolved' is at."""
    if contrast.n_a == contrast.n_b:
        return f"{contrast.n_a} {unit}" + ("s" if contrast.n_a != 1 else "")
    return f"{contrast.n_a} v {contrast.n_b} {unit}s"


def verdict(contrast: Contrast, direction: Direction, not_testable: str | None = None, unit: str = "seed") -> str:
    """The rule (RULE) for a claim that A is `direction` than B; `not_testable` is the setting's reason, if any;
    `unit` names what the n counts (seeds of training; runs of a timing)."""
    if not_testable:
        return NOT_TESTABLE
    sign = resolved(contrast)
    if sign == 0:
        return f"not resolved at {seeds(contrast, unit)}"
    return REPRODUCED if sign == (1 if direction == "higher" else -1) else CONTRADICTED
