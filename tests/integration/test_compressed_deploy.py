"""A compressed version deploys like any other, and ``/explain`` goes through the platform.

The MNIST ConvNet of ``conftest.mnist_model`` is quantized to static int8 ONNX on a small
real calibration set, deployed by a real ``lepton server`` (onnxruntime in the deployment's
own processes), and must answer ``/predict`` through the platform's proxy as the int8
file computes, and like the fp32 model within the tolerance its compress report measured.
``POST /api/v1/deployments/{name}/explain`` is forwarded like ``/predict``: the same auth
rule (viewers may call it, no token is a 401) and the same JSON errors.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import lepton as lp
from lepton import registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

from servers import ok, start_platform, stop_platform  # noqa: E402


def _ready(client: httpx.Client, name: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, Any] = ok(client.get(f"/api/v1/deployments/{name}"))
        if found["state"] == "ready":
            return found
        assert found["state"] != "failed", found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def test_an_int8_version_deploys_and_answers_like_fp32(
    mnist_model: Any, mnist_home: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    calibration = lp.data.load("mnist", split="train").subset(range(2000, 2256))
    test = lp.data.load("mnist", split="test").subset(range(300))
    int8, report = lp.compress.quantize(
        mnist_model.ref, "static", calibration=calibration, test=test, tolerance=1.0,
        register="mnist-small-int8",
    )  # fmt: skip
    assert report.registered == "mnist-small-int8:1"
    assert report.ratio > 3  # int8 weights: about 4x smaller than fp32
    assert report.max_abs_diff is not None
    assert report.agreement is not None
    lineage = registry.resolve(report.registered).manifest["lineage"]
    assert lineage["derived_from"] == mnist_model.ref
    assert lineage["figures"]["max_abs_diff"] == pytest.approx(report.max_abs_diff)

    x = test.features[:32]
    with torch.inference_mode():
        fp32 = mnist_model.model(x).softmax(dim=1)
        own = int8(x).softmax(dim=1)
    server = start_platform(mnist_home, tmp_path)
    try:
        with server.client() as admin:
            body = {"name": "digits-int8", "model": report.registered}
            ok(admin.post("/api/v1/deployments", json=body), 201)
            _ready(admin, "digits-int8")
            answers = [
                ok(admin.post("/api/v1/deployments/digits-int8/predict",
                              json={"inputs": row.tolist()}))
                for row in x
            ]  # fmt: skip
            served = torch.tensor([a["probabilities"] for a in answers])
            # the deployment runs the registered int8 file as it is
            assert torch.allclose(served, own, atol=1e-4)
            # ...and so answers like fp32 within the report's tolerance: these rows are
            # among the ones it checked, and softmax moves at most half as much as logits
            assert float((served - fp32).abs().max()) <= 0.5 * report.max_abs_diff + 1e-4
            labels = [int(a["label"]) for a in answers]
            differ = sum(a != b for a, b in zip(labels, fp32.argmax(1).tolist(), strict=True))
            assert differ <= round((1 - report.agreement) * len(test))

            url = "/api/v1/deployments/digits-int8/explain"
            one = {"inputs": x[0].tolist(), "method": "occlusion", "plot": True}
            explained = ok(admin.post(url, json=one))
            assert explained["prediction"]["label"] == answers[0]["label"]
            assert np.asarray(explained["attributions"]).shape == (1, 28, 28)
            png = Image.open(io.BytesIO(base64.b64decode(explained["png"])))
            assert png.format == "PNG"
            # the deployment's own errors come back as they are, in the API's JSON shape
            gradients = admin.post(url, json={"inputs": x[0].tolist(), "method": "saliency"})
            assert gradients.status_code == 400
            assert "has no gradients" in gradients.json()["error"]["message"]

            vic = ok(admin.post("/api/v1/users", json={"name": "vic", "role": "viewer"}), 201)
            token = ok(admin.post(f"/api/v1/users/{vic['id']}/tokens", json={"name": "t"}), 201)
        with server.client(token["secret"]) as viewer:  # viewers may explain, as predict
            assert ok(viewer.post(url, json=one))["attributions"] == explained["attributions"]
            ghost = viewer.post("/api/v1/deployments/ghost/explain", json=one)
            assert ghost.status_code == 404
            assert ghost.json()["error"]["code"]
        anonymous = httpx.post(f"{server.url}{url}", json=one, timeout=30)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"]
        with server.client() as admin:
            ok(admin.post("/api/v1/deployments/digits-int8/stop"))
            stopped = admin.post(url, json=one)
            assert stopped.status_code == 503
            assert stopped.json()["error"]["code"] == "deployment_stopped"
            audit = ok(admin.get("/api/v1/audit?limit=100"))["items"]
            assert all("/explain" not in e["action"] for e in audit)  # reads are not audited
    finally:
        stop_platform(server, mnist_home)
