"""Write the image's pin list: every package spotsweep needs at run time, at the version installed here.

The pins come from the environment the test suite passed in (the project's .venv), so the image gets the
versions that were tested, not whatever the index offers on the day of the build. Development tools
(pytest, ruff) are not pulled in: only the closure of spotsweep's own requirements.
Run with the venv's python: `.venv/bin/python hpc/apptainer/relock.py > hpc/apptainer/requirements.lock`.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(requirements: list[str]) -> dict[str, str]:
    """Installed name -> version for the requirements and everything they need (extras followed, markers evaluated)."""
    seen: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [(req.name, frozenset(req.extras)) for req in map(Requirement, requirements) if _applies(req, frozenset())]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in visited:
            continue
        visited.add((canonicalize_name(name), extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            sys.exit(f"relock: {name} is required but not installed here; run `make install` first.")
        seen[canonicalize_name(dist.metadata["Name"])] = dist.version
        needs = [Requirement(text) for text in dist.requires or []]
        todo += [(req.name, frozenset(req.extras)) for req in needs if _applies(req, extras)]
    return seen


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    """Whether a requirement holds on this platform for a package installed with these extras."""
    environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
    return req.marker is None or any(req.marker.evaluate(env) for env in environments)


def main() -> None:
    # The project's own requirements are read from pyproject.toml: installed metadata can be stale.
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    pins = closure(project["dependencies"])
    print("# Pins for containers/Apptainer.def: spotsweep's run-time closure, from the tested .venv.")
    print("# Regenerate: .venv/bin/python hpc/apptainer/relock.py > hpc/apptainer/requirements.lock")
    print(f"# Python {sys.version.split()[0]}")
    for name in sorted(pins):
        # A local label (+cpu, +cu128) names a build, not a version: the image picks its own build.
        print(f"{name}=={pins[name].split('+')[0]}")


if __name__ == "__main__":
    main()
