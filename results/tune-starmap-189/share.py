"""Tuner seed 0's prepared inputs and reference model shared into another folder of this evidence (hard links).

Every tuner seed, its confirmation and the anchor then train against one CondSCVI, seed 0's (its models/ is
committed, so a run resumed on another machine keeps it): a reference trained again moves the results (E6,
results/study-2022/README.md), and the tuner seeds would otherwise differ by their references too.

    python results/tune-starmap-189/share.py results/tune-starmap-189/seed-1
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from toolkit.layout import OutputLayout  # noqa: E402
from toolkit.tune.best import share_prepared  # noqa: E402

SOURCE = HERE / "seed-0"

if __name__ == "__main__":
    if not (SOURCE / "models").is_dir():
        sys.exit(f"{SOURCE}: no models/ yet; run tuner seed 0 first (results/tune-starmap-189/run.sh).")
    for folder in sys.argv[1:]:
        share_prepared(OutputLayout(SOURCE), OutputLayout(Path(folder)))
