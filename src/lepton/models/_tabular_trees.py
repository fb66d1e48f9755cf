"""``TreeEnsemble``: fitted gradient-boosted trees as tensors, evaluated in torch.

Every node of every tree lives in a few flat buffers (feature index, threshold, left and
right child, where a missing value goes, leaf value); a leaf points to itself. Evaluation
walks all trees of all rows at once, one level per step: after ``depth`` steps (the
deepest tree's depth) every walker stands on a leaf, and the leaf values of each output's
trees are summed onto the ensemble's baseline. Everything is float64, as in scikit-learn
and LightGBM, so a comparison ``x <= threshold`` goes the same way as theirs.

The buffers are the whole model: ``lp.register`` writes them as safetensors and the
registry rebuilds the module from its JSON config, without pickle.

Missing values follow the source library's rule, per node (``missing_rule``):

- ``0``: NaN goes to the node's default side (scikit-learn; LightGBM ``missing_type=NaN``);
- ``1``: NaN counts as 0.0, then is compared (LightGBM ``missing_type=None``);
- ``2``: NaN and (near) zero go to the default side (LightGBM ``missing_type=Zero``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lepton.errors import ShapeError, UnknownModelError
from lepton.models._checks import ArgChecker
from lepton.models._registry import register_model

__all__ = ["TreeEnsemble"]

Objective = Literal["regression", "binary", "multiclass"]
_F64 = torch.float64
# LightGBM's kZeroThreshold is the float 1e-35, compared after promotion to double.
_LGBM_ZERO = float(np.float32(1e-35))
_LGBM_IDENTITY = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}


@register_model("tree_ensemble")
class TreeEnsemble(nn.Module):
    """Additive tree ensemble: ``link(baseline + sum of each output's leaf values)``.

    Build it from a fitted model with :meth:`from_sklearn` (``HistGradientBoosting*``) or
    :meth:`from_lightgbm`; the constructor only sizes the buffers.

    Args:
        in_features: Values per input row.
        num_nodes: Nodes of all trees together.
        num_trees: Number of trees.
        depth: Edges from a root to the deepest leaf (0 when every tree is one leaf).
        objective: ``"regression"`` (outputs ``(B, 1)`` values), ``"binary"`` (``(B, 2)``
            logits ``[0, raw]``, so a softmax is the logistic link) or ``"multiclass"``
            (``(B, num_classes)`` logits).
        num_classes: Number of classes (2 for binary; None for regression).

    Example:
        >>> from sklearn.ensemble import HistGradientBoostingClassifier
        >>> clf = HistGradientBoostingClassifier(max_iter=20).fit(X, y)  # doctest: +SKIP
        >>> trees = TreeEnsemble.from_sklearn(clf)  # doctest: +SKIP
        >>> trees(torch.as_tensor(X)).softmax(1)  # == clf.predict_proba(X)  # doctest: +SKIP
    """

    feature: torch.Tensor
    threshold: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    default_left: torch.Tensor
    missing_rule: torch.Tensor
    value: torch.Tensor
    roots: torch.Tensor
    tree_output: torch.Tensor
    baseline: torch.Tensor

    def __init__(
        self,
        in_features: int,
        num_nodes: int,
        num_trees: int,
        depth: int,
        objective: Objective = "regression",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check = ArgChecker(
            "TreeEnsemble",
            "TreeEnsemble.from_sklearn(fitted_model) or TreeEnsemble(in_features=4, "
            "num_nodes=7, num_trees=1, depth=2, objective='binary', num_classes=2)",
        )
        self.in_features = check.int_("in_features", in_features, 1)
        check.int_("num_trees", num_trees, 1)
        check.int_("num_nodes", num_nodes, num_trees)
        self.depth = check.int_("depth", depth, 0)
        self.objective = check.choice(
            "objective", objective, ["regression", "binary", "multiclass"]
        )
        if self.objective == "regression":
            if num_classes is not None:
                raise check.fail("num_classes must be None for objective='regression'")
            outputs = 1
        elif self.objective == "binary":
            if num_classes != 2:
                raise check.fail(
                    f"num_classes must be 2 for objective='binary', got {num_classes!r}"
                )
            outputs = 1  # the log-odds of class 1
        else:
            outputs = check.int_("num_classes", num_classes, 3)
        self.num_classes = num_classes
        self.register_buffer("feature", torch.zeros(num_nodes, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(num_nodes, dtype=_F64))
        self.register_buffer("left", torch.arange(num_nodes, dtype=torch.int64))
        self.register_buffer("right", torch.arange(num_nodes, dtype=torch.int64))
        self.register_buffer("default_left", torch.zeros(num_nodes, dtype=torch.bool))
        self.register_buffer("missing_rule", torch.zeros(num_nodes, dtype=torch.uint8))
        self.register_buffer("value", torch.zeros(num_nodes, dtype=_F64))
        self.register_buffer("roots", torch.zeros(num_trees, dtype=torch.int64))
        self.register_buffer("tree_output", torch.zeros(num_trees, dtype=torch.int64))
        self.register_buffer("baseline", torch.zeros(outputs, dtype=_F64))

    # -- evaluation -----------------------------------------------------------------------
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The raw scores ``(B, outputs)`` before the link (log-odds, class scores, values)."""
        if x.ndim >= 2:
            x = x.reshape(x.shape[0], -1)  # (B, F)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(
                f"TreeEnsemble expects {self.in_features} values per row, got shape "
                f"{tuple(x.shape)}; pass rows shaped (B, {self.in_features})"
            )
        x = x.to(_F64)
        node = self.roots.expand(x.shape[0], -1)  # (B, T)
        for _ in range(self.depth):
            values = x.gather(1, self.feature[node])  # (B, T)
            rule = self.missing_rule[node]
            nan = values.isnan()
            values = torch.where(nan & (rule != 0), 0.0, values)  # LightGBM: NaN -> 0.0
            missing = ((rule == 0) & nan) | ((rule == 2) & (values.abs() <= _LGBM_ZERO))
            go_left = torch.where(missing, self.default_left[node], values <= self.threshold[node])
            node = torch.where(go_left, self.left[node], self.right[node])
        leaves = self.value[node]  # (B, T)
        scores = torch.zeros(x.shape[0], self.baseline.shape[0], dtype=_F64, device=x.device)
        return scores.index_add_(1, self.tree_output, leaves) + self.baseline  # (B, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Values ``(B, 1)`` for regression, logits ``(B, num_classes)`` for classification."""
        raw = self.raw(x)
        if self.objective == "binary":
            return torch.cat([torch.zeros_like(raw), raw], dim=1)  # softmax == logistic link
        return raw

    # -- building from fitted models ------------------------------------------------------
    @classmethod
    def from_sklearn(cls, estimator: Any) -> TreeEnsemble:
        """Convert a fitted ``HistGradientBoostingClassifier`` / ``Regressor``.

        Raises:
            UnknownModelError: Not a fitted HistGradientBoosting model, or one that uses
                categorical splits or a loss with a non-identity link (poisson, gamma).
        """
        predictors = getattr(estimator, "_predictors", None)
        if predictors is None or not hasattr(estimator, "_baseline_prediction"):
            raise UnknownModelError(
                f"TreeEnsemble.from_sklearn takes a fitted HistGradientBoostingClassifier or "
                f"HistGradientBoostingRegressor, got {type(estimator).__name__}; fit it first"
            )
        if hasattr(estimator, "classes_"):
            k = len(estimator.classes_)
            objective: Objective = "binary" if k == 2 else "multiclass"
            num_classes: int | None = k
        else:
            loss = getattr(estimator, "loss", "squared_error")
            if loss not in ("squared_error", "absolute_error", "quantile"):
                raise UnknownModelError(
                    f"TreeEnsemble reproduces identity-link regressors only, not loss={loss!r}; "
                    "use loss='squared_error'"
                )
            objective, num_classes = "regression", None
        trees: list[tuple[int, dict[str, np.ndarray]]] = []
        for iteration in predictors:
            for output, predictor in enumerate(iteration):
                nodes = predictor.nodes
                if np.any(nodes["is_categorical"]):
                    raise UnknownModelError(
                        "TreeEnsemble cannot reproduce categorical splits; fit the model with "
                        "categorical_features=None on numeric (e.g. one-hot) columns"
                    )
                leaf = nodes["is_leaf"].astype(bool)
                own = np.arange(len(nodes))
                trees.append(
                    (
                        output,
                        {
                            "feature": np.where(leaf, 0, nodes["feature_idx"]),
                            "threshold": np.where(leaf, 0.0, nodes["num_threshold"]),
                            "left": np.where(leaf, own, nodes["left"]),
                            "right": np.where(leaf, own, nodes["right"]),
                            "default_left": nodes["missing_go_to_left"].astype(bool) & ~leaf,
                            "missing_rule": np.zeros(len(nodes), dtype=np.uint8),
                            "value": np.where(leaf, nodes["value"], 0.0),
                        },
                    )
                )
        baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(-1)
        return cls._assemble(int(estimator.n_features_in_), trees, baseline, objective, num_classes)

    @classmethod
    def from_lightgbm(cls, model: Any) -> TreeEnsemble:
        """Convert a fitted LightGBM ``LGBMClassifier`` / ``LGBMRegressor`` / ``Booster``.

        The trees are read from LightGBM's text model (``model_to_string``), which keeps
        every threshold and leaf value at full precision; like LightGBM's ``predict``, it
        holds the best iteration's trees when early stopping found one.

        Raises:
            UnknownModelError: Not a fitted LightGBM model, or one with categorical
                splits, linear trees, random-forest averaging or a non-supported objective.
        """
        booster = getattr(model, "booster_", model)
        if not hasattr(booster, "model_to_string"):
            raise UnknownModelError(
                f"TreeEnsemble.from_lightgbm takes a fitted LightGBM model, got "
                f"{type(model).__name__}; fit it first"
            )
        header, blocks = _parse_lightgbm_text(booster.model_to_string())
        objective_text = header.get("objective", "regression").split()
        name = objective_text[0]
        per_iteration = int(header.get("num_tree_per_iteration", "1"))
        if "average_output" in header:
            raise UnknownModelError("TreeEnsemble cannot reproduce LightGBM boosting='rf'")
        if name == "binary":
            if any(
                part.startswith("sigmoid:") and float(part[8:]) != 1.0 for part in objective_text
            ):
                raise UnknownModelError(
                    "TreeEnsemble reproduces LightGBM binary with sigmoid=1 only"
                )
            objective: Objective = "binary"
            num_classes: int | None = 2
        elif name == "multiclass":
            objective, num_classes = "multiclass", per_iteration
        elif name in _LGBM_IDENTITY:
            objective, num_classes = "regression", None
        else:
            raise UnknownModelError(
                f"TreeEnsemble cannot reproduce LightGBM objective {name!r}; use 'binary', "
                f"'multiclass' or an identity-link regression objective"
            )
        trees = [(i % per_iteration, _lightgbm_tree(block)) for i, block in enumerate(blocks)]
        in_features = int(header["max_feature_idx"]) + 1
        baseline = np.zeros(1 if objective != "multiclass" else per_iteration)
        return cls._assemble(in_features, trees, baseline, objective, num_classes)

    @classmethod
    def _assemble(
        cls,
        in_features: int,
        trees: list[tuple[int, dict[str, np.ndarray]]],
        baseline: np.ndarray,
        objective: Objective,
        num_classes: int | None,
    ) -> TreeEnsemble:
        """Concatenate per-tree node arrays (indices local to each tree) into one model."""
        offsets = np.cumsum([0] + [len(t["value"]) for _, t in trees])
        joined = {
            key: np.concatenate(
                [
                    t[key] + (offset if key in ("left", "right") else 0)
                    for (_, t), offset in zip(trees, offsets[:-1], strict=True)
                ]
            )
            for key in (
                "feature",
                "threshold",
                "left",
                "right",
                "default_left",
                "missing_rule",
                "value",
            )
        }
        depth = max(_tree_depth(t["left"], t["right"]) for _, t in trees)
        model = cls(
            in_features=in_features,
            num_nodes=int(offsets[-1]),
            num_trees=len(trees),
            depth=depth,
            objective=objective,
            num_classes=num_classes,
        )
        with torch.no_grad():
            for key, array in joined.items():
                buffer = getattr(model, key)
                buffer.copy_(torch.as_tensor(np.ascontiguousarray(array)).to(buffer.dtype))
            model.roots.copy_(torch.as_tensor(offsets[:-1], dtype=torch.int64))
            model.tree_output.copy_(torch.as_tensor([o for o, _ in trees], dtype=torch.int64))
            model.baseline.copy_(torch.as_tensor(baseline, dtype=_F64))
        return model.eval()


