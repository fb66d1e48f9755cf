"""LitServe: one ``LitAPI``, one inference worker, one API server process.

Batched: ``LitAPI(max_batch_size=32, batch_timeout=0.002)`` groups requests in the worker.

    python litserve_mlp.py --port 8000 [--batched]
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlp import build_mlp, predict_rows


class PredictRequest(BaseModel):
    inputs: list[float]


# No ``from __future__ import annotations`` here: LitServe reads ``decode_request``'s
# annotation at runtime to build the endpoint's request model (validated, as in FastAPI).
class MLPAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        torch.set_num_threads(1)
        self.model = build_mlp()

    def decode_request(self, request: PredictRequest) -> list[float]:
        return request.inputs

    def batch(self, inputs: list[list[float]]) -> list[list[float]]:
        return inputs

    def predict(self, x: list[Any]) -> list[Any]:
        if self.max_batch_size > 1:  # x is a list of rows
            return predict_rows(self.model, x)
        return predict_rows(self.model, [x])[0]  # x is one row

    def unbatch(self, output: list[list[float]]) -> list[list[float]]:
        return output

    def encode_response(self, output: list[float]):  # type: ignore[no-untyped-def]
        # Unannotated on purpose: an annotation would make LitServe validate the response.
        return {"outputs": output}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batched", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    if args.batched:
        api = MLPAPI(max_batch_size=args.batch_size, batch_timeout=args.max_wait_ms / 1000)
    else:
        api = MLPAPI()
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
