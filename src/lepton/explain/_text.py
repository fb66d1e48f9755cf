"""Token attributions of an ``lp.text.TextClassifier``: which words made it say what it said.

What is attributed is the target class's **log-odds against the other classes**: its
logit minus the mean logit of the others (for two classes, ``log p / (1 - p)``). It is a
linear function of the logits, so both encoders give the same kind of number:

* ``"minilm"``, ``"transformer"``: Captum ``LayerIntegratedGradients`` on the word-piece
  embedding; one value per word piece (``[CLS]`` ... ``[SEP]``); they sum to
  ``q(x) - q(baseline)`` up to ``convergence_delta``.
* ``"tfidf"``: the linear model's ``tf-idf x weight`` of each n-gram, a bigram's shared
  by its two words; one value per word of the vectorizer; they sum to ``q(x) - q("")``
  exactly.

The baseline of integrated gradients keeps ``[CLS]`` and ``[SEP]`` and puts ``[PAD]`` at
every other position (the model still sees the real ids' attention mask along the whole
path, as :func:`lepton.explain.explain` does for token ids); for TF-IDF it is the empty
text, whose log-odds is the intercepts'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lepton._fs import atomic_write_bytes
from lepton.errors import ExplainError
from lepton.explain._inputs import eval_mode
from lepton.explain._layers import token_integrated_gradients
from lepton.explain._methods import captum
from lepton.explain._plot import bars_png

if TYPE_CHECKING:
    from lepton.text import TextClassifier

__all__ = ["TextAttribution", "explain_text"]

_SPECIAL = ("[CLS]", "[SEP]")


@dataclass(frozen=True, eq=False)
class TextAttribution:
    """Per-token attributions of texts to a classifier's target classes.

    Attributes:
        texts: The texts explained.
        tokens: Each text's tokens, in order (word pieces, or the TF-IDF words).
        attributions: Each text's ``(T_i,)`` attributions, one per token (CPU).
        targets: The class explained for each text (default: the predicted one).
        classes: The classifier's class names.
        log_odds: ``(B,)`` the target's log-odds on each text (what is attributed).
        baseline_log_odds: ``(B,)`` the same at the baseline (empty text, or ``[PAD]`` s).
        method: ``"integrated_gradients"`` or ``"linear"`` (TF-IDF).
        convergence_delta: Integrated gradients: ``sum(attributions) - (log_odds -
            baseline_log_odds)`` per text; near zero when the path integral converged.
    """

    texts: list[str]
    tokens: list[list[str]]
    attributions: list[torch.Tensor]
    targets: list[int]
    classes: tuple[str, ...]
    log_odds: torch.Tensor
    baseline_log_odds: torch.Tensor
    method: str
    convergence_delta: torch.Tensor | None = None

    def _check(self, index: int) -> None:
        if not -len(self.texts) <= index < len(self.texts):
            raise ExplainError(f"index {index} is out of range for {len(self.texts)} texts")

    def pairs(self, index: int = 0) -> list[tuple[str, float]]:
        """``(token, attribution)`` of one text, in the text's order."""
        self._check(index)
        return [
            (t, float(a)) for t, a in zip(self.tokens[index], self.attributions[index], strict=True)
        ]

    def words(self, index: int = 0) -> list[tuple[str, float]]:
        """As :meth:`pairs`, word pieces (``##ing``) merged into their word (summed) and
        ``[CLS]``/``[SEP]`` left out."""
        merged: list[tuple[str, float]] = []
        for token, value in self.pairs(index):
            if token in _SPECIAL:
                continue
            if token.startswith("##") and merged:
                word, total = merged[-1]
                merged[-1] = (word + token[2:], total + value)
            else:
                merged.append((token, value))
        return merged

    def top_tokens(self, k: int = 10, *, index: int = 0) -> list[tuple[str, float]]:
        """The ``k`` words of one text with the largest ``|attribution|``, largest first."""
        if k < 1:
            raise ExplainError(f"k must be >= 1, got {k}")
        ranked = sorted(self.words(index), key=lambda p: -abs(p[1]))
        return ranked[:k]

    def to_dict(self, *, index: int = 0) -> dict[str, Any]:
        """One text's explanation as JSON-safe values."""
        self._check(index)
        delta = self.convergence_delta
        return {
            "method": self.method,
            "text": self.texts[index],
            "target": self.classes[self.targets[index]],
            "log_odds": float(self.log_odds[index]),
            "baseline_log_odds": float(self.baseline_log_odds[index]),
            "tokens": self.tokens[index],
            "attributions": self.attributions[index].tolist(),
            "convergence_delta": float(delta[index]) if delta is not None else None,
        }

    def plot(self, path: str | Path | None = None, *, index: int = 0) -> bytes:
        """One bar per word of one text, in order (PNG bytes; written to ``path`` too)."""
        words = self.words(index)
        title = f"{self.method}: log-odds of {self.classes[self.targets[index]]!r}"
        png = bars_png([w for w, _ in words], np.array([v for _, v in words]), title)
        if path is not None:
            atomic_write_bytes(Path(path), png)
        return png


