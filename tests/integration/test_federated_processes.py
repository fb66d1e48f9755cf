"""A real Flower federation on 127.0.0.1: a SuperLink and SuperNodes as separate processes.

One SuperNode is SIGKILLed after the first round: the federation must still finish (the
round leaves the dead client out) and, afterwards, none of the processes may be left.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")

import lepton as lp
from lepton.federated import partition
from lepton.federated._processes import _descendant_groups
from lepton.federated._run import run
from lepton.train.recipe import build_model

pytestmark = pytest.mark.integration


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_killed_supernode_does_not_stop_the_federation(tmp_path: Path) -> None:
    train = lp.data.load("digits", split="train")
    test = lp.data.load("digits", split="test")
    parts = partition(train, 3, scheme="iid", seed=0)
    model = build_model("mlp", train, {})
    seen: dict[str, Any] = {}

    def killer(federation: Any) -> None:
        groups = {p.pid for p in [federation.superlink, *federation.supernodes]}
        seen["roots"] = groups
        seen["victim"] = federation.supernodes[2].pid

        def watch() -> None:  # kill client 2 once round 1 is in (bounded wait)
            deadline = time.monotonic() + 300
            rounds = Path(federation.folder) / "rounds.jsonl"
            while time.monotonic() < deadline:
                if rounds.exists() and len(rounds.read_text().splitlines()) >= 2:
                    seen["groups"] = groups | _descendant_groups(groups)
                    os.killpg(seen["victim"], signal.SIGKILL)
                    seen["killed_after"] = len(rounds.read_text().splitlines()) - 1
                    return
                time.sleep(0.2)

        threading.Thread(target=watch, daemon=True).start()

    result = run(
        model, parts, test=test, rounds=2, strategy="fedavg", mode="processes",
        min_fit=2, min_available=2, local_epochs=2, lr=3e-3, round_timeout=60, timeout=600,
        folder=tmp_path / "job", on_start=killer, track=True, run_name="fl-kill",
    )  # fmt: skip

    assert seen.get("killed_after") is not None, "the SuperNode was never killed"
    accs = [r.accuracy for r in result.rounds]
    assert len(result.rounds) == 3  # round 0 (the initial model) + 2
    assert accs[-1] is not None
    assert accs[0] is not None
    assert accs[-1] > accs[0] + 0.3
    assert result.rounds[1].clients_replied == 3
    # the round after the kill goes on with the two live clients
    assert seen["killed_after"] == 1
    assert (result.rounds[2].clients_replied, result.rounds[2].clients_failed) == (2, 1)
    assert all(r.bytes_up > 0 and r.bytes_down > 0 for r in result.rounds[1:])
    # nothing outlives the call
    for g in seen["groups"] | seen["roots"]:
        assert not _alive(g), f"process group {g} still alive"
    # tracked: one run, per-round global accuracy and clients
    assert result.run_id is not None
    assert lp.tracking.get_run(result.run_id).state == "finished"
    history = lp.tracking.metric_history(result.run_id, "global_accuracy")
    assert [step for step, _ in history] == [0, 1, 2]
    assert [v for _, v in lp.tracking.metric_history(result.run_id, "clients")][1] == 3
