"""Property-based tests (hypothesis) of the sweep and profile schemas: whatever a user writes, the answer
is a valid configuration or one SpotsweepError sentence naming the file, never a traceback.

Two kinds of input: mutations of real files (sweeps/*.yaml, hpc/profiles/*.yaml) with one value
replaced, deleted or added anywhere in the tree, which is how real mistakes look; and YAML text of
arbitrary shape. A configuration that validates must also expand into tasks (or refuse in a sentence).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from toolkit.backends.slurm.profile import parse_profile  # noqa: E402
from toolkit.config import parse_sweep  # noqa: E402
from toolkit.errors import SpotsweepError  # noqa: E402
from toolkit.sweep import count_tasks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SWEEPS = {path.name: yaml.safe_load(path.read_text()) for path in sorted((REPO / "sweeps").glob("*.yaml"))}
PROFILES = {path.name: yaml.safe_load(path.read_text()) for path in sorted((REPO / "hpc/profiles").glob("*.yaml"))}
EXAMPLES = settings(  # SPOTSWEEP_HYPOTHESIS_EXAMPLES=5000 for a deeper run by hand
    max_examples=int(os.environ.get("SPOTSWEEP_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "both", "latent", "2022", "local", "slurm", "", "-1", "1e309", "\n", "../x"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a parsed YAML tree (mapping keys and list positions)."""
    places = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            places += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            places += _paths(value, (*prefix, index))
    return places


@st.composite
def mutated(draw: st.DrawFn, originals: dict[str, Any]) -> tuple[str, Any]:
    """A real file's tree with one place replaced, deleted, or given an extra key."""
    name = draw(st.sampled_from(sorted(originals)))
    tree = copy.deepcopy(originals[name])
    place = draw(st.sampled_from(_paths(tree)))
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if not place:
        return name, draw(values) if action == "replace" else tree
    parent = tree
    for step in place[:-1]:
        parent = parent[step]
    last = place[-1]
    if action == "replace":
        parent[last] = draw(values)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][draw(st.text(min_size=1, max_size=10))] = draw(values)
    return name, tree


def _one_sentence(exc: SpotsweepError, source: str) -> None:
    message = str(exc)
    assert message.startswith(source), message
    assert "Traceback" not in message and "\n" not in message.strip(), message


def _accepts_or_explains_sweep(data: Any, source: str) -> None:
    try:
        sweep = parse_sweep(data, source)
    except SpotsweepError as exc:
        _one_sentence(exc, source)
        return
    try:
        n = count_tasks(sweep)
    except SpotsweepError as exc:
        _one_sentence(exc, "")
        return
    assert isinstance(n, int) and n >= 0


@EXAMPLES
@given(mutated(SWEEPS))
def test_a_mutated_sweep_file_is_valid_or_one_sentence(case: tuple[str, Any]) -> None:
    name, data = case
    _accepts_or_explains_sweep(data, f"sweeps/{name}")


@EXAMPLES
@given(values)
def test_any_value_as_a_sweep_is_valid_or_one_sentence(data: Any) -> None:
    _accepts_or_explains_sweep(data, "random.yaml")


@EXAMPLES
@given(mutated(PROFILES))
def test_a_mutated_profile_is_valid_or_one_sentence(case: tuple[str, Any]) -> None:
    name, data = case
    try:
        profile = parse_profile(data, f"hpc/profiles/{name}")
    except SpotsweepError as exc:
        _one_sentence(exc, f"hpc/profiles/{name}")
        return
    assert profile is not None


@EXAMPLES
@given(st.text(max_size=200))
def test_any_text_as_a_sweep_file_is_valid_or_one_sentence(text: str) -> None:
    from toolkit.config import yaml_problem

    source = Path("typed.yaml")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        message = yaml_problem(source, exc)
        assert message.startswith("typed.yaml") and "\n" not in message
        return
    _accepts_or_explains_sweep(data, "typed.yaml")


def test_mutations_reach_every_file() -> None:
    """The strategies draw from every committed sweep and profile (a new file is covered by itself)."""
    assert len(SWEEPS) >= 6 and len(PROFILES) >= 2
    assert all(len(_paths(tree)) > 10 for tree in SWEEPS.values())
