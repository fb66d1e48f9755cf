"""`lepton --help` and the commands that need no model start without importing torch.

The root command lists its sub-commands from a table (``lepton.cli._app.COMMANDS``) and
imports a command's module only when that command runs; these tests keep it that way, and
keep the table's help the same as each command's own.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from lepton._version import __version__
from lepton.cli._app import COMMANDS, app, load_command

# In a fresh interpreter: run `lepton ARGS` for each ARGS, then print what was imported.
_PROBE = """
import json, sys
from lepton.cli import main
codes = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["lepton", *args]
    try:
        main()
    except SystemExit as exc:
        codes.append(exc.code)
HEAVY = ("torch", "lepton.data", "lepton.train", "sqlalchemy")
heavy = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_help_version_and_server_commands_start_without_torch() -> None:
    runs = [
        ["--help"],
        ["--version"],
        ["server", "--help"],
        ["users", "--help"],
        ["predict", "--help"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(runs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * len(runs), proc.stdout + proc.stderr
    assert report["heavy"] == [], f"`lepton --help` and co. imported {report['heavy']}"
    assert "Usage: lepton server" in proc.stdout
    assert f"lepton {__version__}\n" in proc.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listed_help_is_the_commands_own(name: str) -> None:
    command = load_command(name)
    own = (command.short_help or command.help or "").split("\n\n")[0].strip()
    assert COMMANDS[name][2] == " ".join(own.split()), f"update COMMANDS[{name!r}] in cli/_app.py"


def test_every_command_is_listed_and_runs_its_own_code() -> None:
    group = typer.main.get_group(app)
    assert list(group.commands) == list(COMMANDS)
    answer = CliRunner().invoke(app, ["data", "list", "--json"])
    assert answer.exit_code == 0, answer.output
    assert "iris" in {row["name"] for row in json.loads(answer.output)}
    typo = CliRunner().invoke(app, ["trian"])
    assert typo.exit_code == 2
    assert "Did you mean 'train'" in typo.output
