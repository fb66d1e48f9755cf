"""``POST /explain`` of deployed versions: a real ``lepton deploy`` server on 127.0.0.1 for
an MNIST ConvNet, and an in-process service for a tabular model with recorded
standardization (its attributions must be in the client's raw feature space)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import lepton as lp
from lepton.serve import ModelService

pytestmark = pytest.mark.integration

from servers import ok, running  # noqa: E402

from helpers import run_app  # noqa: E402


def test_a_deployed_convnet_explains_images(
    mnist_home: Path, to_png: Callable[[torch.Tensor], bytes], tmp_path: Path
) -> None:
    digits = lp.data.load("mnist", split="test").features[:2]
    png = to_png(digits[0])
    with (
        running("deploy", "mnist-small@production", tmp=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        predicted = ok(client.post("/predict", content=png, headers={"content-type": "image/png"}))
        image = base64.b64encode(png).decode()
        cam = ok(client.post("/explain", json={"image": image, "method": "gradcam", "plot": True}))
        assert cam["method"] == "gradcam"
        assert cam["prediction"] == predicted
        assert cam["target"] == int(predicted["label"])
        assert np.asarray(cam["attributions"]).shape == (1, 28, 28)
        assert Image.open(io.BytesIO(base64.b64decode(cam["png"]))).format == "PNG"
        upload = ok(client.post(
            "/explain", files={"image": ("digit.png", png, "image/png")},
            data={"method": "integrated_gradients", "target": "3"},
        ))  # fmt: skip
        assert upload["target"] == 3
        assert upload["png"] is None
        assert abs(upload["convergence_delta"]) < 0.1
        rows = ok(
            client.post("/explain", json={"inputs": digits[1].tolist(), "method": "saliency"})
        )
        assert np.asarray(rows["attributions"]).shape == (1, 28, 28)

        unknown = client.post("/explain", json={"image": image, "method": "lime"})
        assert unknown.status_code == 422
        assert "unknown method 'lime'" in unknown.json()["error"]["message"]
        out_of_range = client.post("/explain", json={"image": image, "target": 12})
        assert out_of_range.status_code == 400
        assert out_of_range.json()["error"]["code"] == "explain_error"
        assert "out of range" in out_of_range.json()["error"]["message"]
        one = client.post("/explain", json={"image": image, "method": "permutation"})
        assert one.status_code == 400
        assert "two or more" in one.json()["error"]["message"]
        wrong = client.post("/explain", json={"inputs": [1.0, 2.0]})
        assert wrong.status_code == 422
        assert "[1, 28, 28]" in wrong.json()["error"]["message"]


def test_tabular_attributions_are_in_the_raw_feature_space() -> None:
    raw = lp.data.load("breast-cancer", split="train")
    train = raw.standardize()  # recorded in the manifest; the service replays it
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=30, num_classes=2, hidden=[])
    lp.fit(model, train, epochs=3, batch_size=32, lr=3e-2, quiet=True, seed=0)
    lp.register(model, "cancer-linear", dataset=train)
    row = raw.features[0]

    async def scenario(client: httpx.AsyncClient, _app: Any) -> dict[str, Any]:
        answer = await client.post("/explain", json={"inputs": row.tolist(), "target": 1})
        return ok(answer)  # type: ignore[no-any-return]

    answer = run_app(ModelService("cancer-linear:1"), scenario)
    assert train.stats is not None
    weights = model.layers[0].weight.detach()[1]  # type: ignore[index]
    # f(x) = w . (x - mean) / std: IG from a zero raw row gives w * x / std exactly
    expected = weights * row / train.stats.scale.reshape(-1)
    assert answer["target"] == 1
    assert torch.allclose(torch.tensor(answer["attributions"]), expected, atol=1e-3, rtol=1e-3)
