"""Method adapters: one module per method, each driving its library, never re-implementing it.

An adapter module has
- `Grid`: its part of the sweep file, a `toolkit.methods.configs.MethodGrid` with `name: Literal[...]`;
- `REFERENCE_KIND`: the name of the reference model it trains once per dataset, or None;
- `train_reference(reference, config, model_dir) -> seconds` when it has one;
- `fit(spots, reference, model_dir, task) -> FitResult`, `task` a `base.TaskSpec`.
A new method is its module plus one line in `ADAPTERS`. Adapters import their libraries (scvi-tools,
pyro: slow to import) inside their functions, so that reading a sweep file stays quick.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from toolkit.methods.configs import MethodGrid

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


def grids() -> tuple[type[MethodGrid], ...]:
    """Every registered method's grid, for the sweep file's `methods:` union."""
    return tuple(adapter(name).Grid for name in ADAPTERS)
