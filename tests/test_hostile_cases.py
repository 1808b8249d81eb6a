"""Named hostile cases over every command a user types: each ends in one sentence and exit status 2
(or typer's usage error, also 2), never a traceback, and writes nothing half-done.

Each case is (name, files to create, command line, words the message must contain). Files are
created in a fresh folder that is the working directory; `{tmp}` in a command is that folder.
The commands run in-process through the same entry point as `spotsweep` (`toolkit.cli.main`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from toolkit import cli

CSV_TRUTH = "spot,A,B\ns1,0.5,0.5\ns2,1,0\n"
CASES: list[tuple[str, dict[str, str | bytes], list[str], list[str]]] = [
    # run
    ("run: no such sweep file", {}, ["run", "nope.yaml"], ["nope.yaml", "no such sweep file"]),
    ("run: the sweep is a folder", {"d/x": ""}, ["run", "d"], ["d", "no such sweep file"]),
    ("run: an empty sweep file", {"s.yaml": ""}, ["run", "s.yaml"], ["s.yaml", "mapping"]),
    ("run: a sweep that is a list", {"s.yaml": "- a\n- b\n"}, ["run", "s.yaml"], ["s.yaml", "mapping"]),
    ("run: a binary sweep file", {"s.yaml": b"\xff\xfe\x00garbage"}, ["run", "s.yaml"], ["s.yaml", "UTF-8"]),
    ("run: a tab-indented sweep", {"s.yaml": "name: x\n\toutput: y\n"}, ["run", "s.yaml"], ["s.yaml", "YAML"]),
    ("run: a python tag", {"s.yaml": "name: !!python/object:os.system x\n"}, ["run", "s.yaml"], ["tag"]),
    ("run: unknown executor", {}, ["run", "sweeps/demo.yaml", "--executor", "pbs"], ["pbs"]),
    ("run: no such profile", {}, ["run", "sweeps/demo.yaml", "--profile", "p.yaml"], ["p.yaml"]),
    ("run: --out is a file", {"f": "x"}, ["run", "sweeps/demo.yaml", "--out", "f"], ["f", "file"]),
    ("run: --max-parallel -1", {}, ["run", "sweeps/demo.yaml", "--max-parallel", "-1"], ["max-parallel"]),
    ("run: --max-tasks 1", {}, ["run", "sweeps/demo.yaml", "--max-tasks", "1"], ["--max-tasks"]),
    # plan
    ("plan: no such sweep file", {}, ["plan", "nope.yaml"], ["nope.yaml"]),
    # build
    ("build: no such cells file", {}, ["build", "cells.h5ad", "--out", "o.zarr", "--window", "10"], ["cells.h5ad"]),
    (
        "build: a window of zero",
        {"c.csv": "cell,g1\nc1,1\n", "t.csv": "cell,x,y,cell_type\nc1,0,0,A\n"},
        ["build", "c.csv", "--cells-table", "t.csv", "--out", "o.zarr", "--window", "0"],
        ["window"],
    ),
    (
        "build: a counts CSV without its cell table",
        {"c.csv": "cell,g1\nc1,1\n"},
        ["build", "c.csv", "--out", "o.zarr", "--window", "10"],
        ["c.csv", "cells-table"],
    ),
    (
        "build: text among the counts",
        {"c.csv": "cell,g1\nc1,many\n", "t.csv": "cell,x,y,cell_type\nc1,0,0,A\n"},
        ["build", "c.csv", "--cells-table", "t.csv", "--out", "o.zarr", "--window", "10"],
        ["c.csv"],
    ),
    # simulate
    ("simulate: unknown preset", {}, ["simulate", "--out", "o", "--preset", "visium"], ["visium"]),
    ("simulate: --out is a file", {"o": "x"}, ["simulate", "--out", "o"], ["o", "file"]),
    ("simulate: zero cells", {}, ["simulate", "--out", "o", "--n-spatial-cells", "0"], ["--n-spatial-cells"]),
    # score
    ("score: no truth table", {"p.csv": CSV_TRUTH}, ["score", "t.csv", "p.csv"], ["t.csv", "no such"]),
    ("score: an empty predictions file", {"t.csv": CSV_TRUTH, "p.csv": ""}, ["score", "t.csv", "p.csv"], ["p.csv"]),
    (
        "score: text among predictions",
        {"t.csv": CSV_TRUTH, "p.csv": "spot,A,B\ns1,x,0.5\ns2,1,0\n"},
        ["score", "t.csv", "p.csv"],
        ["p.csv"],
    ),
    (
        "score: no common spots",
        {"t.csv": CSV_TRUTH, "p.csv": "spot,A,B\nq1,0.5,0.5\nq2,1,0\n"},
        ["score", "t.csv", "p.csv"],
        ["spot"],
    ),
    # status, aggregate, report, export on what is not a sweep's output
    ("status: no such folder", {}, ["status", "nothere"], ["nothere"]),
    ("status: a folder that is no sweep output", {"d/x": ""}, ["status", "d"], ["d", "sweep.json"]),
    ("status: a truncated sweep.json", {"d/sweep.json": '{"name": "x", "tas'}, ["status", "d"], ["sweep.json"]),
    ("aggregate: no such folder", {}, ["aggregate", "nothere"], ["nothere"]),
    ("aggregate: a folder that is no sweep output", {"d/x": ""}, ["aggregate", "d"], ["d"]),
    ("report: a folder that is no sweep output", {"d/x": ""}, ["report", "d"], ["d"]),
    ("report: sweep.json is a list", {"d/sweep.json": "[1, 2]"}, ["report", "d"], ["d", "summary"]),
    ("aggregate: sweep.json is a list", {"d/sweep.json": "[1, 2]"}, ["aggregate", "d"], ["sweep.json"]),
    ("status: sweep.json is a list", {"d/sweep.json": "[1, 2]"}, ["status", "d"], ["sweep.json"]),
    ("run: a binary profile", {"p.yaml": b"\xff\xfe"}, ["run", "sweeps/demo.yaml", "--profile", "p.yaml"], ["UTF-8"]),
    ("export: no such folder", {}, ["export", "nothere", "abc", "--to", "x.zarr"], ["nothere"]),
]


@pytest.mark.parametrize(("files", "argv", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_case_is_one_sentence(
    files: dict[str, str | bytes],
    argv: list[str],
    words: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = Path(__file__).resolve().parents[1]
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "sweeps").symlink_to(repo / "sweeps")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["spotsweep", *argv])
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    message = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, message
    assert "Traceback" not in message, message
    lines = [line for line in message.splitlines() if line.strip(" │╭╰─")]
    assert lines, "no message at all"
    for word in words:
        assert word.lower() in message.lower(), message
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "sweeps" not in p.parts[:1])
    written = [p for p in after if p not in before and not p.startswith("sweeps") and not p.endswith(".lock")]
    assert written == [], "wrote something"  # (a lock file stays, as file locks do)
