"""The nn.Module zoo: shapes, gradients, spec round-trips, padding invariance, bad inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import lepton.models as lm
from lepton.errors import ShapeError, UnknownModelError

# (factory, a valid input batch of 3, number of outputs)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], int]] = {
    "mlp": (
        lambda: lm.MLP(in_features=12, num_classes=4, hidden=[16, 8], dropout=0.1),
        lambda: torch.randn(3, 3, 4),
        4,
    ),
    "mlp-regression": (
        lambda: lm.MLP(in_features=5, out_features=2, hidden=(), activation="tanh"),
        lambda: torch.randn(3, 5),
        2,
    ),
    "convnet": (
        lambda: lm.ConvNet(num_classes=10, num_filters=[8, 16, 32], kernel_size=3, dropout=0.5),
        lambda: torch.randn(3, 1, 28, 28),
        10,
    ),
    "convnet-rgb": (
        lambda: lm.ConvNet(num_classes=3, num_filters=[4, 8], in_channels=3, input_size=(16, 12)),
        lambda: torch.randn(3, 3, 16, 12),
        3,
    ),
    "resnet": (
        lambda: lm.ResNet(num_classes=5, in_channels=3, widths=[4, 8], blocks_per_stage=2),
        lambda: torch.randn(3, 3, 16, 16),
        5,
    ),
    "lstm": (
        lambda: lm.LSTMClassifier(vocab_size=50, num_classes=3, embed_dim=8, hidden_size=16),
        lambda: torch.tensor([[4, 9, 2, 0, 0], [7, 7, 7, 7, 7], [3, 0, 0, 0, 0]]),
        3,
    ),
    "gru-bidirectional": (
        lambda: lm.GRUClassifier(
            vocab_size=50,
            num_classes=2,
            embed_dim=8,
            hidden_size=8,
            num_layers=2,
            bidirectional=True,
            dropout=0.2,
        ),
        lambda: torch.tensor([[4, 9, 2, 0, 0], [7, 7, 7, 7, 7], [3, 0, 0, 0, 0]]),
        2,
    ),
    "transformer": (
        lambda: lm.TransformerClassifier(
            vocab_size=50, num_classes=4, d_model=16, nhead=2, dim_feedforward=32, max_len=8
        ),
        lambda: torch.tensor([[4, 9, 2, 0, 0], [7, 7, 7, 7, 7], [3, 0, 0, 0, 0]]),
        4,
    ),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[nn.Module, torch.Tensor, int]:
    torch.manual_seed(0)
    factory, make_input, outputs = CASES[request.param]
    return factory(), make_input(), outputs


def test_forward_shape_and_finite_gradients(case: tuple[nn.Module, torch.Tensor, int]) -> None:
    model, x, outputs = case
    out = model(x)
    assert out.shape == (3, outputs)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_spec_round_trip_gives_identical_outputs(case: tuple[nn.Module, torch.Tensor, int]) -> None:
    model, x, _ = case
    model(x)  # update BatchNorm running stats so they differ from a fresh model
    spec = json.loads(json.dumps(lm.model_spec(model)))
    twin = lm.build(spec)
    assert type(twin) is type(model)
    theirs = {k: v.shape for k, v in twin.state_dict().items()}
    assert theirs == {k: v.shape for k, v in model.state_dict().items()}
    twin.load_state_dict(model.state_dict())
    model.eval()
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)


def test_seed_api_convnet_spec() -> None:
    model = lm.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3, dropout=0.5)
    assert lm.model_spec(model) == {
        "name": "convnet",
        "config": {
            "num_classes": 10,
            "num_filters": [32, 64, 128],
            "kernel_size": 3,
            "dropout": 0.5,
            "in_channels": 1,
            "input_size": 28,
            "norm": "batch",
        },
    }
    assert model(torch.randn(2, 28, 28)).shape == (2, 10)  # (B, H, W) is unsqueezed


@pytest.mark.parametrize(
    ("factory", "bad_input", "match"),
    [
        (lambda: lm.MLP(in_features=4, num_classes=2), torch.randn(3, 5), r"\(B, 4\)"),
        (
            lambda: lm.ConvNet(num_classes=10),
            torch.randn(3, 3, 28, 28),
            r"\(B, 1, 28, 28\).*in_channels=3",
        ),
        (lambda: lm.ConvNet(num_classes=10), torch.randn(3, 1, 32, 32), r"got \(3, 1, 32, 32\)"),
        (
            lambda: lm.ResNet(num_classes=10, in_channels=3),
            torch.randn(3, 32, 32),
            r"\(B, 3, H, W\)",
        ),
        (lambda: lm.LSTMClassifier(10, 2), torch.randn(3, 5), "pass a torch.long tensor"),
        (lambda: lm.GRUClassifier(10, 2), torch.tensor([[1, 2, 10]]), r"\[0, 10\)\. Rebuild"),
        (
            lambda: lm.TransformerClassifier(10, 2),
            torch.ones(2, 3, 4).long(),
            r"\(B, T\).*tokenize",
        ),
        (
            lambda: lm.TransformerClassifier(10, 2, max_len=4),
            torch.ones(2, 5).long(),
            "rebuild with max_len>=5",
        ),
    ],
)
def test_bad_input_raises_shape_error(
    factory: Callable[[], nn.Module], bad_input: torch.Tensor, match: str
) -> None:
    with pytest.raises(ShapeError, match=match):
        factory()(bad_input)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: lm.LSTMClassifier(vocab_size=30, num_classes=3, embed_dim=8, hidden_size=8),
        lambda: lm.GRUClassifier(
            vocab_size=30, num_classes=3, hidden_size=8, num_layers=2, bidirectional=True
        ),
        lambda: lm.TransformerClassifier(
            vocab_size=30, num_classes=3, d_model=16, nhead=4, dim_feedforward=32
        ),
    ],
)
def test_extra_padding_does_not_change_logits(factory: Callable[[], nn.Module]) -> None:
    torch.manual_seed(0)
    model = factory().eval()
    short = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])  # (B, T) right-padded with 0
    long = torch.cat([short, torch.zeros(2, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(long), model(short), rtol=0, atol=1e-5)
        alone = model(torch.tensor([[8, 9]]))
        torch.testing.assert_close(model(short)[1:], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel_size", "per_block"),
    [
        (3, [(3, 3)] * 3),
        ([3, 3], [(3, 3)] * 3),  # the articles' call: a (height, width) pair, as in PyTorch
        ((3, 5), [(3, 5)] * 3),
        ([5, 3, 3], [(5, 5), (3, 3), (3, 3)]),  # one per block
        ([[5, 5], [4, 4], [3, 1]], [(5, 5), (4, 4), (3, 1)]),  # even sizes too
    ],
)
def test_convnet_kernel_size_as_pytorch_takes_it(kernel_size: Any, per_block: list[Any]) -> None:
    model = lm.ConvNet(num_classes=10, num_filters=[8, 16, 32], kernel_size=kernel_size)
    assert [block[0].kernel_size for block in model.features] == per_block
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    spec = lm.model_spec(model)
    twin = lm.build(json.loads(json.dumps(spec)))  # the manifest, as stored, rebuilds it
    assert lm.model_spec(twin) == spec
    twin.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(twin.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: lm.ConvNet(num_classes=1), r"num_classes must be an int >= 2.*ConvNet\("),
        (
            lambda: lm.ConvNet(num_classes=10, num_filters=[]),
            r"num_filters must be a non-empty.*A correct call",
        ),
        (
            lambda: lm.ConvNet(num_classes=10, num_filters=[32, -1]),
            r"list of ints >= 1, got \[32, -1\]",
        ),
        (lambda: lm.ConvNet(num_classes=10, dropout=1.0), r"dropout must be a float in \[0, 1\)"),
        (
            lambda: lm.ConvNet(num_classes=10, kernel_size=[3, 3, 3, 3]),
            r"kernel_size must be an int >= 1 \(3\), a \[height, width\] pair \(\[3, 3\]\) or one "
            r"per layer \(3 of them, e.g. \[3, 3, 3\]\), got \[3, 3, 3, 3\]",
        ),
        (lambda: lm.ConvNet(num_classes=10, kernel_size=0), r"kernel_size must be .*got 0"),
        (
            lambda: lm.ConvNet(num_classes=10, kernel_size=[[3, 3], [3], 5]),
            r"kernel_size must be .*got \[\[3, 3\], \[3\], 5\]",
        ),
        (
            lambda: lm.ConvNet(num_classes=10, num_filters=[8] * 5),
            r"input_size must be .*A correct call",
        ),
        (lambda: lm.MLP(in_features=4), r"give exactly one of num_classes \(classification\)"),
        (
            lambda: lm.MLP(in_features=4, num_classes=3, out_features=2),
            r"exactly one.*got num_classes=3, out_features=2",
        ),
        (
            lambda: lm.MLP(in_features=4, num_classes=3, activation="swish"),  # type: ignore[arg-type]
            r"activation must be one of \['relu'",
        ),
        (lambda: lm.ResNet(num_classes=True), "num_classes must be an int >= 2, got True"),
        (
            lambda: lm.LSTMClassifier(10, 2, bidirectional=1),  # type: ignore[arg-type]
            "bidirectional must be True or False",
        ),
        (
            lambda: lm.TransformerClassifier(10, 2, d_model=30, nhead=4),
            r"d_model \(30\) must be divisible by nhead",
        ),
        (lambda: lm.GRUClassifier(10, 2, padding_idx=10), "padding_idx must be < vocab_size=10"),
    ],
)
def test_invalid_constructor_arguments(factory: Callable[[], nn.Module], match: str) -> None:
    with pytest.raises(UnknownModelError, match=match):
        factory()


def test_resnet_channels_last_is_a_layout_not_a_different_model() -> None:
    torch.manual_seed(0)
    fast = lm.ResNet(num_classes=5, in_channels=3, widths=[4, 8], blocks_per_stage=2)
    plain = lm.ResNet(num_classes=5, in_channels=3, widths=[4, 8], blocks_per_stage=2,
                      channels_last=False)  # fmt: skip
    plain.load_state_dict(fast.state_dict())
    assert lm.model_spec(plain)["config"]["channels_last"] is False
    seen: dict[str, bool] = {}
    for net, name in ((fast, "fast"), (plain, "plain")):
        net.stages[0].register_forward_pre_hook(
            lambda _m, args, name=name: seen.__setitem__(
                name, args[0].is_contiguous(memory_format=torch.channels_last)
            )
        )
    x = torch.rand(6, 3, 12, 12)
    out_fast, out_plain = fast(x), plain(x)
    assert seen == {"fast": True, "plain": False}  # the stages' input layout
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-6)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    for a, b in zip(fast.parameters(), plain.parameters(), strict=True):
        assert a.grad is not None
        assert b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
