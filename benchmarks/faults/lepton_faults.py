"""A model whose own code misbehaves on demand: the faults of ``benchmarks/monitor_faults.py``
(and the autoscaling test), injected into a real deployment without a test hook in Lepton.

:class:`FaultyMLP` is an ordinary registered model (``bench-faulty-mlp``; its class is
made importable in the replicas by ``sitecustomize.py`` next to this file, on
``PYTHONPATH``). Two things make it misbehave:

* ``delay_ms`` (part of its registered config, so part of a *version*): each forward
  sleeps ``delay_ms`` per row. A version registered with it is a latency regression; one
  replica then serves at most ``1000 / delay_ms`` rows a second (a load that queues).
* ``error_rate`` (also part of a version): that share of its forwards raise (500s): a
  broken release, released plainly or as a canary.
* the fault file named by ``$LEPTON_BENCH_FAULT_FILE``: ``{"fault": ..., "at": epoch,
  "pids": [...]}`` makes the replicas with those pids (all when empty) that were already
  running at ``at`` misbehave: ``hang`` (the forward never returns; the process lives
  and answers its probes), ``errors`` (20% of forwards raise: 500 answers), ``leak``
  (each forward keeps 4 MiB). A replica started after ``at`` (a restart) is healthy: the
  fault is in the running process, as a deadlock, corrupted state or leak would be.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lepton.models import register_model

__all__ = ["FAULT_ENV", "FaultyMLP", "inject"]

FAULT_ENV = "LEPTON_BENCH_FAULT_FILE"
_STARTED = time.time()
_LEAKED: list[bytearray] = []
_cache: dict[str, Any] = {"checked": 0.0, "fault": None}


def inject(path: Path, fault: str | None, pids: list[int] | None = None) -> float:
    """Write the fault file (``None``: no fault); answers the injection time (epoch)."""
    at = time.time()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fault": fault, "at": at, "pids": pids or []}))
    os.replace(tmp, path)
    return at


def _fault() -> str | None:
    """This process's fault now (the file is read at most every 0.2 s)."""
    now = time.monotonic()
    if now - _cache["checked"] < 0.2:
        return _cache["fault"]  # type: ignore[no-any-return]
    _cache["checked"], fault = now, None
    path = os.environ.get(FAULT_ENV)
    if path:
        try:
            spec = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            spec = {}
        pids = spec.get("pids") or [os.getpid()]
        if spec.get("fault") and spec.get("at", 0) > _STARTED and os.getpid() in pids:
            fault = spec["fault"]
    _cache["fault"] = fault
    return fault


@register_model("bench-faulty-mlp")
class FaultyMLP(nn.Module):
    """A small MLP (``in_features`` -> ``hidden`` -> ``num_classes``) with the faults above."""

    def __init__(
        self,
        in_features: int = 4,
        num_classes: int = 3,
        hidden: int = 16,
        delay_ms: float = 0.0,
        error_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.delay_ms, self.error_rate = delay_ms, error_rate
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay_ms:
            time.sleep(self.delay_ms * x.shape[0] / 1000)
        if self.error_rate and random.random() < self.error_rate:  # a bug of this version
            raise RuntimeError(f"this version fails {self.error_rate:.0%} of its batches")
        fault = _fault()
        if fault == "hang":
            while _fault() == "hang":  # stuck until the process is replaced (or cleared)
                time.sleep(0.5)
        elif fault == "errors" and random.random() < 0.2:
            raise RuntimeError("injected fault: this replica fails 20% of its batches")
        elif fault == "leak":
            _LEAKED.append(bytearray(b"\x01") * (4 << 20))  # touched: it counts in RSS
        return self.net(x)  # type: ignore[no-any-return]
