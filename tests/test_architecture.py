"""The layout holds: the import contracts (pyproject) pass and catch a break, the benchmarks still import,
and the task ids of every sweep file in sweeps/ stay what they were (results on disk keep their names)."""

from __future__ import annotations

import ast
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from toolkit.launch import load_sweep
from toolkit.prepare import reference_model_id
from toolkit.sweep import expand

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PINNED = REPO / "tests" / "pinned" / "sweep_ids.json"


def _lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts over the `toolkit` package found in `package_parent`."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=package_parent,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package_parent)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    done = _lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("metrics.py", "import submitit", "Science never imports"),
        ("methods/destvi.py", "import toolkit.sweep", "Science never imports"),
        ("backends/local.py", "import toolkit.backends.slurm.records", "local and SLURM never import each other"),
        ("config.py", "import toolkit.launch", "Layers"),
    ],
)
def test_a_broken_contract_fails_the_lint(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copytree(REPO / "toolkit", tmp_path / "toolkit", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "toolkit" / module, "a") as handle:
        handle.write(f"\n{line}  # noqa\n")
    done = _lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    broken = [row for row in done.stdout.splitlines() if " BROKEN" in row]  # "BROKEN (1 ignored import)"
    assert any(contract in row for row in broken), done.stdout


@pytest.mark.parametrize("script", sorted(p.stem for p in (REPO / "tests" / "benchmarks").glob("*.py")))
def test_every_benchmark_script_imports(script: str) -> None:
    """pytest does not collect tests/benchmarks; importing them here keeps a move from breaking them unseen
    (the scripts that are run by hand each have a main())."""
    module = importlib.import_module(f"tests.benchmarks.{script}")
    if script.startswith(("bench_", "equivalence_")):
        assert hasattr(module, "main"), f"tests/benchmarks/{script}.py has no main()"


def test_task_and_reference_ids_of_every_sweep_file_are_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id is the name of a result on disk: a change re-runs finished studies. Regenerate the pin only
    on purpose (and say so in the README's upgrade notes)."""
    monkeypatch.chdir(REPO)  # sweep files name their inputs relative to the repository
    pinned = json.loads(PINNED.read_text())
    now = {}
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        tasks = expand(load_sweep(path.relative_to(REPO)))
        models = sorted({model for task in tasks if (model := reference_model_id(task))})
        now[path.name] = {"tasks": [task.id for task in tasks], "reference_models": models}
    for name, ids in pinned.items():
        kept = set(ids["tasks"]) <= set(now.get(name, {}).get("tasks", []))
        gained = "; only tasks were added: pin them too" if kept else ""
        assert now.get(name) == ids, f"the ids of sweeps/{name} changed{gained}"
    assert set(now) <= set(pinned), f"pin the ids of {sorted(set(now) - set(pinned))} in {PINNED}"


def test_an_unknown_executor_kind_names_the_registered_backends(tmp_path: Path, tiny_sweep_data: dict) -> None:
    import yaml

    from toolkit.errors import SpotsweepError

    tiny_sweep_data["executor"] = {"kind": "kubernetes"}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep_data))
    with pytest.raises(SpotsweepError, match=r"sweep.yaml: executor.kind 'kubernetes' is unknown; use local or slurm"):
        load_sweep(path)


def test_every_registered_method_has_a_grid_and_a_description_named_after_it() -> None:
    from toolkit.methods import ADAPTERS, adapter, describe
    from toolkit.methods.description import MethodDescription

    for name in ADAPTERS:
        grid = adapter(name).Grid
        assert grid.model_fields["name"].annotation.__args__ == (name,)
        assert isinstance(describe(name), MethodDescription) and describe(name).name == name


STAGES = ("report", "plan", "task", "aggregate", "status", "trajectories")
"""The modules that must work for any method: they ask `toolkit.methods.describe`, never name one."""


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string nodes that are docstrings (a module's, a function's, an attribute's)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        for statement in body if isinstance(body, list) else []:  # a lambda's body is one expression
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                found.add(id(statement.value))
    return found


def method_names_in(source: str, methods: dict[str, str]) -> list[str]:
    """Where `source` names a method: a string that is a method's name (what a test such as
    `method == "control"` or a key such as `{"destvi": 1}` holds; `"control "` too), or an import of an
    adapter module. Prose that mentions one (docstrings; plan's note that its figures were measured on
    destVI) decides nothing and is let be."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    adapters = set(methods.values()) | {f"toolkit.methods.{module.rsplit('.', 1)[-1]}" for module in methods.values()}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value.strip().lower() in methods:
                found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name in adapters]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            found += [f"line {node.lineno}: from {node.module} import" for name in imported & adapters]
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_names_a_method(stage: str) -> None:
    """A new method is its module and one registry line: no stage has a rule of its own for one."""
    from toolkit.methods import ADAPTERS

    found = method_names_in((REPO / "toolkit" / f"{stage}.py").read_text(), ADAPTERS)
    assert not found, f"toolkit/{stage}.py names a method ({'; '.join(found)}); ask toolkit.methods.describe"


@pytest.mark.parametrize(
    "line",
    [
        'skip = method == "control"',
        "rank = {'cell2location': 0}",
        'name = label.removeprefix("destVI ")',
        "from toolkit.methods.destvi import resolve_batch_size",
        "from toolkit.methods import stereoscope",
        "import toolkit.methods.controls",
    ],
)
def test_the_stage_check_catches_a_method_named(line: str) -> None:
    from toolkit.methods import ADAPTERS

    assert method_names_in(f'"""A stage that names destVI in prose only."""\n{line}\n', ADAPTERS)
    assert not method_names_in('"""destVI, Cell2location and the controls, in prose."""\n', ADAPTERS)


def test_bookkeeping_starts_without_torch() -> None:
    """`spotsweep status`, the aggregate job, every task's runner (the checkpoint session, the task lock)
    and the provenance a result records import neither torch nor Lightning: a control task and a status
    query do not wait seconds for them; a training imports them when it starts."""
    import subprocess
    import sys

    modules = "toolkit.cli, toolkit.launch, toolkit.backends.slurm.jobs, toolkit.backends.checkpointed, toolkit.task"
    provenance = "toolkit.provenance.collect(), toolkit.provenance.peak_gpu_memory_mb()"  # what every result records
    code = f"import sys, {modules}; {provenance}; print(sorted({{'torch', 'lightning', 'scvi'}} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
