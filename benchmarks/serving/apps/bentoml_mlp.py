"""BentoML: ``@bentoml.service`` classes with one worker, batched and not.

    bentoml serve bentoml_mlp:MLP --host 127.0.0.1 --port 8000 --working-dir apps
    bentoml serve bentoml_mlp:MLPBatched ...

A batchable BentoML API takes a batch per request, so ``MLPBatched``'s body is
``{"inputs": [[784 floats]]}`` (a batch of one) and its answer ``[[10 floats]]``; BentoML's
adaptive batcher merges requests up to 32. It has no separate wait setting: the window is
learned, and ``max_latency_ms`` is a deadline past which requests get 503.
"""

import sys
from pathlib import Path

import bentoml
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlp import build_mlp, predict_rows

MAX_LATENCY_MS = 1000  # a deadline for load shedding, not a batching window
# One worker, and no access log (no server in the benchmark writes one per request).
CONFIG = {"workers": 1, "logging": {"access": {"enabled": False}}}


@bentoml.service(**CONFIG)
class MLP:
    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.model = build_mlp()

    @bentoml.api(route="/predict")
    def predict(self, inputs: list[float]) -> dict[str, list[float]]:
        return {"outputs": predict_rows(self.model, [inputs])[0]}


@bentoml.service(**CONFIG)
class MLPBatched:
    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.model = build_mlp()

    @bentoml.api(route="/predict", batchable=True, max_batch_size=32, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, inputs: list[list[float]]) -> list[list[float]]:
        return predict_rows(self.model, inputs)
