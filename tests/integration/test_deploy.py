"""`lepton deploy` of registered versions (PyTorch and ONNX) and `lepton predict`."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

import lepton as lp
from lepton import registry

pytestmark = pytest.mark.integration

from servers import LEPTON, Server, running  # noqa: E402


@pytest.fixture
def home(mnist_home: Path) -> Path:
    return mnist_home


@pytest.fixture(scope="module")
def test_images(to_png: Callable[[torch.Tensor], bytes]) -> tuple[torch.Tensor, list[bytes]]:
    test = lp.data.load("mnist", split="test")
    x = test.features[:24].clone()
    return x, [to_png(img) for img in x]


def _expected(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x).softmax(dim=1)


def _check(
    server: Server, model: torch.nn.Module, x: torch.Tensor, pngs: list[bytes], atol: float
) -> None:
    expected = _expected(model, x)
    url = f"{server.url}/predict"
    with httpx.Client(timeout=30) as client:
        answers = [
            client.post(url, json={"image": base64.b64encode(pngs[0]).decode()}),
            client.post(url, content=pngs[1], headers={"content-type": "image/png"}),
            client.post(url, files={"image": ("digit.png", pngs[2], "image/png")}),
            *[client.post(url, json={"inputs": row.tolist()}) for row in x[3:]],
        ]
    assert [a.status_code for a in answers] == [200] * len(x), [a.text for a in answers]
    probs = torch.tensor([a.json()["probabilities"] for a in answers])
    assert torch.allclose(probs, expected, atol=atol)
    labels = [int(a.json()["label"]) for a in answers]
    assert labels == expected.argmax(1).tolist()


def test_deploy_a_pytorch_version_answers_like_the_model(
    home: Path,
    mnist_model: tuple[Path, torch.nn.Module],
    test_images: tuple[torch.Tensor, list[bytes]],
    tmp_path: Path,
) -> None:
    x, pngs = test_images
    with running("deploy", "mnist-small@production", "--replicas", "2", tmp=tmp_path) as server:
        _check(server, mnist_model[1], x, pngs, atol=1e-5)
        info = httpx.get(f"{server.url}/info").json()
        assert info["ref"] == "mnist-small:1"
        assert info["input_schema"]["shape"] == [1, 28, 28]
        bad = httpx.post(f"{server.url}/predict", json={"inputs": [1.0, 2.0]})
        assert bad.status_code == 422
        assert "[1, 28, 28]" in bad.json()["error"]["message"]
        pickle_as_image = httpx.post(
            f"{server.url}/predict",
            content=b"\x80\x04\x95cos\nsystem\n",
            headers={"content-type": "image/png"},
        )
        assert pickle_as_image.status_code == 422
        png = tmp_path / "digit.png"
        png.write_bytes(pngs[0])
        out = subprocess.run(
            [LEPTON, "predict", server.url, "--input", str(png), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        remote = httpx.post(
            f"{server.url}/predict", content=pngs[0], headers={"content-type": "image/png"}
        ).json()
        assert '"label"' in out.stdout
        assert abs(float(__import__("json").loads(out.stdout)["score"]) - remote["score"]) < 1e-6
        local = subprocess.run(
            [LEPTON, "predict", "mnist-small@production", "--input", str(png), "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert __import__("json").loads(local.stdout)["label"] == remote["label"]


def test_deploy_an_onnx_version(
    home: Path,
    mnist_model: tuple[Path, torch.nn.Module],
    test_images: tuple[torch.Tensor, list[bytes]],
    tmp_path: Path,
) -> None:
    pytest.importorskip("onnxruntime")
    registry.export_onnx("mnist-small:1", tmp_path / "m.onnx")
    digits = [str(d) for d in range(10)]
    version = registry.register_onnx(tmp_path / "m.onnx", "mnist-small-onnx", classes=digits)
    x, _pngs = test_images
    with running("deploy", version.ref, tmp=tmp_path) as server:
        info = httpx.get(f"{server.url}/info").json()
        assert info["kind"] == "onnx"
        expected = _expected(mnist_model[1], x)
        answers = [
            httpx.post(f"{server.url}/predict", json={"inputs": row.tolist()}).json()
            for row in x[:8]
        ]
        probs = torch.tensor([a["probabilities"] for a in answers])
        assert torch.allclose(probs, expected[:8], atol=1e-4)
        assert [a["label"] for a in answers] == [str(i) for i in expected[:8].argmax(1).tolist()]


def test_deploy_refuses_unknown_models_and_pickles(home: Path, tmp_path: Path) -> None:
    missing = subprocess.run(
        [LEPTON, "deploy", "no-such-model"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert "no-such-model" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"\x80\x04N.")
    pickled = subprocess.run(
        [LEPTON, "predict", str(bad), "--input", str(bad)], capture_output=True, text=True
    )
    assert pickled.returncode == 2
    assert "Traceback" not in pickled.stderr
