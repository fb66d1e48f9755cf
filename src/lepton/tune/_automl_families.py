"""The model families ``lp.automl`` searches (their contract: ``_automl_family``).

=========  ===========================================  ==================================
family     model                                        head
=========  ===========================================  ==================================
linear     scikit-learn ``LogisticRegression`` or      ``MLP(hidden=[])``: one Linear
           Lepton's ``LinearRegression`` (ridge)
mlp        the zoo ``MLP`` trained by ``lp.fit``          the same ``MLP``
hgb        scikit-learn ``HistGradientBoosting*``       ``TreeEnsemble``
lightgbm   LightGBM ``LGBM*`` (when installed)          ``TreeEnsemble``
=========  ===========================================  ==================================

Logistic regression is scikit-learn's (L-BFGS in scipy): on these sizes it fits 5x
faster than Lepton's torch L-BFGS ``LogisticRegression`` (0.06 s vs 0.3 s on
breast-cancer), which buys more trials; ridge regression is Lepton's closed form.

The MLP goes through ``lp.fit`` (no validation split: its epochs are a searched
hyper-parameter, scored by the outer cross-validation), so a deadline callback can stop
it between epochs; the boosted trees stop between iterations (LightGBM's callback,
warm-started chunks of ``HistGradientBoosting``). Only the linear fits cannot be
stopped, and they take milliseconds to a second.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from lepton.models import MLP, LinearRegression, TreeEnsemble, model_spec
from lepton.train import Callback, TrainState, fit
from lepton.tune._automl_family import Context, Family, Head, Matrix

__all__ = ["FAMILIES", "available_families"]


def _linear_head(weight: torch.Tensor, bias: torch.Tensor, width: int, ctx: Context) -> Head:
    """An ``MLP(hidden=[])`` holding ``weight`` ``(k, width)``; binary scores become [0, s]."""
    if ctx.classify and weight.shape[0] == 1:  # log-odds of class 1: logits [0, s]
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    outputs = {"num_classes": ctx.num_classes} if ctx.classify else {"out_features": 1}
    module = MLP(in_features=width, hidden=[], **outputs)  # type: ignore[arg-type]
    state = {"layers.0.weight": weight.clone(), "layers.0.bias": bias.clone()}
    module.load_state_dict(state)
    return Head(model_spec(module), state)


class Linear(Family):
    name = "linear"

    def suggest(self, trial: Any, rows: int, ctx: Context) -> dict[str, Any]:
        if ctx.classify:  # L-BFGS steps: stopping early regularizes, and bounds the time
            return {"C": trial.suggest_float("C", 1e-3, 1e3, log=True),
                    "max_iter": trial.suggest_int("max_iter", 20, 300, log=True)}  # fmt: skip
        return {"alpha": trial.suggest_float("alpha", 1e-4, 1e4, log=True)}

    def defaults(self, rows: int, ctx: Context) -> dict[str, Any]:
        return {"C": 1.0, "max_iter": 100} if ctx.classify else {"alpha": 1.0}

    def complexity(self, params: dict[str, Any]) -> float:
        if "C" in params:  # weaker regularization, more steps: more fitting
            return float(params["C"] * params["max_iter"])
        return 1.0 / float(params["alpha"])

    def probe(self, params: dict[str, Any], size: int) -> dict[str, Any] | None:
        return {**params, "max_iter": 4 * size} if "max_iter" in params else None

    def shrink(self, params: dict[str, Any], share: float) -> dict[str, Any]:
        if "max_iter" not in params:
            return params
        return {**params, "max_iter": max(20, int(params["max_iter"] * share))}

    def work(self, params: dict[str, Any], rows: int, width: int, ctx: Context) -> float:
        steps = params.get("max_iter", 1)  # ridge is one solve
        return float(rows * width * (ctx.num_classes or 1) * steps)

    def fit(
        self, params: dict[str, Any], z: Matrix, y: npt.NDArray[Any], ctx: Context, deadline: float
    ) -> tuple[Any, bool]:
        if not ctx.classify:
            return LinearRegression(alpha=params["alpha"]).fit(z, y), False
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():  # stopping before convergence is a fine fit here
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=params["C"], max_iter=params["max_iter"])
            return model.fit(z, y), False

    def predict(self, model: Any, z: Matrix, ctx: Context) -> Matrix:
        if ctx.classify:
            return model.predict_proba(z)  # type: ignore[no-any-return]
        return model.predict(z)  # type: ignore[no-any-return]

    def head(self, model: Any, width: int, ctx: Context) -> Head:
        if ctx.classify:  # scikit-learn's coef_ (k, d), intercept_ (k,)
            weight = torch.as_tensor(model.coef_, dtype=torch.float64)
            bias = torch.as_tensor(model.intercept_, dtype=torch.float64)
        else:
            layer = model.module
            weight, bias = layer.weight.detach(), layer.bias.detach()
        return _linear_head(weight, bias, width, ctx)


class _Deadline(Callback):
    """Ends ``lp.fit`` after the epoch during which ``deadline`` passed."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.hit = False

    def on_epoch_end(self, state: TrainState) -> None:
        if time.perf_counter() > self.deadline and state.epoch < state.epochs:
            state.should_stop = self.hit = True


