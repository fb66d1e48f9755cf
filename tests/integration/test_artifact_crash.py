"""SIGKILL a process in the middle of writing a large artifact: nothing partial is visible."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lepton.storage import Cipher, LocalArtifactStore, generate_key

pytestmark = pytest.mark.integration

KEY = generate_key()
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from lepton.storage import Cipher, LocalArtifactStore

    root, key, block_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = LocalArtifactStore(root, cipher=Cipher(key) if key else None)
    store.put("models/big/weights", b"v1" * 1_000_000)
    print("v1 stored", flush=True)

    real_fsync, calls = os.fsync, [0]
    def fsync(fd):
        calls[0] += 1
        if calls[0] == block_at:  # hold here, mid-write, until the parent kills us
            print("blocked", flush=True)
            time.sleep(60)
        real_fsync(fd)
    os.fsync = fsync
    if block_at == 0:  # no hook: keep rewriting until killed at a random moment
        os.fsync = real_fsync
        i = 0
        while True:
            store.put("models/big/weights", os.urandom(8_000_000))
            i += 1
            if i == 1:
                print("looping", flush=True)
    store.put("models/big/weights", os.urandom(40_000_000))
    """
)


def crash_writer(root: Path, *, block_at: int, encrypted: bool, delay: float = 0.0) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), KEY if encrypted else "", str(block_at)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "v1 stored"
    assert proc.stdout.readline().strip() in ("blocked", "looping")
    # Not a synchronisation (the lines above are): the pause only varies where in a
    # put() the kill lands, and every moment must leave a consistent store.
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# put() fsyncs: 1 the content's temp file, 2 its folder, 3 the record's temp file, 4 its folder
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("block_at", [1, 3], ids=["mid-content", "mid-record"])
def test_kill_mid_write_keeps_the_old_version(
    tmp_path: Path, block_at: int, encrypted: bool
) -> None:
    crash_writer(tmp_path, block_at=block_at, encrypted=encrypted)
    store = LocalArtifactStore(tmp_path, cipher=Cipher(KEY) if encrypted else None)
    assert store.get("models/big/weights") == b"v1" * 1_000_000
    assert [i.key for i in store.list()] == ["models/big/weights"]
    assert store.verify() == []
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(leftovers) > 2  # the killed write left a temp file or an orphan blob...
    assert store.gc(min_age=0) >= 1  # ...which gc removes
    assert store.get("models/big/weights") == b"v1" * 1_000_000
    assert store.verify() == []


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45])
def test_kill_at_random_moments_leaves_a_consistent_store(tmp_path: Path, delay: float) -> None:
    crash_writer(tmp_path, block_at=0, encrypted=False, delay=delay)
    store = LocalArtifactStore(tmp_path)
    data = store.get("models/big/weights")  # whichever version landed last, whole
    assert hashlib.sha256(data).hexdigest() == store.info("models/big/weights").sha256
    assert len(data) == 8_000_000
    assert store.verify() == []
    store.gc(min_age=0)
    assert not [p for p in tmp_path.rglob(".*.tmp")]
    assert os.listdir(tmp_path / "refs")
