"""Ray Serve: a local Ray instance (2 CPUs, loopback only, no dashboard), one replica.

Requests go HTTP proxy actor -> replica actor. Batched: ``@serve.batch(max_batch_size=32,
batch_wait_timeout_s=0.002)`` in the replica.

    python ray_mlp.py --port 8000 --temp-dir /tmp/ray-bench [--batched]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import ray
import torch
from ray import serve
from starlette.requests import Request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlp import build_mlp, predict_rows

# Ray Serve's default (5) makes the proxy retry against a busy replica and keeps batches
# below 32; Ray's batching guide says to raise it above max_batch_size. Other servers
# here put no cap on requests in flight.
MAX_ONGOING = 256


@serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING)
class MLP:
    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.model = build_mlp()

    async def __call__(self, request: Request) -> dict[str, list[float]]:
        body: dict[str, Any] = await request.json()
        return {"outputs": predict_rows(self.model, [body["inputs"]])[0]}


@serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING)
class MLPBatched:
    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.model = build_mlp()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def predict(self, rows: list[list[float]]) -> list[list[float]]:
        return predict_rows(self.model, rows)

    async def __call__(self, request: Request) -> dict[str, list[float]]:
        body: dict[str, Any] = await request.json()
        return {"outputs": await self.predict(body["inputs"])}


# Read by Ray when it is imported, so main() re-executes the script with them set.
RAY_ENV = {
    # Loopback only: without this, Ray swaps 127.0.0.1 for the machine's routable address
    # and its gRPC servers listen on every interface.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Token auth with a throwaway token from the environment, so none is written to ~/.ray.
    "RAY_AUTH_MODE": "token",
}


def _reexec_with_ray_env() -> None:
    if all(os.environ.get(k) == v for k, v in RAY_ENV.items()) and "RAY_AUTH_TOKEN" in os.environ:
        return
    os.environ.update(RAY_ENV)
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.execv(sys.executable, [sys.executable, *sys.argv])


def main() -> None:
    _reexec_with_ray_env()
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--batched", action="store_true")
    args = parser.parse_args()

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=args.temp_dir,
        log_to_driver=False,
    )
    stop = threading.Event()  # handlers set after ray.init, which installs its own
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        deployment = MLPBatched if args.batched else MLP
        serve.run(deployment.bind(), name="mlp", route_prefix="/predict")
        print("ready", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
