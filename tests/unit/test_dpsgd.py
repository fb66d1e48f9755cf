"""DP-SGD through ``lp.fit(privacy=lp.privacy.DPSGD(...))`` on a few hundred real MNIST rows:
the clipping bounds every update, the noise has the accountant's scale, the ledger is
charged with the run's event before the first step (and refuses an overspending run,
which then trains nothing), BatchNorm is fixed, and the model card states the guarantee."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
from dp_accounting import (  # type: ignore[import-untyped]
    GaussianDpEvent,
    PoissonSampledDpEvent,
    SelfComposedDpEvent,
)
from torch import nn

import lepton as lp
from lepton import privacy
from lepton.data import Dataset
from lepton.errors import BudgetExceededError, NoBudgetError, PrivateTrainingError
from lepton.privacy._accounting import event_from_json

ROWS, BATCH = 600, 64


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return lp.data.load("mnist", split="train").subset(slice(0, ROWS))


def mlp(hidden: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return lp.models.MLP(in_features=784, num_classes=10, hidden=[hidden])


def weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def train(model: nn.Module, data: Dataset, dp: Any = None, **kw: Any) -> lp.FitResult:
    options: dict[str, Any] = dict(epochs=1, batch_size=BATCH, optimizer="sgd", lr=0.1,
                                   momentum=0.0, quiet=True, device="cpu")  # fmt: skip
    options.update(kw)
    return lp.fit(model, data, privacy=dp, **options)


def no_opacus_left(model: nn.Module) -> bool:
    hooks = any(m._forward_hooks or m._backward_hooks for m in model.modules())
    return not hooks and not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_dpsgd_reaches_its_epsilon_and_reports_the_run(mnist: Dataset) -> None:
    accountant = "prv"  # the card test below uses "rdp"
    model = mlp()
    dp = privacy.DPSGD(epsilon=3, delta=1e-4, max_grad_norm=1.0, accountant=accountant)
    result = train(model, mnist, dp, lr=0.5)
    p = result.privacy
    assert p is not None
    assert p["accountant"] == accountant
    assert p["delta"] == 1e-4
    assert p["max_grad_norm"] == 1.0
    assert p["sample_rate"] == 1 / math.ceil(ROWS / BATCH)  # Opacus: 1 / batches per epoch
    assert p["steps"] == p["planned_steps"] == math.ceil(ROWS / BATCH)
    # the noise was calibrated for the whole run: the accountant lands just under target
    assert 2.7 < p["epsilon"] <= 3.0 + 1e-6
    assert p["noise_multiplier"] > 0.5
    assert p["private"] is True
    assert p["ledger"] is None
    assert result.to_dict()["privacy"] == p
    assert result.history[0].train["accuracy"] > 0.15  # it learns despite the noise
    assert no_opacus_left(model)  # hooks and per-sample buffers are gone


def test_per_sample_clipping_bounds_every_update(mnist: Dataset) -> None:
    """With max_grad_norm C and plain SGD, each step moves the weights by at most
    lr * (C * batch / expected_batch + noise); without DP the same steps move far more."""
    clip, lr = 1e-3, 0.1
    plain, private = mlp(), mlp()
    start = weights(plain)
    train(plain, mnist, lr=lr)
    result = train(private, mnist, privacy.DPSGD(epsilon=50, delta=1e-4, max_grad_norm=clip,
                                                 seed=0), lr=lr)  # fmt: skip
    p = result.privacy
    assert p is not None
    steps, expected_batch, d = p["steps"], p["expected_batch_size"], start.numel()
    largest_batch = 2 * expected_batch  # Poisson batches of mean 64 stay far below 128
    noise = p["noise_multiplier"] * clip * math.sqrt(d * steps) / expected_batch
    bound = lr * (steps * clip * largest_batch / expected_batch + 1.5 * noise)
    moved_private = float((weights(private) - start).norm())
    moved_plain = float((weights(plain) - start).norm())
    assert moved_private <= bound
    assert moved_plain > 20 * bound


def test_the_noise_has_the_calibrated_scale(mnist: Dataset) -> None:
    """At a tiny epsilon the update is almost all noise: ||sum of T Gaussian steps|| is
    lr * sigma * C * sqrt(d * T) / expected_batch (the clipped gradients add <= 2%)."""
    clip, lr = 0.01, 0.1
    model = mlp(hidden=128)
    start = weights(model)
    result = train(model, mnist, privacy.DPSGD(epsilon=0.1, delta=1e-4, max_grad_norm=clip,
                                               seed=0), lr=lr)  # fmt: skip
    p = result.privacy
    assert p is not None
    assert p["noise_multiplier"] > 5  # the noise dominates by construction
    d, steps = start.numel(), p["steps"]
    expected = lr * p["noise_multiplier"] * clip * math.sqrt(d * steps) / p["expected_batch_size"]
    assert float((weights(model) - start).norm()) == pytest.approx(expected, rel=0.05)


def test_the_ledger_is_charged_before_training_and_refuses_an_overspending_run(
    mnist: Dataset,
) -> None:
    key = "dpsgd-test-mnist"
    with pytest.raises(NoBudgetError):
        train(mlp(), mnist, privacy.DPSGD(epsilon=1, delta=1e-4, dataset=key))
    privacy.set_budget(key, epsilon=3.3, delta=1e-4)
    model = mlp()
    result = train(model, mnist, privacy.DPSGD(epsilon=3, delta=1e-4, dataset=key))
    p = result.privacy
    assert p is not None
    assert p["ledger"] == key
    (charged,) = privacy.charges(key)
    assert charged.id == p["charge_id"]
    assert "dpsgd MLP" in charged.what
    assert event_from_json(charged.event) == SelfComposedDpEvent(
        PoissonSampledDpEvent(p["sample_rate"], GaussianDpEvent(p["noise_multiplier"])),
        p["planned_steps"],
    )
    assert 2.7 < charged.epsilon_after <= 3.1  # the ledger's own accountant agrees
    # a second run at epsilon 3 cannot fit in the 0.3 that remains: refused, nothing trained
    again = mlp()
    before = weights(again)
    with pytest.raises(BudgetExceededError, match="Nothing was released or charged"):
        train(again, mnist, privacy.DPSGD(epsilon=3, delta=1e-4, dataset=key))
    assert torch.equal(weights(again), before)
    assert no_opacus_left(again)
    assert len(privacy.charges(key)) == 1


def test_a_zoo_convnet_gets_groupnorm_and_its_spec_rebuilds_what_was_trained(
    mnist: Dataset,
) -> None:
    model = lp.models.ConvNet(num_classes=10, num_filters=[8, 16], in_channels=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(model, mnist.subset(slice(0, 300)),
                       privacy.DPSGD(epsilon=3, delta=1e-4, max_grad_norm=1.0))  # fmt: skip
    # norm="group" rebuilds it, so nothing to warn about (torch's own hook notes aside)
    assert not [w for w in caught if "DP-SGD changed" in str(w.message)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 2
    assert result.privacy is not None
    assert len(result.privacy["model_changes"]) == 2
    spec = lp.models.model_spec(model)
    assert spec["config"]["norm"] == "group"
    rebuilt = lp.models.build(spec)
    rebuilt.load_state_dict(model.state_dict())  # strict: same layers, same shapes
    model.eval()
    rebuilt.eval()
    x = mnist.features[:16]
    assert torch.equal(rebuilt(x), model(x))


def test_batchnorm_of_a_model_outside_the_zoo_is_replaced_with_a_warning(
    mnist: Dataset,
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))  # fmt: skip
    with pytest.warns(UserWarning, match=r"BatchNorm2d.*-> GroupNorm"):
        train(model, mnist.subset(slice(0, 300)),
              privacy.DPSGD(epsilon=3, delta=1e-4, max_grad_norm=1.0))  # fmt: skip
    assert isinstance(model[1], nn.GroupNorm)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"amp": True}, "amp"),
        ({"grad_clip": 1.0}, "grad_clip"),
        ({"checkpoint_dir": "ckpt"}, "checkpoint"),
    ],
)
def test_options_that_break_dp_are_refused(
    mnist: Dataset, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(PrivateTrainingError, match=match):
        train(mlp(), mnist, privacy.DPSGD(epsilon=3, delta=1e-4), **options)


def test_a_delta_too_large_for_the_rows_is_refused(mnist: Dataset) -> None:
    with pytest.raises(lp.errors.PrivacyError, match="1/rows"):
        train(mlp(), mnist, privacy.DPSGD(epsilon=3, delta=1e-2))


def test_the_registered_model_card_states_the_guarantee(mnist: Dataset) -> None:
    model = mlp()
    dp = privacy.DPSGD(epsilon=2, delta=1e-4, max_grad_norm=0.5, accountant="rdp")
    result = train(model, mnist, dp)
    version = lp.register(model, "dp-mlp", metrics=result.metrics, dataset=mnist,
                          privacy=result.privacy)  # fmt: skip
    assert version.manifest["privacy"]["accountant"] == "rdp"
    card = lp.registry.model_card_text(version.ref)
    assert "## Privacy" in card
    assert f"epsilon = {result.privacy['epsilon']:.3g}" in card  # type: ignore[index]
    assert "delta = 0.0001" in card
    assert "accountant: rdp" in card
    assert "L2 norm 0.5" in card
    loaded = lp.load_model(version.ref)  # a DP model loads back like any other
    assert torch.equal(weights(loaded), weights(model))
