"""Whether a part of this evidence is finished, from the committed files alone: exit 0 if so, 1 if not.

run.sh asks before each part, so that on a fresh clone (no tasks/) a finished tune is not reported again
with its trials' tasks missing, and a finished confirmation or anchor is not trained again over its
committed summary.nc.

    python results/tune-starmap-189/finished.py tune results/tune-starmap-189/seed-0 20
    python results/tune-starmap-189/finished.py run results/tune-starmap-189/seed-0/confirm
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))
from compare import done_values  # noqa: E402

from toolkit.layout import OutputLayout  # noqa: E402
from toolkit.tune.study import load_study  # noqa: E402

FINISHED = {"COMPLETE", "PRUNED", "FAIL"}


def tune_finished(folder: Path, trials: int) -> bool:
    """`trials` trials ended (as `--trials` counts them) and best.yaml written."""
    study = load_study(OutputLayout(folder))
    if study is None or not (folder / "tune" / "best.yaml").is_file():
        return False
    return sum(trial.state.name in FINISHED for trial in study.get_trials(deepcopy=False)) >= trials


def run_finished(folder: Path) -> bool:
    """Every destVI task of the run done, in its summary.nc."""
    values, _, _ = done_values(folder / "summary.nc")
    return len(values) > 0


if __name__ == "__main__":
    kind, folder = sys.argv[1], Path(sys.argv[2])
    done = tune_finished(folder, int(sys.argv[3])) if kind == "tune" else run_finished(folder)
    sys.exit(0 if done else 1)
