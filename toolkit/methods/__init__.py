"""Method adapters: one module per method, each driving its library, never re-implementing it.

An adapter module has
- `REFERENCE_KIND`: the name of the reference model it trains once per dataset, or None;
- `train_reference(reference, config, model_dir) -> seconds` when it has one;
- `fit(spots, reference, model_dir, task) -> FitResult`.
Adapters are imported on first use: scvi-tools and pyro are slow to import.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ADAPTERS = {
    "destvi": "toolkit.methods.destvi",
    "cell2location": "toolkit.methods.cell2location",
    "stereoscope": "toolkit.methods.stereoscope",
    "control": "toolkit.methods.controls",
}


def adapter(method: str) -> ModuleType:
    """The adapter module of a method named in a sweep file (names are validated there)."""
    return importlib.import_module(ADAPTERS[method])