def _tree_depth(left: np.ndarray, right: np.ndarray) -> int:
    """Longest root-to-leaf path of one tree whose leaves point to themselves (root 0)."""
    depth, frontier = 0, np.array([0])
    while True:
        inner = frontier[left[frontier] != frontier]
        if len(inner) == 0:
            return depth
        frontier = np.concatenate([left[inner], right[inner]])
        depth += 1


def _parse_lightgbm_text(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Split LightGBM's text model into its header and one ``key=value`` dict per tree."""
    header: dict[str, str] = {}
    blocks: list[dict[str, str]] = []
    current = header
    for line in text.splitlines():
        if line.startswith("Tree="):
            current = {}
            blocks.append(current)
        elif line.startswith("end of trees"):
            break
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
        elif line.strip() == "average_output":
            header["average_output"] = ""
    return header, blocks


def _lightgbm_tree(block: dict[str, str]) -> dict[str, np.ndarray]:
    """One LightGBM tree as node arrays: internal nodes first, then the leaves."""
    leaves = np.array(block["leaf_value"].split(), dtype=np.float64)
    n_leaves = len(leaves)
    if n_leaves == 1:  # a stump with no split
        return {"feature": np.zeros(1, np.int64), "threshold": np.zeros(1),
                "left": np.zeros(1, np.int64), "right": np.zeros(1, np.int64),
                "default_left": np.zeros(1, bool), "missing_rule": np.zeros(1, np.uint8),
                "value": leaves}  # fmt: skip
    if block.get("is_linear", "0") != "0" or int(block.get("num_cat", "0")) > 0:
        raise UnknownModelError(
            "TreeEnsemble cannot reproduce LightGBM linear trees or categorical splits; fit "
            "with linear_tree=False on numeric columns"
        )
    inner = n_leaves - 1

    def ints(key: str) -> np.ndarray:
        return np.array(block[key].split(), dtype=np.int64)

    def children(key: str) -> np.ndarray:  # a negative child ~j is leaf j
        raw = ints(key)
        return np.where(raw >= 0, raw, inner + ~raw)

    decision = ints("decision_type")
    if np.any(decision & 1):
        raise UnknownModelError(
            "TreeEnsemble cannot reproduce LightGBM categorical splits; fit on numeric columns"
        )
    lightgbm_missing = (decision >> 2) & 3  # 0 None, 1 Zero, 2 NaN
    rule = np.select([lightgbm_missing == 2, lightgbm_missing == 1], [0, 2], default=1)
    own_leaves = np.arange(inner, inner + n_leaves)
    return {
        "feature": np.concatenate([ints("split_feature"), np.zeros(n_leaves, np.int64)]),
        "threshold": np.concatenate(
            [np.array(block["threshold"].split(), dtype=np.float64), np.zeros(n_leaves)]
        ),
        "left": np.concatenate([children("left_child"), own_leaves]),
        "right": np.concatenate([children("right_child"), own_leaves]),
        "default_left": np.concatenate([(decision & 2) > 0, np.zeros(n_leaves, bool)]),
        "missing_rule": np.concatenate([rule, np.zeros(n_leaves)]).astype(np.uint8),
        "value": np.concatenate([np.zeros(inner), leaves]),
    }