@dataclass
class _Net:
    """A trained MLP and the (mean, std) its regression target was standardized with."""

    module: MLP
    target: tuple[float, float]


class NeuralNet(Family):
    name = "mlp"
    IMPORT_S = 8.0  # torch's compiler stack plus a first trial, on a busy machine

    def can_start(self, seconds: float) -> bool:
        # torch imports torch._dynamo (2-4 s here, once per process, and it cannot be
        # interrupted) when the first optimizer is built: start only if that leaves time
        return "torch._dynamo" in sys.modules or seconds > self.IMPORT_S

    def suggest(self, trial: Any, rows: int, ctx: Context) -> dict[str, Any]:
        return {
            "layers": trial.suggest_int("layers", 1, 3),
            "width": trial.suggest_int("width", 16, 512, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
            "epochs": trial.suggest_int("epochs", 5, 200, log=True),
            "activation": trial.suggest_categorical("activation", ["relu", "gelu"]),
        }

    def complexity(self, params: dict[str, Any]) -> float:
        weights = params["width"] * params["width"] * params["layers"]
        return float(weights * params["epochs"] / params["batch_size"])  # weights x steps

    def probe(self, params: dict[str, Any], size: int) -> dict[str, Any] | None:
        return {**params, "epochs": size}

    def shrink(self, params: dict[str, Any], share: float) -> dict[str, Any]:
        return {**params, "epochs": max(5, int(params["epochs"] * share))}

    def defaults(self, rows: int, ctx: Context) -> dict[str, Any]:
        batch = 64 if rows < 5000 else 256
        steps_per_epoch = math.ceil(rows / batch)
        return {"layers": 2, "width": 128, "dropout": 0.1, "lr": 3e-3, "weight_decay": 1e-2,
                "batch_size": batch, "epochs": int(np.clip(400 // steps_per_epoch, 5, 60)),
                "activation": "relu"}  # fmt: skip

    def work(self, params: dict[str, Any], rows: int, width: int, ctx: Context) -> float:
        w, layers = params["width"], params["layers"]
        weights = width * w + (layers - 1) * w * w + w * (ctx.num_classes or 1)
        steps = math.ceil(rows / params["batch_size"])
        # a step costs a fixed overhead plus its arithmetic; 2e4 weight-rows ~ the overhead
        return float(params["epochs"] * steps * (2e4 + params["batch_size"] * weights))

    def fit(
        self, params: dict[str, Any], z: Matrix, y: npt.NDArray[Any], ctx: Context, deadline: float
    ) -> tuple[Any, bool]:
        hidden = [params["width"]] * params["layers"]
        outputs = {"num_classes": ctx.num_classes} if ctx.classify else {"out_features": 1}
        torch.manual_seed(ctx.seed)  # the initial weights
        model = MLP(in_features=z.shape[1], hidden=hidden, dropout=params["dropout"],
                    activation=params["activation"], **outputs)  # type: ignore[arg-type]  # fmt: skip
        x = torch.as_tensor(z, dtype=torch.float32)
        if ctx.classify:
            targets, scale = torch.as_tensor(y, dtype=torch.int64), (0.0, 1.0)
        else:  # a standardized target keeps the learning rate meaningful across tasks
            scale = (float(np.mean(y)), float(np.std(y)) or 1.0)
            targets = torch.as_tensor((y - scale[0]) / scale[1], dtype=torch.float32)
        stop = _Deadline(deadline)
        fit(model, (x, targets), epochs=params["epochs"], batch_size=params["batch_size"],
            optimizer="adamw", lr=params["lr"], weight_decay=params["weight_decay"],
            schedule="onecycle", seed=ctx.seed, callbacks=[stop], num_threads=ctx.n_jobs,
            quiet=True, device="cpu")  # fmt: skip
        return _Net(model.eval(), scale), stop.hit

    def predict(self, model: Any, z: Matrix, ctx: Context) -> Matrix:
        with torch.no_grad():
            out = model.module(torch.as_tensor(z, dtype=torch.float32)).double()
        if ctx.classify:
            return out.softmax(1).numpy()  # type: ignore[no-any-return]
        mean, scale = model.target
        return out[:, 0].numpy() * scale + mean  # type: ignore[no-any-return]

    def head(self, model: Any, width: int, ctx: Context) -> Head:
        state = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
        return Head(model_spec(model.module), state, model.target)


def _tree_head(ensemble: nn.Module) -> Head:
    return Head(model_spec(ensemble), {k: v.clone() for k, v in ensemble.state_dict().items()})


class GradientBoosting(Family):
    name = "hgb"
    _CHUNKS = 4  # warm-started pieces, so a deadline can end a long fit

    def suggest(self, trial: Any, rows: int, ctx: Context) -> dict[str, Any]:
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_iter": trial.suggest_int("max_iter", 20, 500, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 4, 128, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 2, 100, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-6, 10.0, log=True),
            "max_features": trial.suggest_float("max_features", 0.3, 1.0),
        }

    def complexity(self, params: dict[str, Any]) -> float:
        return float(params["max_iter"] * params["max_leaf_nodes"] * params["learning_rate"])

    def probe(self, params: dict[str, Any], size: int) -> dict[str, Any] | None:
        return {**params, "max_iter": 3 * size}

    def shrink(self, params: dict[str, Any], share: float) -> dict[str, Any]:
        return {**params, "max_iter": max(20, int(params["max_iter"] * share))}

    def defaults(self, rows: int, ctx: Context) -> dict[str, Any]:
        return {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31,
                "min_samples_leaf": 20, "l2_regularization": 1e-6, "max_features": 1.0}  # fmt: skip

    def work(self, params: dict[str, Any], rows: int, width: int, ctx: Context) -> float:
        return float(rows * width * params["max_features"] * params["max_iter"] * ctx.outputs)

    def fit(
        self, params: dict[str, Any], z: Matrix, y: npt.NDArray[Any], ctx: Context, deadline: float
    ) -> tuple[Any, bool]:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        kind = HistGradientBoostingClassifier if ctx.classify else HistGradientBoostingRegressor
        target = params["max_iter"]
        chunk = max(10, math.ceil(target / self._CHUNKS))
        model = kind(**{**params, "max_iter": min(chunk, target)}, warm_start=True,
                     random_state=ctx.seed)  # fmt: skip
        model.fit(z, y)
        while model.n_iter_ >= model.max_iter < target:  # n_iter_ < max_iter: it early-stopped
            if time.perf_counter() > deadline:
                return model, True
            model.set_params(max_iter=min(model.max_iter + chunk, target))
            model.fit(z, y)
        return model, False

    def predict(self, model: Any, z: Matrix, ctx: Context) -> Matrix:
        if ctx.classify:
            return model.predict_proba(z)  # type: ignore[no-any-return]
        return model.predict(z)  # type: ignore[no-any-return]

    def head(self, model: Any, width: int, ctx: Context) -> Head:
        return _tree_head(TreeEnsemble.from_sklearn(model))


class LightGBM(Family):
    name = "lightgbm"

    def suggest(self, trial: Any, rows: int, ctx: Context) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 20, 1000, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 256, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 2, 100, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-6, 10.0, log=True),
            "reg_alpha": trial.suggest_float("reg_alpha", 1e-6, 10.0, log=True),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        }

    def complexity(self, params: dict[str, Any]) -> float:
        leaves = params["n_estimators"] * params["num_leaves"]
        return float(leaves * params["learning_rate"])

    def probe(self, params: dict[str, Any], size: int) -> dict[str, Any] | None:
        return {**params, "n_estimators": 3 * size}

    def shrink(self, params: dict[str, Any], share: float) -> dict[str, Any]:
        return {**params, "n_estimators": max(20, int(params["n_estimators"] * share))}

    def defaults(self, rows: int, ctx: Context) -> dict[str, Any]:
        return {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 31,
                "min_child_samples": 20, "reg_lambda": 1e-6, "reg_alpha": 1e-6,
                "colsample_bytree": 1.0, "subsample": 1.0}  # fmt: skip

    def work(self, params: dict[str, Any], rows: int, width: int, ctx: Context) -> float:
        columns = width * params["colsample_bytree"]
        return float(rows * params["subsample"] * columns * params["n_estimators"] * ctx.outputs)

    def fit(
        self, params: dict[str, Any], z: Matrix, y: npt.NDArray[Any], ctx: Context, deadline: float
    ) -> tuple[Any, bool]:
        import lightgbm

        hit = []

        def stop_at_deadline(env: Any) -> None:
            if time.perf_counter() > deadline:
                hit.append(env.iteration)
                raise lightgbm.callback.EarlyStopException(env.iteration, [])

        kind = lightgbm.LGBMClassifier if ctx.classify else lightgbm.LGBMRegressor
        model = kind(**params, subsample_freq=1, random_state=ctx.seed, n_jobs=ctx.n_jobs,
                     verbose=-1)  # fmt: skip
        model.fit(z, y, callbacks=[stop_at_deadline])
        return model, bool(hit)

    def predict(self, model: Any, z: Matrix, ctx: Context) -> Matrix:
        if ctx.classify:
            return model.predict_proba(z)  # type: ignore[no-any-return]
        return model.predict(z)  # type: ignore[no-any-return]

    def head(self, model: Any, width: int, ctx: Context) -> Head:
        return _tree_head(TreeEnsemble.from_lightgbm(model))


FAMILIES: dict[str, Family] = {
    f.name: f for f in (Linear(), GradientBoosting(), LightGBM(), NeuralNet())
}


def available_families(names: list[str] | None) -> tuple[list[Family], list[str]]:
    """The families to search (all by default) and notes on those left out."""
    import importlib.util

    chosen = list(FAMILIES) if names is None else names
    families, notes = [], []
    for name in chosen:
        if name == "lightgbm" and importlib.util.find_spec("lightgbm") is None:
            notes.append("lightgbm skipped: not installed (pip install 'lepton[automl]')")
            continue
        families.append(FAMILIES[name])
    return families, notes
