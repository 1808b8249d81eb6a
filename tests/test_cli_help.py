"""The command line reads as a command line: plain help without type placeholders for flags, errors in
terms of flags, messages that keep their line in a log file."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from toolkit.cli import app

COMMANDS = ["simulate", "build", "run", "plan", "tune", "status", "aggregate", "report", "export", "score"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_plain_text_without_bool_placeholders(command: str | None) -> None:
    result = CliRunner().invoke(app, [command, "--help"] if command else ["--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "<int range>" not in result.output
    assert not set("╭╮╰╯│─") & set(result.output)  # no boxes: it reads the same in a pager or a log


def test_a_bad_size_is_refused_in_terms_of_its_flag(tmp_path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "s"), "--n-genes", "0"])
    assert result.exit_code == 2
    assert "--n-genes" in result.output and "None" not in result.output
    assert not (tmp_path / "s").exists()


def test_a_long_message_keeps_its_line_when_written_to_a_file(tmp_path) -> None:
    out = tmp_path / ("a-folder-with-a-long-name-" * 4)
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "simulate", "--out", str(out), "--n-spatial-cells", "50",
         "--n-reference-cells", "50", "--n-genes", "20"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    (line,) = done.stdout.strip().splitlines()  # one line, not broken at 80 columns
    assert line.startswith("wrote ") and str(out / "reference.h5ad") in line
