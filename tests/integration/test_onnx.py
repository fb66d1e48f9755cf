"""ONNX: export a registered version, register ONNX from elsewhere, run it with onnxruntime."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import lepton as lp
from lepton import registry
from lepton.errors import RegistryError, UnsafeFormatError

onnx = pytest.importorskip("onnx", reason="ONNX support is the lepton[onnx] extra (in dev)")
pytestmark = pytest.mark.integration


def test_export_and_reimport_a_convnet(tmp_path: Path):
    torch.manual_seed(0)
    train = lp.data.load("digits", split="train")
    small = lp.models.ConvNet(num_classes=10, num_filters=[8], in_channels=1, input_size=8)
    lp.register(small, "digits-cnn", dataset=train)
    report = registry.export_onnx("digits-cnn:1", tmp_path / "digits.onnx")
    assert report["max_abs_diff"] < 1e-4
    imported = registry.register_onnx(tmp_path / "digits.onnx", "digits-cnn-onnx")
    assert imported.manifest["kind"] == "onnx"
    assert imported.manifest["input_schema"]["shape"] == ["batch", 1, 8, 8]
    runner = lp.load_model("digits-cnn-onnx")
    x = train.features[:7]
    small.eval()
    with torch.no_grad():
        assert torch.allclose(runner(x), small(x), atol=1e-4)


def test_register_a_hand_built_onnx_graph(tmp_path: Path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "linear.onnx"
    path.write_bytes(model.SerializeToString())
    version = registry.register_onnx(path, "external-linear", metrics={"r2": 0.5})
    assert version.metrics == {"r2": 0.5}
    x = rng.normal(size=(6, 4)).astype(np.float32)
    got = lp.load_model("external-linear:1")(torch.from_numpy(x)).numpy()
    assert np.allclose(got, x @ w + b, atol=1e-5)


def test_bad_onnx_and_pickles_are_refused(tmp_path: Path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 definitely not a graph")
    with pytest.raises(RegistryError, match="not a valid ONNX model"):
        registry.register_onnx(junk, "junk")
    disguised = tmp_path / "evil.onnx"
    disguised.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UnsafeFormatError, match="never loads pickles"):
        registry.register_onnx(disguised, "evil")
    assert registry.list_models() == []


def test_a_model_reading_a_file_beside_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the /api/v1 upload does (it calls register_onnx): a tensor whose bytes live in
    a file of the server's working directory is refused, and the message names no file."""
    from onnx import TensorProto, helper

    (tmp_path / "admin-token").write_text("s3cret-token")
    monkeypatch.chdir(tmp_path)
    w = TensorProto(name="w", data_type=TensorProto.UINT8, dims=[12])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="admin-token")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "leak", [],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [12])], [w],
    )  # fmt: skip
    path = tmp_path / "upload.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(UnsafeFormatError, match=r"refers to external data \(tensor 'w'\)") as exc:
        registry.register_onnx(path, "leaky")
    assert "admin-token" not in exc.value.message
    assert str(tmp_path) not in exc.value.message
    assert registry.list_models() == []
