"""The study's findings table is recomputable: findings.py reads the committed summary.nc files and its
output is exactly the table in results/study-2022/README.md."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_readme_findings_table_is_what_findings_py_computes() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "results" / "study-2022" / "findings.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
