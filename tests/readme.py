"""README.md's marked bash blocks, read from the README itself and run as written (with paths pointed elsewhere).

A block follows a `<!-- readme-test: NAME -->` line; the tests that run them are test_readme_quickstart.py
(the first hour on one machine) and test_readme_cluster.py (the three ways on a cluster).
"""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO


def readme_block(name: str) -> str:
    """The bash block after `<!-- readme-test: NAME -->` in README.md."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- readme-test: {re.escape(name)} -->\s*```bash\n(.*?)```", text, re.DOTALL)
    assert match, f"README.md has no block marked readme-test: {name}"
    return match.group(1)


def run_script(name: str, script: str, paths: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a script with bash from the repository root, each written path replaced by the test's."""
    for written, here in paths.items():
        script = script.replace(written, here)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=3600
    )
    assert done.returncode == 0, f"README block {name} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return done


def run_block(name: str, paths: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the README's block NAME as written, with only its paths pointed at the test's."""
    return run_script(name, readme_block(name), paths)
