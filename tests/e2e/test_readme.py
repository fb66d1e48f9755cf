"""Every code block of the README runs, as a user would run it."""

from __future__ import annotations

import json
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
    for command in (c for c in block if c not in ("make test", "make run")):
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


def test_make_run_starts_the_platform_with_its_demo(tmp_path: Path) -> None:
    """`make run`: the server starts, trains the ConvNet on MNIST as a job, registers and
    deploys it, and prints a curl line that really gets a prediction."""
    import signal
    import time

    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from servers import free_port, kill_leftovers

    port = free_port()
    log = tmp_path / "make-run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            # one epoch instead of the demo's two: the same path, half the CI time
            ["make", "run", f"RUN_ARGS=--port {port} --demo-epochs 1"],
            cwd=ROOT,
            env=_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 900
        while "curl " not in log.read_text():
            text = log.read_text()
            assert proc.poll() is None, text[-3000:]
            assert "demo failed" not in text, text[-3000:]
            assert "ended failed" not in text, text[-3000:]
            assert time.monotonic() < deadline, text[-3000:]
            time.sleep(1)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}/login?token=lp_" in text
        accuracy = re.search(r"test accuracy ([\d.]+)%", text)
        assert accuracy, text[-2000:]
        assert float(accuracy.group(1)) >= 98.0, text[-2000:]  # one epoch; two give ~99%
        curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl "))
        answer = subprocess.run(
            curl, shell=True, env=_env(tmp_path), capture_output=True, text=True, timeout=60
        )
        label = re.search(r"label-(\d)\.png", curl)
        assert label, curl
        assert str(json.loads(answer.stdout)["label"]) == label.group(1), answer.stdout
        assert "Traceback" not in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        kill_leftovers(tmp_path)