def _log_odds(logits: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    """``(B,)`` each row's target logit minus the mean of its other logits."""
    k = logits.shape[-1]
    picked = logits[torch.arange(len(logits)), list(targets)]
    return (picked - (logits.sum(-1) - picked) / (k - 1)) if k > 1 else picked


def _targets(target: Any, count: int, classes: tuple[str, ...], guess: np.ndarray) -> list[int]:
    if target is None:
        return [int(i) for i in guess.argmax(axis=1)]
    wanted = [target] * count if isinstance(target, (int, str)) else list(target)
    if len(wanted) != count:
        raise ExplainError(f"target is one class or one per text ({count}), got {target!r}")
    out = []
    for t in wanted:
        if isinstance(t, str) and t in classes:
            out.append(classes.index(t))
        elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(classes):
            out.append(t)
        else:
            raise ExplainError(
                f"target {t!r} is not a class of this classifier; pass one of "
                f"{list(classes)} (or its index), or None for the predicted class"
            )
    return out


def explain_text(
    classifier: TextClassifier | str,
    texts: Sequence[str],
    target: int | str | Sequence[int | str] | None = None,
    *,
    n_steps: int = 64,
    internal_batch_size: int | None = None,
) -> TextAttribution:
    """Attribute a text classifier's decision to the tokens of each text.

    Args:
        classifier: A fitted ``lp.text.TextClassifier`` (any encoder) or a registry
            reference to one (``"reviews@production"``).
        texts: The texts to explain (a list of strings).
        target: The class to explain (a name or an index), one per text, or ``None`` for
            each text's predicted class.
        n_steps: Integration steps of integrated gradients (MiniLM encoders).
        internal_batch_size: Path points per forward pass (memory bound), default all.

    Returns:
        A :class:`TextAttribution` (``pairs()``, ``words()``, ``top_tokens(k)``,
        ``plot()``, ``to_dict()``).

    Raises:
        ExplainError: A target that is not a class, an unfitted classifier.
        MissingExtraError: Captum is not installed (MiniLM encoders).

    Example:
        >>> clf = lp.text.TextClassifier("tfidf").fit(train)  # doctest: +SKIP
        >>> lp.explain.explain_text(clf, ["a dull, lifeless mess"]).top_tokens(2)
        ...  # doctest: +SKIP
        [('dull', 1.91), ('mess', 1.12)]
    """
    if isinstance(classifier, str):
        from lepton.text import TextClassifier

        classifier = TextClassifier.from_registry(classifier)
    if not getattr(classifier, "classes", ()):
        raise ExplainError("the classifier is not fitted; call .fit(texts, labels) first")
    from lepton.text._errors import check_texts

    items = check_texts(texts)
    if not items:
        raise ExplainError("texts is empty; pass at least one text")
    if classifier.encoder == "tfidf":
        return _linear(classifier, items, target)
    return _integrated(classifier, items, target, n_steps, internal_batch_size)


def _linear(clf: TextClassifier, texts: list[str], target: Any) -> TextAttribution:
    vec, logistic = clf._vectorizer, clf._logistic
    coef = np.asarray(logistic.coef_, dtype=np.float64)  # (K or 1, F)
    bias = np.asarray(logistic.intercept_, dtype=np.float64)  # (K or 1,)
    if coef.shape[0] == 1:  # binary: the logits are (0, z)
        coef, bias = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    features = vec.transform(texts).tocsr()  # (B, F)
    names = vec.get_feature_names_out()
    logits = features @ coef.T + bias  # (B, K)
    targets = _targets(target, len(texts), clf.classes, np.asarray(logits))
    split = vec.build_tokenizer()
    prepare = vec.build_preprocessor()
    k = coef.shape[0]
    tokens, attributions = [], []
    for row, (text, t) in enumerate(zip(texts, targets, strict=True)):
        words = split(prepare(text))
        values = np.zeros(len(words))
        weight = coef[t] - (coef.sum(0) - coef[t]) / (k - 1)  # (F,) the log-odds' weights
        start, stop = features.indptr[row], features.indptr[row + 1]
        for j, x in zip(features.indices[start:stop], features.data[start:stop], strict=True):
            gram = str(names[j]).split(" ")
            n = len(gram)
            where = [i for i in range(len(words) - n + 1) if words[i : i + n] == gram]
            share = float(x * weight[j]) / (n * max(1, len(where)))
            for i in where:
                values[i : i + n] += share
        tokens.append(list(words))
        attributions.append(torch.from_numpy(values))
    lo = _log_odds(torch.as_tensor(np.asarray(logits)), targets)
    base = _log_odds(torch.as_tensor(bias).expand(len(texts), -1), targets)
    return TextAttribution(
        texts=texts, tokens=tokens, attributions=attributions, targets=targets,
        classes=tuple(clf.classes), log_odds=lo.float(), baseline_log_odds=base.float(),
        method="linear",
    )  # fmt: skip


class _LogOdds(nn.Module):
    """The MiniLM classifier's target log-odds, without cutting padding (so the baseline's
    and the inputs' embeddings keep one shape along the integration path)."""

    def __init__(self, model: Any, targets: list[int]) -> None:
        super().__init__()
        self.model, self.targets = model, targets

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pooled = F.normalize(_pooled(self.model, ids), dim=-1)  # (B, H)
        logits = self.model.head(pooled)  # (B, K)
        reps = len(ids) // len(self.targets)  # Captum stacks the path's points batch-wise
        return _log_odds(logits, self.targets * reps)[:, None]  # (B, 1)


def _integrated(
    clf: TextClassifier, texts: list[str], target: Any, n_steps: int, internal: int | None
) -> TextAttribution:
    from lepton.text._encoder import Tokenizer

    model, tokenizer = clf.model, clf._tokenizer
    if model is None or tokenizer is None:
        raise ExplainError("the classifier has no MiniLM model; fit it first")
    if internal is not None:
        raise ExplainError(
            "internal_batch_size is not supported for text yet: explain fewer texts per call"
        )
    encoded = tokenizer.encode(texts)
    ids = Tokenizer.pad(encoded)  # (B, L)
    pieces = [tokenizer.tokens(t)[: len(e)] for t, e in zip(texts, encoded, strict=True)]
    special = torch.zeros_like(ids, dtype=torch.bool)
    for row, words in enumerate(pieces):
        for col, w in enumerate(words):
            special[row, col] = w in _SPECIAL
    baseline = torch.where(special, ids, torch.zeros_like(ids))  # [CLS] [PAD] ... [SEP]
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(model):
        with torch.no_grad():
            logits = model.head(F.normalize(_pooled(model, ids), dim=-1))  # (B, K)
        targets = _targets(target, len(texts), clf.classes, logits.numpy())
        net = _LogOdds(model, targets)
        with torch.no_grad():
            outputs = net(ids)  # (B, 1)
        a, delta = token_integrated_gradients(
            captum(), net, net, ids, outputs, None, baseline,
            {"n_steps": n_steps, "layer": model.encoder.tokens},
        )  # fmt: skip
    gap_start = outputs[:, 0] - (a.sum(dim=1) - delta)  # the path's start: q(baseline)
    return TextAttribution(
        texts=texts,
        tokens=pieces,
        attributions=[a[i, : len(pieces[i])].detach().float().cpu() for i in range(len(texts))],
        targets=targets, classes=tuple(clf.classes), log_odds=outputs[:, 0].detach().float(),
        baseline_log_odds=gap_start.detach().float(), method="integrated_gradients",
        convergence_delta=delta.detach().float().cpu(),
    )  # fmt: skip


def _pooled(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """``(B, H)`` mean of the encoder's vectors over the real (non-``[PAD]``) tokens."""
    from lepton.text._encoder import mean_pool

    mask = ids != 0  # (B, L)
    return mean_pool(model.encoder(ids, mask), mask)  # type: ignore[no-any-return]
