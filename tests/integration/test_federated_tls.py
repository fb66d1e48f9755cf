"""Real Flower federations on 127.0.0.1 over TLS with SuperNode authentication.

* A tiny run over TLS with node authentication learns as well as the same run in plain
  HTTP, while two strangers try to join it: a SuperNode whose key was never registered
  (the SuperLink refuses it) and one that trusts another CA (it refuses the SuperLink).
  Neither joins; the rounds have only the registered nodes.
* A federation left with fewer SuperNodes than it needs fails at once, saying which
  node stopped and why, instead of waiting for its timeout.

No Flower process may outlive a test.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")

import torch

import lepton as lp
from lepton.errors import FederatedError
from lepton.federated import partition
from lepton.federated._run import run
from lepton.federated._tls import make_certificates, make_node_keys
from lepton.train.recipe import build_model

pytestmark = pytest.mark.integration


def _processes_of(folder: Path) -> list[str]:
    """Command lines of the live processes that name ``folder`` (every Flower process of
    a federation names its job folder: database, certificates, keys)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _federation(tmp_path: Path, name: str, **options: Any) -> Any:
    train = lp.data.load("digits", split="train")
    test = lp.data.load("digits", split="test")
    parts = partition(train, 2, scheme="iid", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", train, {})
    return run(
        model, parts, test=test, rounds=1, strategy="fedavg", mode="processes", min_fit=2,
        min_available=2, local_epochs=2, lr=3e-3, round_timeout=60, timeout=400, seed=0,
        folder=tmp_path / name, track=False, **options,
    )  # fmt: skip


@pytest.mark.slow
def test_tls_with_node_auth_learns_like_plain_and_keeps_strangers_out(tmp_path: Path) -> None:
    plain = _federation(tmp_path, "plain")
    seen: dict[str, Any] = {}

    def strangers(federation: Any) -> None:
        rogue_key = make_node_keys(federation.folder / "rogue", 1, prefix="rogue")[0]
        rogue = federation.start_supernode(0, key=rogue_key.private, log="rogue.log")
        other_ca = make_certificates(federation.folder / "other-ca").ca
        distrustful = federation.start_supernode(
            1, key=federation.node_keys[1].private, root_certificates=other_ca,
            log="other-ca.log",
        )  # fmt: skip
        deadline = time.monotonic() + 180  # both give up on their own, well before this
        while time.monotonic() < deadline and None in (rogue.poll(), distrustful.poll()):
            time.sleep(0.5)
        seen["rogue"] = federation.why_stopped(rogue)
        seen["other_ca"] = federation.why_stopped(distrustful)
        seen["registered"] = list(federation.node_ids)
        seen["nodes"] = federation.registered()

    secure = _federation(tmp_path, "secure", tls=True, node_auth=True, on_start=strangers)

    # the strangers were turned away, each with a reason that names it
    assert seen["rogue"] is not None, "the unregistered SuperNode is still running"
    assert "refused by the SuperLink: its key is not registered" in seen["rogue"]
    assert seen["other_ca"] is not None, "the SuperNode that trusts another CA is still running"
    assert "does not trust the SuperLink's TLS certificate" in seen["other_ca"]
    # the SuperLink knows exactly the two registered nodes, both online
    assert sorted(int(n["node-id"]) for n in seen["nodes"]) == sorted(seen["registered"])
    assert [n["status"] for n in seen["nodes"]] == ["online", "online"]
    # and the round had only them
    assert [(r.clients_sampled, r.clients_replied) for r in secure.rounds[1:]] == [(2, 2)]
    # really TLS on one side, plain HTTP on the other
    folder = Path(secure.folder)
    assert "Uvicorn running on https://127.0.0.1" in (folder / "superlink.log").read_text()
    plain_log = (Path(plain.folder) / "superlink.log").read_text()
    assert "Uvicorn running on http://127.0.0.1" in plain_log
    assert oct((folder / "tls" / "server.key").stat().st_mode & 0o777) == "0o600"
    assert all(oct(k.stat().st_mode & 0o777) == "0o600" for k in (folder / "keys").glob("*.key"))
    # the same learning: both far above the initial model, within a small band
    assert plain.accuracy is not None
    assert secure.accuracy is not None
    assert secure.rounds[0].accuracy is not None
    assert secure.accuracy > secure.rounds[0].accuracy + 0.3
    assert abs(secure.accuracy - plain.accuracy) <= 0.05, (secure.accuracy, plain.accuracy)
    # nothing outlives either run
    assert _processes_of(tmp_path) == []


def test_a_federation_short_of_nodes_fails_at_once_and_says_why(tmp_path: Path) -> None:
    def lose_one(federation: Any) -> None:
        os.killpg(federation.supernodes[0].pid, signal.SIGKILL)
        federation.supernodes[0].wait(timeout=30)

    with pytest.raises(
        FederatedError, match=r"1 of the 2 SuperNodes stopped and the run needs 2.*exited \(-9\)"
    ):
        _federation(tmp_path, "short", tls=True, node_auth=True, on_start=lose_one)
    assert not (tmp_path / "short" / "done.json").exists()
    assert _processes_of(tmp_path) == []
