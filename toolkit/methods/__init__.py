"""Method adapters: one module per method, each driving its library, never re-implementing it.

How to add a method (tests/methods_echo.py is a complete one, tests/test_new_method.py runs it through a
sweep to its report):
1. Write its module, `toolkit/methods/<name>.py`, holding
   - `Grid`: its part of the sweep file, a `toolkit.methods.configs.MethodGrid` (or `OneVariantGrid`) with
     `name: Literal["<name>"]`;
   - `DESCRIPTION`: a `toolkit.methods.description.MethodDescription` saying what the stages need (its
     place in the maps, whether it trains, its optimizer steps for `plan`, which zeros are its own); a
     subclass overrides what differs from a method trained in minibatches for `max_epochs` epochs;
   - `REFERENCE_KIND`: the name of the reference model it trains once per dataset, or None;
   - `train_reference(reference, config, model_dir) -> seconds` when it has one;
   - `fit(spots, reference, model_dir, task, score=None) -> FitResult`, `task` a `base.TaskSpec`.
2. Add one line to `ADAPTERS` below.
No stage (plan, task, aggregate, status, report) names a method; they ask `describe(name)`. Adapters
import their libraries (scvi-tools, pyro: slow to import) inside their functions, so that reading a sweep
file stays quick, and they never import one another (the import contracts in pyproject.toml).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from toolkit.methods.configs import MethodGrid
from toolkit.methods.description import MethodDescription

ADAPTERS = {
    "destvi": "toolkit.methods.destvi",
    "cell2location": "toolkit.methods.cell2location",
    "stereoscope": "toolkit.methods.stereoscope",
    "control": "toolkit.methods.controls",
}
"""The method registry: the name a sweep file uses -> its adapter module."""


def adapter(method: str) -> ModuleType:
    """The adapter module of a method named in a sweep file (names are validated there)."""
    return importlib.import_module(ADAPTERS[method])


def describe(method: str) -> MethodDescription:
    """What the stages need to know of a method. A name no longer registered (a summary of an older sweep,
    drawn again) gets the defaults of a trained method, so that its report is still drawn."""
    if method not in ADAPTERS:
        return MethodDescription(method)
    return adapter(method).DESCRIPTION


def grids() -> tuple[type[MethodGrid], ...]:
    """Every registered method's grid, for the sweep file's `methods:` union."""
    return tuple(adapter(name).Grid for name in ADAPTERS)
