"""Services the serving integration tests run with ``lepton serve`` in a subprocess."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import torch

import lepton as lp


def tiny_model() -> torch.nn.Module:
    """The same seeded 16-32-4 MLP in the server and in the test."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)
    ).eval()


class Tiny(lp.Service):
    """Batched and unbatched routes over one model, plus slow and streaming ones."""

    def setup(self) -> None:
        self.model = tiny_model()

    @lp.handler(batch_size=16, max_wait_ms=10)
    def predict(self, inputs: list[list[float]]) -> list[list[float]]:
        with torch.inference_mode():
            return self.model(torch.tensor(inputs)).tolist()  # type: ignore[no-any-return]

    @lp.handler
    def single(self, inputs: list[float]) -> list[float]:
        with torch.inference_mode():
            return self.model(torch.tensor([inputs]))[0].tolist()  # type: ignore[no-any-return]

    @lp.handler(workers=8, max_queue=2, timeout_s=1.0)
    def slow(self, seconds: float) -> dict[str, float]:
        time.sleep(seconds)
        return {"slept": seconds, "pid": os.getpid()}

    @lp.handler(workers=8, max_queue=2, timeout_s=10.0)
    def hold(self, seconds: float) -> dict[str, float]:
        time.sleep(seconds)
        return {"slept": seconds, "pid": os.getpid()}

    @lp.handler
    def count(self, n: int) -> Iterator[dict[str, int]]:
        for i in range(n):
            yield {"i": i}

    @lp.handler(method="GET")
    def whoami(self) -> dict[str, int]:
        return {"pid": os.getpid()}


class Probe(lp.Service):
    """Reports where a replica runs (its working directory) and echoes JSON."""

    @lp.handler(method="GET")
    def where(self) -> dict[str, object]:
        cwd = os.getcwd()
        return {"cwd": cwd, "entries": os.listdir(cwd), "mode": os.stat(cwd).st_mode & 0o777}

    @lp.handler
    def echo(self, text: str) -> str:
        return text
