"""Every code block of the README runs, as a user would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
BASH_BLOCKS = [
    [line.split("#")[0].strip() for line in code.splitlines() if line.strip()]
    for lang, code in BLOCKS
    if lang == "bash"
]
BASH = [line for block in BASH_BLOCKS for line in block]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, LEPTON_HOME=str(home))
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


def test_readme_has_blocks():
    assert len(PYTHON) >= 3
    assert "make run" in BASH
    assert "make test" in BASH


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_block(code: str, tmp_path: Path):
    script = tmp_path / "block.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


# `make test` is this very suite: CI runs it (`.ci/run`), running it here would recurse.
@pytest.mark.parametrize("block", BASH_BLOCKS, ids=[f"bash-{i}" for i in range(len(BASH_BLOCKS))])
def test_bash_block(block: list[str], tmp_path: Path):
    """The lines of one block run in order, sharing one LEPTON_HOME, as a user types them."""
    for command in (c for c in block if c != "make test"):
        proc = subprocess.run(
            command,
            shell=True,
            cwd=ROOT,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, command + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        if command == "make run":
            assert "MNIST test set" in proc.stdout
            match = re.search(r"final test: .*?accuracy ([\d.]+)%", proc.stdout)
            assert match, proc.stdout[-2000:]
            assert float(match.group(1)) >= 98.5
