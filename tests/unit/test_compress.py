"""``lepton.compress`` on small models trained on real MNIST: ONNX export with a parity
check, static int8 that really quantizes convolutions, structured pruning that really
removes channels, distillation through ``lp.fit``'s loss hook, and registered results
whose lineage names their original and that deploy like any version."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import httpx
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import lepton as lp
from helpers import run_app
from lepton import compress, registry
from lepton.cli._compress import compress as compress_command
from lepton.errors import CompressionError, ConfigError, ParityError, ShapeError
from lepton.registry._artifact_check import parse_onnx
from lepton.serve import ModelService

pytestmark = pytest.mark.slow  # real training and ONNX exports

Data = tuple[lp.data.Dataset, lp.data.Dataset]


@pytest.fixture(scope="module")
def mnist() -> Data:
    """3,000 training and 1,000 test images of real MNIST."""
    train = lp.data.load("mnist", split="train").subset(slice(0, 3000))
    test = lp.data.load("mnist", split="test").subset(slice(0, 1000))
    return train, test


@pytest.fixture(scope="module")
def conv(mnist: Data) -> lp.models.ConvNet:
    torch.manual_seed(0)
    model = lp.models.ConvNet(num_classes=10, num_filters=[8, 16], dropout=0.1)
    lp.fit(model, mnist[0], epochs=2, batch_size=64, lr=3e-3, quiet=True, seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def exported(conv: lp.models.ConvNet, mnist: Data) -> compress.Compressed:
    return compress.export_onnx(conv, mnist[1].features[:256])


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- export -----------------------------------------------------------------------------


def test_the_onnx_export_matches_pytorch_on_real_inputs(
    conv: lp.models.ConvNet, exported: compress.Compressed, mnist: Data
) -> None:
    model, report = exported
    assert report.kind == "onnx"
    assert report.max_abs_diff is not None
    assert report.max_abs_diff <= 1e-4
    assert report.agreement == 1.0
    assert exported.onnx is not None
    assert report.size_after == len(exported.onnx)
    graph = parse_onnx(exported.onnx).graph  # self-contained, valid
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param, "a dynamic batch axis"
    unseen = mnist[1].features[500:533]  # a batch size it was not traced with
    with torch.no_grad():
        assert torch.allclose(model(unseen), conv(unseen), atol=1e-4)


def test_an_export_past_the_tolerance_is_refused(mnist: Data) -> None:
    torch.manual_seed(0)
    mlp = lp.models.MLP(in_features=784, num_classes=10, hidden=[64])
    with pytest.raises(ParityError, match=r"differs from PyTorch by .* tolerance 1e-12"):
        compress.export_onnx(mlp, mnist[1], tolerance=1e-12)


# -- quantization -------------------------------------------------------------------------


def test_static_int8_quantizes_the_convolutions_and_keeps_the_accuracy(
    exported: compress.Compressed, mnist: Data, tmp_path: Path
) -> None:
    train, test = mnist
    result = compress.quantize(exported, "static", calibration=train, test=test)
    report = result.report
    assert exported.onnx is not None
    assert result.onnx is not None
    assert len(exported.onnx) / len(result.onnx) >= 3.0, report.lines()
    assert report.accuracy_before is not None
    assert report.accuracy_after is not None
    assert report.accuracy_after >= report.accuracy_before - 0.01, report.lines()
    assert report.max_abs_diff is not None
    assert report.agreement is not None
    assert report.agreement >= 0.98
    # every convolution's weights are stored as int8 ...
    graph = onnx.load_from_string(result.onnx).graph
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dequantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    assert all(dequantized.get(conv.input[1]) in int8 for conv in convs)
    # ... and onnxruntime runs them as int8 kernels
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(result.onnx, options, providers=["CPUExecutionProvider"])
    kernels = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert kernels.count("QLinearConv") == 2, kernels
    assert "Conv" not in kernels, "no fp32 convolution is left"
    assert report.recipe["calibration_rows"] == 512
    assert report.recipe["format"] == "qdq"


def test_dynamic_int8_quantizes_the_linear_layers(
    exported: compress.Compressed, mnist: Data
) -> None:
    result = compress.quantize(exported, "dynamic", calibration=mnist[1], test=mnist[1])
    types = result.report.details["node_types"]
    assert types["MatMulInteger"] == 2
    assert "ConvInteger" not in types, "int8 convolutions are static only (faster)"
    assert result.report.agreement is not None
    assert result.report.agreement >= 0.99


# -- pruning ------------------------------------------------------------------------------


def test_structured_pruning_removes_channels_and_rebuilds_from_its_config(
    conv: lp.models.ConvNet, mnist: Data
) -> None:
    before = _state(conv)
    slim, report = compress.prune(conv, 0.5, finetune=mnist[0], epochs=2, test=mnist[1])
    assert all(torch.equal(before[k], v) for k, v in conv.state_dict().items()), "untouched"
    spec = lp.models.model_spec(slim)
    assert spec["config"]["num_filters"] == [4, 8]
    assert report.parameters_after < report.parameters_before / 1.9
    assert report.size_after < report.size_before / 1.9
    twin = lp.models.build(spec)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in slim.state_dict().items()
    }
    twin.load_state_dict(slim.state_dict())
    x = mnist[1].features[:16]
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), slim(x))
    assert report.accuracy_before is not None
    assert report.accuracy_after is not None
    assert report.accuracy_after >= report.accuracy_before - 0.03, report.lines()


def test_structured_pruning_keeps_the_strongest_channels_exactly() -> None:
    """Before any fine-tuning, an MLP whose removed units are dead computes the same."""
    torch.manual_seed(0)
    mlp = lp.models.MLP(in_features=6, num_classes=3, hidden=[4, 4])
    with torch.no_grad():
        for layer in (mlp.layers[0], mlp.layers[2]):
            layer.weight[1::2] = 0.0  # units 1 and 3 of each hidden layer: L1 norm 0
            layer.bias[1::2] = -1.0  # and ReLU(-1) = 0: they contribute nothing
    slim, report = compress.prune(mlp, 0.5)
    assert report.details["hidden"] == {"before": [4, 4], "after": [2, 2]}
    x = torch.randn(8, 6)
    with torch.no_grad():
        assert torch.allclose(slim(x), mlp(x), atol=1e-6)


def test_magnitude_pruning_zeroes_weights_for_good(conv: lp.models.ConvNet) -> None:
    sparse, report = compress.prune(conv, 0.6, structured=False)
    assert report.details["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert report.parameters_after == report.parameters_before
    keys = set(sparse.state_dict())
    assert keys == set(conv.state_dict()), "no weight_orig / weight_mask left behind"
    zeros = sum(int((m.weight == 0).sum()) for m in sparse.modules() if hasattr(m, "weight"))
    assert zeros > 0.5 * sum(p.numel() for p in sparse.parameters())


# -- distillation -------------------------------------------------------------------------


def _student() -> lp.models.MLP:
    torch.manual_seed(1)
    return lp.models.MLP(in_features=784, num_classes=10, hidden=[32])


def test_fit_s_loss_hook_replaces_the_default_loss_and_only_it(mnist: Data) -> None:
    train = mnist[0].subset(slice(0, 1000))
    seen: list[tuple[int, ...]] = []

    def cross_entropy(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return F.cross_entropy(out, y)

    plain, hooked = _student(), _student()
    lp.fit(plain, train, epochs=1, batch_size=100, quiet=True, seed=0)
    lp.fit(hooked, train, epochs=1, batch_size=100, quiet=True, seed=0, loss=cross_entropy)
    assert seen == [(100, 1, 28, 28)] * 10, "called once per batch, with the inputs"
    for key, value in plain.state_dict().items():  # the same arithmetic, bit for bit
        assert torch.equal(value, hooked.state_dict()[key]), key


def test_distillation_trains_the_student_on_the_teacher_through_fit(
    conv: lp.models.ConvNet, mnist: Data
) -> None:
    train, test = mnist[0].subset(slice(0, 2000)), mnist[1]
    labels_only = _student()
    lp.fit(labels_only, train, epochs=2, batch_size=64, lr=5e-3, quiet=True, seed=0)
    student, report = compress.distill(
        conv, _student(), train, temperature=4.0, alpha=1.0, epochs=2, lr=5e-3, test=test
    )
    assert report.details["loss_calls"] == 2 * 32  # one call per batch
    changed = [not torch.equal(v, student.state_dict()[k])
               for k, v in labels_only.state_dict().items()]  # fmt: skip
    assert all(changed), "alpha=1 learns from the teacher alone, not the labels"
    assert report.accuracy_after is not None
    assert report.accuracy_after > 0.7, report.lines()  # from soft targets only (chance: 0.1)
    assert report.parameters_after < report.parameters_before
    assert report.recipe["alpha"] == 1.0


def test_the_distillation_loss_is_hinton_s() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 3)
    student_logits, x = torch.randn(4, 3), torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 1])
    loss = compress.DistillationLoss(teacher, temperature=2.0, alpha=0.25)
    with torch.no_grad():
        p = (teacher(x) / 2).softmax(dim=1)
    q = (student_logits / 2).log_softmax(dim=1)
    kl = (p * (p.log() - q)).sum(dim=1).mean()
    expected = 0.25 * 4 * kl + 0.75 * F.cross_entropy(student_logits, y)
    assert torch.allclose(loss(student_logits, y, x), expected, atol=1e-6)


# -- the registry, the recipe, the CLI and a deployment -----------------------------------


def test_compressed_versions_register_with_lineage_and_deploy(
    conv: lp.models.ConvNet, mnist: Data
) -> None:
    original = lp.register(conv, "mnist-small", dataset=mnist[0])
    config = compress.CompressConfig(
        model="mnist-small:1", quantize="static", calibration_size=256, test_limit=500
    )
    lines: list[str] = []
    outcome = compress.run(config, say=lines.append)
    assert outcome.registered == "mnist-small:2"
    assert lines[-1] == "registered as mnist-small:2"
    version = registry.resolve("mnist-small:2")
    lineage = version.manifest["lineage"]
    assert lineage["derived_from"] == original.ref
    assert lineage["recipe"] == config.model_dump(mode="json", by_alias=True)
    assert lineage["recipe"]["quantize"] == "static"
    assert version.manifest["kind"] == "onnx"
    assert version.manifest["output_schema"]["classes"] == [str(i) for i in range(10)]
    report = outcome.report
    assert report.accuracy_after is not None
    assert version.metrics["accuracy"] == pytest.approx(report.accuracy_after)

    # reloaded, it answers exactly as the int8 model did: within the reported drift
    reloaded = lp.load_model("mnist-small:2")
    x = lp.data.load("mnist", split="test").features[:500]
    with torch.no_grad():
        ours, fp32 = reloaded(x), conv(x)
    assert torch.equal(ours, outcome.model(x))
    assert report.max_abs_diff is not None
    assert float((ours - fp32).abs().max()) <= report.max_abs_diff + 1e-6

    # and it deploys like any ONNX version: the same answers over HTTP
    async def scenario(client: httpx.AsyncClient, _app: Any) -> dict[str, Any]:
        answer = await client.post("/predict", json={"inputs": x[0].tolist()})
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    served = run_app(ModelService("mnist-small:2"), scenario)
    assert served["label"] == str(int(ours[0].argmax()))

    # a PyTorch result (pruning, no fine-tuning) registers as a rebuildable zoo model
    pruned = compress.prune("mnist-small:1", 0.5, register="mnist-small-pruned")
    assert pruned.report.registered == "mnist-small-pruned:1"
    manifest = registry.resolve("mnist-small-pruned:1").manifest
    assert manifest["lineage"]["derived_from"] == "mnist-small:1"
    assert manifest["lineage"]["recipe"]["amount"] == 0.5
    assert manifest["architecture"]["config"]["num_filters"] == [4, 8]
    with torch.no_grad():
        assert torch.equal(lp.load_model("mnist-small-pruned:1")(x[:8]), pruned.model(x[:8]))
    assert "derived from `mnist-small:1`" in registry.model_card_text("mnist-small-pruned:1")

    # the CLI runs the same recipe and prints the report
    result = CliRunner().invoke(
        _cli(), ["mnist-small:1", "--quantize", "none", "--prune", "0.5", "--finetune-limit",
                 "256", "--test-limit", "200", "--register", "mnist-small-cli"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "registered as mnist-small-cli:1" in result.output
    assert re.search(r"accuracy: \d+\.\d\d% -> \d+\.\d\d%", result.output), result.output


def _cli() -> Any:
    import typer

    app = typer.Typer()
    app.command()(compress_command)
    return app


# -- bad inputs ---------------------------------------------------------------------------


def test_bad_inputs_are_refused_with_a_way_out(
    conv: lp.models.ConvNet, exported: compress.Compressed
) -> None:
    for amount in (0, 1, 1.5, -0.2, True):
        with pytest.raises(CompressionError, match=r"amount must be a fraction in \(0, 1\)"):
            compress.prune(conv, amount)
    with pytest.raises(CompressionError, match="unknown method 'int4'; use one of"):
        compress.quantize(exported, "int4", calibration="mnist")  # type: ignore[arg-type]
    with pytest.raises(CompressionError, match="unknown backend 'tensorrt'"):
        compress.quantize(exported, calibration="mnist", backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(CompressionError, match="quantize needs real inputs"):
        compress.quantize(exported)
    with pytest.raises(ShapeError, match=r"calibration data 'iris' has inputs of shape \[4\]"):
        compress.quantize(exported, "static", calibration="iris")
    with pytest.raises(CompressionError, match="prune needs a PyTorch model"):
        compress.prune(exported, 0.5)
    with pytest.raises(CompressionError, match="structured pruning rebuilds ConvNet and MLP"):
        compress.prune(lp.models.ResNet(num_classes=10), 0.5)
    with pytest.raises(CompressionError, match=r"alpha must be in \[0, 1\]"):
        compress.distill(conv, copy.deepcopy(conv), "mnist", alpha=1.5)
    five_classes = lp.models.MLP(in_features=784, num_classes=5)
    few = lp.data.load("mnist", split="train").subset(slice(0, 64))
    with pytest.raises(CompressionError, match="build the student with the teacher's number"):
        compress.distill(conv, five_classes, few)
    with pytest.raises(ConfigError, match="nothing to do: set quantize"):
        compress.CompressConfig.checked(model="mnist-small:1", quantize=None)
    with pytest.raises(ConfigError, match=r"prune: Input should be less than 1"):
        compress.CompressConfig.checked(model="mnist-small:1", prune=1.0)
    with pytest.raises(ConfigError, match="invalid model name 'Bad Name'"):
        compress.CompressConfig.checked(model="mnist-small:1", register="Bad Name")
