"""lp.fit on real (small) data: learning, determinism, exact resume, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import lepton as lp
from lepton.errors import CheckpointError, DivergedError, LabelError, ShapeError, TrainingError
from lepton.train import Callback, EarlyStopping, TrainState

Digits = tuple[lp.data.Dataset, lp.data.Dataset]


@pytest.fixture(scope="module")
def digits() -> tuple[lp.data.Dataset, lp.data.Dataset]:
    return lp.data.load("digits", split="train"), lp.data.load("digits", split="test")


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return lp.models.MLP(in_features=64, num_classes=10, hidden=[64], dropout=0.1)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    assert a, "a model with no weights compares equal to anything"
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_learns_real_digits(digits: Digits) -> None:
    train, test = digits
    model = mlp()
    result = lp.fit(model, train, test, epochs=8, batch_size=32, lr=3e-3, quiet=True)
    assert len(result.history) == 8
    assert result.history[-1].train["loss"] < result.history[0].train["loss"] / 3
    assert result.metrics["accuracy"] > 0.93  # val = test here
    assert lp.evaluate(model, test)["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert result.samples_per_second > 0
    assert result.best_epoch >= 1
    losses = [r.val["loss"] for r in result.history]
    assert result.best == result.history[losses.index(min(losses))].val
    json.dumps(result.to_dict())  # JSON-safe


def test_same_seed_same_weights_other_seed_differs(digits: Digits) -> None:
    train, _ = digits
    runs = []
    for seed in (0, 0, 1):
        model = mlp()
        lp.fit(model, train, epochs=2, batch_size=64, seed=seed, quiet=True)
        runs.append(weights(model))
    assert same_weights(runs[0], runs[1])
    assert not same_weights(runs[0], runs[2])


class CrashAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == self.epoch:
            # a crash before this epoch's checkpoint lands
            raise KeyboardInterrupt(f"simulated crash in epoch {self.epoch}")


@pytest.mark.parametrize(
    ("optimizer", "schedule", "patience"),
    [("adamw", "onecycle", None), ("sgd", "step", None), ("adam", "plateau", 5)],
)
def test_resume_equals_uninterrupted_run(
    digits: Digits, tmp_path: Path, optimizer: str, schedule: str, patience: int | None
) -> None:
    train, test = digits
    kw: dict[str, Any] = dict(
        epochs=4, batch_size=64, optimizer=optimizer, schedule=schedule, seed=3, quiet=True, lr=1e-2
    )
    straight = mlp()
    full = lp.fit(straight, train, test, early_stopping=patience, **kw)

    crashed = mlp()
    with pytest.raises(KeyboardInterrupt, match="simulated crash in epoch 2"):
        lp.fit(
            crashed,
            train,
            test,
            early_stopping=patience,
            checkpoint_dir=tmp_path,
            callbacks=[CrashAfter(2)],
            **kw,
        )
    resumed = mlp(seed=99)  # a fresh process would start from other random weights
    again = lp.fit(
        resumed, train, test, early_stopping=patience, checkpoint_dir=tmp_path, resume=True, **kw
    )
    assert same_weights(weights(straight), weights(resumed))
    assert len(again.history) == len(full.history) == 4
    assert [r.train for r in again.history] == [r.train for r in full.history]
    assert [r.val for r in again.history] == [r.val for r in full.history]
    assert again.checkpoint is not None
    assert again.checkpoint.name == "epoch-0004"
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-0003", "epoch-0004"]


def test_checkpoint_dir_in_use_needs_resume(digits: Digits, tmp_path: Path) -> None:
    train, _ = digits
    lp.fit(mlp(), train, epochs=1, checkpoint_dir=tmp_path, quiet=True)
    with pytest.raises(CheckpointError, match="pass resume=True to continue it"):
        lp.fit(mlp(), train, epochs=1, checkpoint_dir=tmp_path, quiet=True)
    other = lp.models.MLP(in_features=64, num_classes=10, hidden=[32])
    with pytest.raises(CheckpointError, match=r"different model.*build the same model"):
        lp.fit(other, train, epochs=2, checkpoint_dir=tmp_path, resume=True, quiet=True)
    with pytest.raises(CheckpointError, match="resume with the same data, batch_size and seed"):
        lp.fit(
            mlp(), train, epochs=2, batch_size=7, checkpoint_dir=tmp_path, resume=True, quiet=True
        )


def test_corrupt_checkpoint_is_reported(digits: Digits, tmp_path: Path) -> None:
    train, _ = digits
    lp.fit(mlp(), train, epochs=1, checkpoint_dir=tmp_path, quiet=True)
    (tmp_path / "epoch-0001" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"unreadable.*delete the folder to start over"):
        lp.fit(mlp(), train, epochs=2, checkpoint_dir=tmp_path, resume=True, quiet=True)


def test_early_stopping_stops_and_restores_best(digits: Digits) -> None:
    train, test = digits
    seen: list[dict[str, torch.Tensor]] = []

    class Snapshot(Callback):
        def on_epoch_end(self, state: TrainState) -> None:
            seen.append(weights(state.model))

    model = mlp()
    # min_delta so large that nothing after epoch 1 counts as an improvement
    stopper = EarlyStopping(patience=2, monitor="val_loss", min_delta=1e9)
    result = lp.fit(
        model, train, test, epochs=10, early_stopping=stopper, callbacks=[Snapshot()], quiet=True
    )
    assert result.stopped_early
    assert len(result.history) == 3
    assert stopper.best_epoch == 1
    assert same_weights(weights(model), seen[0])
    assert result.metrics == result.history[0].val


def test_early_stopping_unknown_metric(digits: Digits) -> None:
    train, _ = digits
    with pytest.raises(TrainingError, match=r"monitors 'val_loss'.*pass val= data"):
        lp.fit(mlp(), train, epochs=2, early_stopping=EarlyStopping(monitor="val_loss"), quiet=True)


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "adagrad", "rmsprop"])
def test_every_optimizer_lowers_the_loss(digits: Digits, name: str) -> None:
    train, _ = digits
    result = lp.fit(mlp(), train, epochs=3, optimizer=name, lr=1e-2, quiet=True)
    assert result.history[-1].train["loss"] < result.history[0].train["loss"]


def test_cosine_schedule_anneals_to_zero(digits: Digits) -> None:
    train, _ = digits
    result = lp.fit(mlp(), train, epochs=3, schedule="cosine", lr=1e-2, quiet=True)
    lrs = [r.lr for r in result.history]
    assert lrs[0] < 1e-2
    assert lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_grad_clip_bounds_the_gradient_norm(digits: Digits) -> None:
    train, _ = digits
    norms: list[float] = []

    class Norm(Callback):
        def on_batch_end(self, state: TrainState) -> None:
            grads = [p.grad.norm() for p in state.model.parameters() if p.grad is not None]
            norms.append(float(torch.stack(grads).norm()))

    lp.fit(mlp(), train, epochs=1, grad_clip=0.05, lr=0.5, callbacks=[Norm()], quiet=True)
    assert max(norms) <= 0.05 + 1e-5


def test_nan_loss_raises_diverged() -> None:
    x = torch.randn(64, 4)
    x[5, 2] = math.nan
    y = torch.randint(0, 2, (64,))
    model = lp.models.MLP(in_features=4, num_classes=2, hidden=[8])
    with pytest.raises(DivergedError, match="lower the learning rate"):
        lp.fit(model, (x, y), epochs=1, batch_size=64, quiet=True)


def test_shape_mistakes_are_clear(digits: Digits) -> None:
    train, _ = digits
    with pytest.raises(ShapeError, match=r"in_features.*shape \(1, 8, 8\) \(64 values\)"):
        lp.fit(lp.models.MLP(in_features=10, num_classes=10), train, epochs=1, quiet=True)
    with pytest.raises(ShapeError, match="build it with num_classes=10"):
        lp.fit(lp.models.MLP(in_features=64, num_classes=3), train, epochs=1, quiet=True)


def test_bad_arguments_say_what_to_do(digits: Digits) -> None:
    train, _ = digits
    with pytest.raises(TrainingError, match="unknown optimizer 'adamax'; choose one of adamw"):
        lp.fit(mlp(), train, optimizer="adamax", quiet=True)
    with pytest.raises(TrainingError, match="unknown schedule 'warm'; choose one of cosine"):
        lp.fit(mlp(), train, schedule="warm", quiet=True)
    with pytest.raises(TrainingError, match="epochs must be >= 1, got 0"):
        lp.fit(mlp(), train, epochs=0, quiet=True)
    with pytest.raises(TrainingError, match=r"lr must be > 0, got -1; e\.g\. lr=1e-3"):
        lp.fit(mlp(), train, lr=-1, quiet=True)
    with pytest.raises(
        TrainingError, match=r"must be a lepton\.data\.Dataset or an \(x, y\) tuple"
    ):
        lp.fit(mlp(), [1, 2, 3], quiet=True)  # type: ignore[arg-type]
    unlabeled = lp.data.Dataset(train.features)
    with pytest.raises(LabelError, match=r"no targets.*load it with labels"):
        lp.fit(mlp(), unlabeled, quiet=True)


def test_regression_on_real_diabetes() -> None:
    train = lp.data.load("diabetes", split="train").standardize()
    test = lp.data.load("diabetes", split="test").standardize(train.stats)
    torch.manual_seed(0)
    assert train.targets is not None
    assert test.targets is not None
    scale = float(train.targets.std())
    train_s = lp.data.Dataset(train.features, train.targets / scale, name="diabetes")
    test_s = lp.data.Dataset(test.features, test.targets / scale, name="diabetes")
    model = lp.models.MLP(in_features=10, out_features=1, hidden=[32])
    result = lp.fit(model, train_s, test_s, epochs=30, lr=3e-3, quiet=True)
    assert set(result.metrics) == {"mse", "mae", "r2", "loss"}
    assert result.metrics["r2"] > 0.35  # linear models reach ~0.45 on this split
    assert result.metrics["loss"] == pytest.approx(result.metrics["mse"], rel=1e-4)


def test_progress_output_and_quiet(digits: Digits, capsys: pytest.CaptureFixture[str]) -> None:
    train, _ = digits
    lp.fit(mlp(), train, epochs=2, quiet=True)
    assert capsys.readouterr().out == ""
    lp.fit(mlp(), train, epochs=2)
    out = capsys.readouterr().out
    assert "epoch   1/2" in out
    assert "epoch   2/2" in out
    assert "accuracy" in out
