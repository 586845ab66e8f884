"""Every user error of ``fraudctl`` is one line on stderr and exit code 2.

The commands run as processes of their own (the virtualenv's ``fraudctl`` script), the
way a user meets them: usage errors from the argument parser (unknown option, a value
out of range, a missing argument), the commands' own checks and a bad setting. None
needs a broker or Redis: each fails before it would connect. The help of every command
names the settings it reads, and only real ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings

FRAUDCTL = Path(sys.executable).parent / "fraudctl"
BOX = re.compile("[╭╮╰╯│─]")


def _fraudctl(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [str(FRAUDCTL), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param(["replay", "--rate", "-5", "x.csv.gz"], {}, "'--rate'", id="replay-rate-below-range"),
        pytest.param(["demo", "--days", "0"], {}, "'--days'", id="demo-days-below-range"),
        pytest.param(["stack", "up", "--timeout", "0"], {}, "'--timeout'", id="stack-up-timeout-below-range"),
        pytest.param(["alerts", "--bogus"], {}, "No such option: --bogus", id="unknown-option"),
        pytest.param(["evaluate"], {}, "Missing argument", id="missing-argument"),
        pytest.param(["alerts", "--limit", "many"], {}, "'--limit'", id="not-a-number"),
        pytest.param(["simulate", "--out", "/nonexistent/dir/x.csv.gz"], {},
                     "folder /nonexistent/dir does not exist", id="simulate-out-folder-missing"),
        pytest.param(["simulate", "--out", "x.csv.gz", "--days", "0"], {}, "--days must be >= 1",
                     id="simulate-own-range-check"),
        pytest.param(["train", "/nonexistent/transactions.csv.gz"], {}, "nonexistent",
                     id="train-missing-file"),
        pytest.param(["stack", "status"], {"TOPIC_PARTITIONS": "many"}, "setting TOPIC_PARTITIONS",
                     id="bad-setting"),
    ],
)
def test_a_user_error_is_one_line_and_exit_2(args, env, expected, tmp_path):
    result = _fraudctl(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not BOX.search(result.stderr)
    assert expected in lines[0]


def test_simulate_creates_no_folder_for_a_missing_one(tmp_path):
    out = tmp_path / "missing" / "deeper" / "x.csv.gz"
    result = _fraudctl("simulate", "--out", str(out), "--days", "1", "--customers", "5",
                       "--terminals", "5")
    assert result.returncode == 2
    assert not (tmp_path / "missing").exists()


def _commands(group, path=()):
    """Every leaf command of the click group behind ``cli``: (path, command)."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_help_names_real_settings_and_shows_no_bool_metavar():
    fields = {name.upper() for name in Settings.model_fields}
    commands = list(_commands(typer.main.get_command(cli)))
    assert len(commands) >= 25
    runner = CliRunner()
    for path, _ in commands:
        result = runner.invoke(cli, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        match = re.search(r"Settings: (.+?)\.\s*$", result.output, re.S)
        assert match, f"fraudctl {' '.join(path)} --help names no settings"
        named = {n.strip() for n in match.group(1).split(",")} - {"none"}
        assert named <= fields, (path, named - fields)
