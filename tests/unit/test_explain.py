"""``lepton.explain`` on real MNIST and breast-cancer models, with the sanity checks of
Adebayo et al. (2018): attributions must depend on the learned weights, integrated
gradients must be complete, and simple models must get the attributions we can derive."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

import lepton as lp
from lepton.errors import ExplainError, MissingExtraError, ShapeError
from lepton.explain import METHODS, Attribution, explain, permutation_importance


@pytest.fixture(scope="module")
def mnist() -> tuple[torch.nn.Module, torch.Tensor]:
    """A small ConvNet fit for one epoch on 2,000 real MNIST images, and 16 test images."""
    torch.manual_seed(0)
    train = lp.data.load("mnist", split="train").subset(range(2000))
    model = lp.models.ConvNet(num_classes=10, num_filters=[8, 16], dropout=0.0)
    lp.fit(model, train, epochs=1, batch_size=64, quiet=True, seed=0)
    x = lp.data.load("mnist", split="test").features[:16].clone()
    return model, x


@pytest.fixture(scope="module")
def cancer() -> tuple[torch.nn.Module, lp.data.Dataset, lp.data.Dataset]:
    """A linear classifier (an MLP without hidden layers) on standardized breast-cancer."""
    train = lp.data.load("breast-cancer", split="train").standardize()
    test = lp.data.load("breast-cancer", split="test").standardize(train.stats)
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=30, num_classes=2, hidden=[])
    lp.fit(model, train, epochs=4, batch_size=32, lr=3e-2, quiet=True, seed=0)
    return model.eval(), train, test


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)  # type: ignore[no-any-return]


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(np.abs(a), np.abs(b)).statistic)


# --- sanity checks --------------------------------------------------------------------


@pytest.mark.slow
def test_integrated_gradients_are_complete(mnist: tuple[torch.nn.Module, torch.Tensor]) -> None:
    model, x = mnist
    model.train()  # a model in training: explained in eval mode, then given back as it was
    result = explain(model, x, method="integrated_gradients")
    assert model.training
    assert all(m.training for m in model.modules())
    assert result.attributions.shape == x.shape
    assert result.numpy().shape == tuple(x.shape)
    out, base = _logits(model, x), _logits(model, torch.zeros_like(x))
    assert result.targets == out.argmax(dim=1).tolist()
    rows = torch.arange(len(x))
    difference = out[rows, result.targets] - base[rows, result.targets]
    sums = result.attributions.reshape(len(x), -1).sum(dim=1)
    # completeness (Sundararajan et al., 2017): the attributions add up to f(x) - f(0)
    assert torch.allclose(sums, difference, rtol=0.02, atol=0.05), (sums, difference)
    assert result.convergence_delta is not None
    assert torch.allclose(result.convergence_delta, sums - difference, atol=1e-3)


@pytest.mark.slow
def test_a_model_with_randomized_weights_gets_different_attributions(
    mnist: tuple[torch.nn.Module, torch.Tensor],
) -> None:
    model, x = mnist
    torch.manual_seed(1)
    randomized = lp.models.build(lp.models.model_spec(model))  # same architecture, new weights
    ink = (x.reshape(len(x), -1) > 0).numpy()
    for method in ("saliency", "integrated_gradients"):
        trained = explain(model, x, method=method).numpy().reshape(len(x), -1)
        again = explain(model, x, method=method).numpy().reshape(len(x), -1)
        random = explain(randomized, x, method=method).numpy().reshape(len(x), -1)
        assert np.allclose(trained, again, atol=1e-6)  # deterministic: differences are real
        # IG multiplies by (x - 0): both maps are zero off the digit, so compare on the ink
        pixels = ink if method == "integrated_gradients" else np.ones_like(ink)
        correlations = [
            _rank_correlation(trained[i][pixels[i]], random[i][pixels[i]]) for i in range(len(x))
        ]
        assert np.mean(correlations) < 0.6, (method, correlations)


def test_gradcam_has_the_image_shape(mnist: tuple[torch.nn.Module, torch.Tensor]) -> None:
    model, x = mnist
    batched = explain(model, x[:4], method="gradcam")
    assert batched.attributions.shape == (4, 1, 28, 28)
    assert float(batched.attributions.min()) >= 0.0  # ReLU-ed class activation map
    assert float(batched.attributions.amax(dim=(1, 2, 3)).min()) > 0.0
    no_channel = explain(model, x[:2, 0], method="gradcam")  # (B, H, W)
    assert no_channel.attributions.shape == (2, 28, 28)
    one = explain(model, x[0, 0], method="gradcam")  # one (H, W) image
    assert one.attributions.shape == (28, 28)
    assert torch.allclose(one.attributions, batched.attributions[0, 0], atol=1e-5)
    named = explain(model, x[:4], method="gradcam", layer="features.1.0")  # a conv by name
    assert named.attributions.shape == (4, 1, 28, 28)
    torch.manual_seed(0)  # a residual network of three-channel images
    resnet = lp.models.ResNet(num_classes=3, in_channels=3, widths=[4, 8])
    colour = explain(resnet, torch.rand(2, 3, 16, 16), method="gradcam", target=1)
    assert colour.attributions.shape == (2, 3, 16, 16)
    assert colour.targets == [1, 1]


def test_occlusion_on_a_linear_model_is_weight_times_input(
    cancer: tuple[torch.nn.Module, lp.data.Dataset, lp.data.Dataset],
) -> None:
    model, _, test = cancer
    rows = test.subset(range(8))
    result = explain(model, rows, method="occlusion")
    weights = model.layers[0].weight.detach()  # type: ignore[index]
    expected = weights[result.targets] * rows.features  # logit_t(x) - logit_t(x with x_i = 0)
    assert torch.allclose(result.attributions, expected, atol=1e-4)
    big = expected.abs() > 1e-3
    assert torch.equal(result.attributions[big].sign(), expected[big].sign())
    assert result.feature_names == test.feature_names


def test_kernel_shap_sums_to_the_output_difference(
    cancer: tuple[torch.nn.Module, lp.data.Dataset, lp.data.Dataset],
) -> None:
    model, train, test = cancer
    x = test.features[:3]
    baseline = train.features.mean(dim=0)  # the usual SHAP reference: the average row
    result = explain(model, x, method="shap", baseline=baseline, n_samples=300)
    out = _logits(model, x)
    ref = _logits(model, baseline.expand_as(x))
    rows = torch.arange(3)
    difference = out[rows, result.targets] - ref[rows, result.targets]
    sums = result.attributions.sum(dim=1)
    assert torch.allclose(sums, difference, rtol=0.05, atol=0.05), (sums, difference)
    weights = model.layers[0].weight.detach()  # type: ignore[index]
    exact = weights[result.targets] * (x - baseline)  # SHAP values of a linear model
    assert torch.allclose(result.attributions, exact, atol=0.05)


@pytest.mark.slow
def test_permutation_importance_on_a_dataset(
    cancer: tuple[torch.nn.Module, lp.data.Dataset, lp.data.Dataset],
) -> None:
    model, train, test = cancer
    importance = permutation_importance(model, train, n_repeats=2, seed=0)
    assert importance.names == train.feature_names
    assert importance.metric == "accuracy"
    assert importance.mean.shape == importance.std.shape == (30,)
    assert importance.baseline_score == pytest.approx(lp.evaluate(model, train)["accuracy"])
    name, mean, _ = importance.top(1)[0]
    assert mean > 0
    assert name in train.feature_names
    card = importance.summary(k=5)
    assert json.loads(json.dumps(card))["features"][0]["name"] == name
    assert f"| {name} |" in importance.to_markdown(k=5)
    assert importance.plot().startswith(b"\x89PNG")
    # held out, with a finer metric than accuracy (on 113 rows no single shuffle flips one)
    auc = permutation_importance(model, test, metric="roc_auc", n_repeats=2, seed=1)
    assert auc.metric == "roc_auc"
    assert 0.9 < auc.baseline_score <= 1.0
    assert auc.top(1)[0][1] > 0
    again = permutation_importance(model, test, metric="roc_auc", n_repeats=2, seed=1)
    assert np.array_equal(again.mean, auc.mean)  # the seed fixes the shuffles
    with pytest.raises(ExplainError, match="unknown metric 'acc'"):
        permutation_importance(model, test, metric="acc")


def test_text_models_attribute_to_tokens() -> None:
    torch.manual_seed(0)
    ids = torch.tensor([[5, 9, 3, 7, 0, 0], [4, 4, 8, 2, 6, 1]])  # 0 pads the first row
    for model in (
        lp.models.TransformerClassifier(vocab_size=12, num_classes=2, d_model=16, nhead=2),
        lp.models.LSTMClassifier(vocab_size=12, num_classes=3, embed_dim=8, hidden_size=8),
    ):
        result = explain(model, ids, n_steps=64)
        assert result.kind == "text"
        assert result.attributions.shape == (2, 6)
        assert torch.all(result.attributions[0, 4:] == 0)  # padding equals the baseline
        assert result.convergence_delta is not None
        # the path runs in embedding space with the inputs' own padding masks: complete
        assert float(result.convergence_delta.abs().max()) < 0.01
        words = ["the", "film", "is", "good", "<pad>", "<pad>"]
        named = explain(model, ids[0], feature_names=words)  # one sequence
        assert named.attributions.shape == (6,)
        assert {w for w, _ in named.top_features(4)} <= set(words[:4])


# --- inputs, outputs, plots -----------------------------------------------------------


def test_every_input_form_gives_the_same_attributions(
    mnist: tuple[torch.nn.Module, torch.Tensor],
) -> None:
    model, x = mnist
    reference = explain(model, x[:3], method="saliency").attributions
    test = lp.data.load("mnist", split="test")
    forms = [x[:3].numpy(), test.subset(range(3)), test[0:3]]
    for form in forms:
        assert torch.allclose(explain(model, form, method="saliency").attributions, reference)
    flat = lp.models.MLP(in_features=784, num_classes=10, hidden=[16])  # takes flattened input
    assert explain(flat, x[:2], method="occlusion").attributions.shape == (2, 1, 28, 28)
    assert explain(flat, x[:2].reshape(2, -1)).attributions.shape == (2, 784)


def test_a_registry_reference_is_loaded(mnist: tuple[torch.nn.Module, torch.Tensor]) -> None:
    model, x = mnist
    version = lp.register(model, "explain-mnist")
    by_ref = explain(f"{version.ref}", x[:2], method="saliency")
    assert torch.allclose(
        by_ref.attributions, explain(model, x[:2], method="saliency").attributions
    )


def test_plots_are_pngs(
    mnist: tuple[torch.nn.Module, torch.Tensor],
    cancer: tuple[torch.nn.Module, lp.data.Dataset, lp.data.Dataset],
    tmp_path: Path,
) -> None:
    model, x = mnist
    image = explain(model, x[:2], method="integrated_gradients")
    png = image.plot(tmp_path / "digit.png", index=1)
    assert (tmp_path / "digit.png").read_bytes() == png
    width, height = Image.open(io.BytesIO(png)).size
    assert width > 3 * 168
    assert height > 168
    with pytest.raises(ExplainError, match="top_features is for tabular"):
        image.top_features(3)
    linear, _, test = cancer
    rows = explain(linear, test.subset(range(2)), method="integrated_gradients")
    top = rows.top_features(3, index=1)
    assert len(top) == 3
    assert all(name in test.feature_names for name, _ in top)
    assert abs(top[0][1]) >= abs(top[1][1]) >= abs(top[2][1])
    assert Image.open(io.BytesIO(rows.plot())).format == "PNG"
    assert isinstance(rows, Attribution)
    assert rows.to_dict()["target"] == rows.targets[0]


# --- errors ---------------------------------------------------------------------------


def test_bad_requests_raise_clear_errors(
    mnist: tuple[torch.nn.Module, torch.Tensor],
    cancer: tuple[torch.nn.Module, lp.data.Dataset, lp.data.Dataset],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, x = mnist
    linear, _, test = cancer
    assert set(METHODS) == {"integrated_gradients", "saliency", "occlusion", "gradcam", "shap",
                            "permutation"}  # fmt: skip
    with pytest.raises(ExplainError, match="unknown method 'lime'; use one of"):
        explain(model, x[:1], method="lime")
    with pytest.raises(ExplainError, match="has no option n_step; it takes"):
        explain(model, x[:1], n_step=10)
    with pytest.raises(ShapeError, match=r"ConvNet expects images shaped \(B, 1, 28, 28\)"):
        explain(model, torch.rand(2, 1, 20, 20))
    with pytest.raises(ShapeError, match="MLP expects 30 values per example"):
        explain(linear, torch.rand(2, 12), method="occlusion")
    with pytest.raises(ExplainError, match="target 10 is out of range: the model has 10 outputs"):
        explain(model, x[:2], target=10)
    with pytest.raises(ExplainError, match="one class per example"):
        explain(model, x[:2], target=[1, 2, 3])
    mlp = lp.models.MLP(in_features=784, num_classes=10, hidden=[8])
    with pytest.raises(ExplainError, match="gradcam needs a convolutional layer"):
        explain(mlp, x[:1], method="gradcam")
    with pytest.raises(ExplainError, match="gradcam explains images"):
        explain(linear, test.subset(range(2)), method="gradcam")
    with pytest.raises(ExplainError, match=r"no layer 'features\.9'"):
        explain(model, x[:1], method="gradcam", layer="features.9")
    with pytest.raises(ExplainError, match="needs two or more inputs"):
        explain(linear, test.features[:1], method="permutation")
    with pytest.raises(ExplainError, match="token ids are explained with"):
        explain(lp.models.LSTMClassifier(vocab_size=9, num_classes=2), torch.ones(1, 3).long(),
                method="saliency")  # fmt: skip
    with pytest.raises(ShapeError, match="NaN or infinity"):
        explain(linear, torch.full((1, 30), float("nan")))
    with pytest.raises(ShapeError, match="baseline of shape"):
        explain(linear, test.features[:2], baseline=torch.zeros(7))
    with pytest.raises(ExplainError, match="registry reference"):
        explain(42, x[:1])  # type: ignore[arg-type]
    with pytest.raises(lp.errors.ModelNotFoundError, match="no-such-model"):
        explain("no-such-model:1", x[:1])
    frozen = _NoGradients(linear)
    with pytest.raises(ExplainError, match="has no gradients"):
        explain(frozen, test.features[:2], method="saliency")
    assert explain(frozen, test.features[:2], method="occlusion").attributions.shape == (2, 30)
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # as if Captum were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'lepton\[explain\]'"):
        explain(model, x[:1])


class _NoGradients(torch.nn.Module):
    """A model that cannot be differentiated, like an ONNX Runtime session."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.inner(x)  # type: ignore[no-any-return]
