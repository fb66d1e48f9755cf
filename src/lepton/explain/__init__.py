"""Explanations: which pixels, features or tokens drove a model's outputs (on Captum).

``explain`` attributes a batch of inputs by integrated gradients, saliency, occlusion,
Grad-CAM, Kernel SHAP or feature permutation, and returns an :class:`Attribution` with the
inputs' shape, a PNG (``plot()``) and, for rows and tokens, ``top_features(k)``.
``permutation_importance`` measures each feature's global importance on a dataset, as a
model card shows it. ``explain_text`` attributes an ``lp.text.TextClassifier``'s decision
to the tokens of raw texts (:class:`TextAttribution`). Captum is the ``explain`` extra:
``pip install 'lepton[explain]'``.

Example:
    >>> import lepton as lp
    >>> from lepton.explain import explain
    >>> test = lp.data.load("mnist", split="test")  # doctest: +SKIP
    >>> result = explain("mnist-convnet@production", test.subset(range(8)),
    ...                  method="gradcam")  # doctest: +SKIP
    >>> result.attributions.shape  # doctest: +SKIP
    torch.Size([8, 1, 28, 28])
    >>> png = result.plot("heatmap.png")  # doctest: +SKIP
"""

from lepton._callable import make_callable as _make_callable
from lepton.explain._attribution import Attribution
from lepton.explain._explain import explain
from lepton.explain._importance import FeatureImportance, permutation_importance
from lepton.explain._methods import METHODS
from lepton.explain._text import TextAttribution, explain_text

__all__ = [
    "METHODS",
    "Attribution",
    "FeatureImportance",
    "TextAttribution",
    "explain",
    "explain_text",
    "permutation_importance",
]

_make_callable(__name__, explain)  # lp.explain(...) is explain(...)
