"""The floor: plain FastAPI + uvicorn, one worker, no batching.

The handler is a plain ``def`` (FastAPI runs it in its thread pool), which is what FastAPI's
docs prescribe for blocking work such as a torch forward pass.

    python fastapi_mlp.py --port 8000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlp import build_mlp, predict_rows


class Request(BaseModel):
    inputs: list[float]


class Response(BaseModel):
    outputs: list[float]


def make_app() -> FastAPI:
    torch.set_num_threads(1)
    model = build_mlp()
    app = FastAPI()

    @app.post("/predict")
    def predict(request: Request) -> Response:
        return Response(outputs=predict_rows(model, [request.inputs])[0])

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
