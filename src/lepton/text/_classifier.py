"""``TextClassifier``: one estimator, three encoders.

| encoder | features | head | trained by |
|---|---|---|---|
| ``"tfidf"`` | word 1-2-gram TF-IDF (sublinear tf) | logistic regression | scikit-learn |
| ``"minilm"`` | frozen all-MiniLM-L6-v2 sentence vectors | logistic regression | scikit-learn |
| ``"transformer"`` | all-MiniLM-L6-v2, fine-tuned end to end | linear | ``lp.fit`` |

The transformer starts from the ``"minilm"`` solution (the head is first fitted on frozen
vectors, then everything trains: linear probing before fine-tuning keeps the pretrained
features from being wrecked by a random head's first gradients), with AdamW, layer-wise
learning-rate decay (each layer below the head learns ``layer_decay`` times slower than
the one above) and a linear warm-up then decay, applied by a callback of ``lp.fit``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lepton.errors import NotFittedError, TextError
from lepton.text._encoder import MINILM_FILES, Tokenizer, minilm_dir
from lepton.text._errors import check_texts
from lepton.text._files import read_folder, write_folder
from lepton.text._models import MiniLMClassifier
from lepton.train import Callback, TrainState

__all__ = ["ENCODERS", "TextClassifier"]

Encoder = Literal["tfidf", "minilm", "transformer"]
ENCODERS = ("tfidf", "minilm", "transformer")
_FORMAT = "lepton.text.TextClassifier/1"


class LayerwiseLR(Callback):
    """Per-layer learning rates with warm-up, for ``lp.fit`` on a :class:`MiniLMClassifier`.

    At the start it regroups the optimizer's parameters: the head gets ``lr``, the top
    encoder layer ``lr * decay``, ..., the embeddings ``lr * decay ** (layers + 1)``;
    biases and LayerNorms get no weight decay. After every step each group's rate is its
    base rate times a linear warm-up (over ``warmup`` of the steps) then a linear decay to 0.
    Not for resumed runs (the regrouping happens after a checkpoint would be restored).
    """

    def __init__(
        self, model: MiniLMClassifier, *, lr: float, decay: float, warmup: float, total: int
    ) -> None:
        self.model, self.lr, self.decay = model, lr, decay
        self.total = max(1, total)
        self.warmup = max(1, round(warmup * self.total))

    def factor(self, step: int) -> float:
        """The schedule's multiplier before optimizer step ``step + 1``."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))

    def _depths(self) -> list[tuple[int, list[tuple[str, nn.Parameter]]]]:
        enc = self.model.encoder
        n = len(enc.layers)
        parts: list[tuple[int, list[tuple[str, nn.Parameter]]]] = [
            (0, list(self.model.head.named_parameters()))
        ]
        for i, layer in enumerate(enc.layers):
            parts.append((n - i, list(layer.named_parameters())))
        embeddings = [(k, p) for k, p in enc.named_parameters() if not k.startswith("layers.")]
        parts.append((n + 1, embeddings))
        return parts

    def on_fit_start(self, state: TrainState) -> None:
        opt = state.optimizer
        wd = float(opt.param_groups[0].get("weight_decay", 0.01))
        opt.param_groups.clear()
        for depth, named in self._depths():
            for no_decay in (False, True):
                params = [p for k, p in named if (p.ndim == 1) == no_decay and p.requires_grad]
                if params:
                    opt.add_param_group(
                        {"params": params, "base_lr": self.lr * self.decay**depth,
                         "weight_decay": 0.0 if no_decay else wd}
                    )  # fmt: skip
        self._apply(opt, state.step)

    def on_batch_end(self, state: TrainState) -> None:
        self._apply(state.optimizer, state.step)

    def _apply(self, opt: torch.optim.Optimizer, step: int) -> None:
        f = self.factor(step)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * f


def _labels(texts: Any, labels: Any) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Texts, int labels and class names from a ``TextDataset`` or texts + labels."""
    if labels is None and hasattr(texts, "labels") and hasattr(texts, "classes"):
        if texts.labels is None:
            raise TextError(f"{texts.name!r} has no labels; a classifier needs labelled texts")
        return list(texts.texts), np.asarray(texts.labels), tuple(texts.classes)
    items = check_texts(texts)
    if labels is None:
        raise TextError("fit needs labels: fit(texts, labels) or fit(text_dataset)")
    names = [str(v) for v in labels]
    if len(names) != len(items):
        raise TextError(f"got {len(items)} texts but {len(names)} labels; pass one label each")
    classes, codes = np.unique(np.asarray(names), return_inverse=True)
    return items, codes.astype(np.int64), tuple(str(c) for c in classes)


class TextClassifier:
    """Classify texts; scikit-learn's interface (``fit``, ``predict``, ``predict_proba``,
    ``score``) on raw strings.

    Args:
        encoder: ``"tfidf"``, ``"minilm"`` (frozen) or ``"transformer"`` (fine-tuned).
        C: Inverse L2 strength of the logistic regressions (tfidf, minilm, and the
            transformer's starting head).
        epochs: Fine-tuning epochs (transformer).
        batch_size: Fine-tuning batch size; also the inference batch size.
        lr: Peak learning rate of the head (transformer); layers below get less.
        layer_decay: Learning-rate ratio between a layer and the one above it.
        warmup: Fraction of the fine-tuning steps spent warming the rate up.
        max_length: Tokens kept per text when fine-tuning (inference keeps 256).
        seed: Seeds the fine-tuning.
        verbose: Show ``lp.fit``'s progress while fine-tuning.
        num_threads: Torch CPU threads while fitting and predicting (default: unchanged).

    Example:
        >>> train = lp.data.load("rotten-tomatoes")  # doctest: +SKIP
        >>> clf = lp.text.TextClassifier("tfidf").fit(train)  # doctest: +SKIP
        >>> clf.predict(["a triumph", "a dull mess"])  # doctest: +SKIP
        ['fresh', 'rotten']
    """

    def __init__(
        self,
        encoder: Encoder = "tfidf",
        *,
        C: float = 1.0,
        epochs: int = 2,
        batch_size: int = 32,
        lr: float = 1e-4,
        layer_decay: float = 0.8,
        warmup: float = 0.1,
        max_length: int = 128,
        seed: int = 0,
        verbose: bool = False,
        num_threads: int | None = None,
    ) -> None:
        if encoder not in ENCODERS:
            raise TextError(
                f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}, e.g. "
                f"TextClassifier(encoder='tfidf')"
            )
        for name, value in (("C", C), ("lr", lr), ("layer_decay", layer_decay)):
            if not value > 0:
                raise TextError(f"{name} must be positive, got {value}")
        if epochs < 1 or batch_size < 1 or max_length < 8:
            raise TextError(
                f"epochs and batch_size must be >= 1 and max_length >= 8 (got {epochs}, "
                f"{batch_size}, {max_length})"
            )
        if not 0 <= warmup < 1:
            raise TextError(f"warmup is a fraction of the steps in [0, 1), got {warmup}")
        self.encoder: Encoder = encoder
        self.options: dict[str, Any] = {
            "C": C, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "layer_decay": layer_decay, "warmup": warmup, "max_length": max_length, "seed": seed,
        }  # fmt: skip
        self.verbose, self.num_threads = verbose, num_threads
        self.classes: tuple[str, ...] = ()
        self.fit_seconds: float | None = None
        self.fit_result: Any = None
        self._vectorizer: Any = None
        self._logistic: Any = None
        self.model: MiniLMClassifier | None = None
        self._tokenizer: Tokenizer | None = None
        self.trained_on: Any = None

    def __repr__(self) -> str:
        state = f"classes={list(self.classes)}" if self.classes else "not fitted"
        return f"TextClassifier(encoder={self.encoder!r}, {state})"

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, texts: Any, labels: Sequence[Any] | None = None) -> TextClassifier:
        """Fit on ``texts`` (strings) and ``labels`` (class names or ints), or on a
        labelled :class:`~lepton.data.TextDataset`. Returns ``self``."""
        items, y, classes = _labels(texts, labels)
        if len(classes) < 2:
            raise TextError(f"fit needs at least two classes, got {list(classes)}")
        started = time.perf_counter()
        self.classes = classes
        from lepton.text._stored import TextSchema  # the registry's record of the data

        self.trained_on = TextSchema.of(texts if labels is None else None, items, labels=y)
        if self.encoder == "tfidf":
            self._fit_tfidf(items, y)
        else:
            self._fit_minilm(items, y)
            if self.encoder == "transformer":
                self._fine_tune(items, y)
        self.fit_seconds = time.perf_counter() - started
        return self

    def _new_logistic(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.options["C"], max_iter=2000)

    def _fit_tfidf(self, items: list[str], y: np.ndarray) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2 if len(items) >= 50 else 1, sublinear_tf=True
        )
        features = self._vectorizer.fit_transform(items)
        self._logistic = self._new_logistic().fit(features, y)

    def _fit_minilm(self, items: list[str], y: np.ndarray) -> None:
        from lepton.text._embed import default_embedder

        embedder = default_embedder()
        vectors = embedder(items, batch_size=self.options["batch_size"],
                           progress=self.verbose, num_threads=self.num_threads)  # fmt: skip
        logistic = self._new_logistic().fit(vectors.numpy(), y)
        model = MiniLMClassifier(num_classes=len(self.classes), pretrained=False)
        model.encoder.load_state_dict(embedder.encoder.state_dict())
        coef = torch.as_tensor(logistic.coef_, dtype=torch.float32)
        bias = torch.as_tensor(logistic.intercept_, dtype=torch.float32)
        with torch.no_grad():
            if coef.shape[0] == 1:  # binary: logits (0, z) give softmax = sigmoid(z)
                model.head.weight.copy_(torch.cat([torch.zeros_like(coef), coef]))
                model.head.bias.copy_(torch.cat([torch.zeros_like(bias), bias]))
            else:
                model.head.weight.copy_(coef)
                model.head.bias.copy_(bias)
        self.model, self._tokenizer = model.eval(), embedder.tokenizer

    def _fine_tune(self, items: list[str], y: np.ndarray) -> None:
        from lepton.data import Dataset
        from lepton.train import fit

        assert self.model is not None
        assert self._tokenizer is not None
        o = self.options
        encoded = [e[: o["max_length"]] for e in self._tokenizer.encode(items)]
        ids = Tokenizer.pad(encoded, max(len(e) for e in encoded))  # (N, L); fit trims per batch
        train = Dataset(ids, torch.as_tensor(y), name="texts", classes=list(self.classes))
        steps = o["epochs"] * -(-len(items) // o["batch_size"])
        schedule = LayerwiseLR(self.model, lr=o["lr"], decay=o["layer_decay"],
                               warmup=o["warmup"], total=steps)  # fmt: skip
        self.fit_result = fit(
            self.model, train, epochs=o["epochs"], batch_size=o["batch_size"], lr=o["lr"],
            optimizer="adamw", weight_decay=0.01, grad_clip=1.0, seed=o["seed"],
            callbacks=[schedule], quiet=not self.verbose, num_threads=self.num_threads,
        )  # fmt: skip
        self.model.eval()

    # -- inference -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.classes:
            raise NotFittedError(
                "this TextClassifier is not fitted yet; call .fit(texts, labels) or "
                "TextClassifier.load(folder) first"
            )

    def predict_proba(self, texts: Any) -> np.ndarray:
        """(N, K) class probabilities, columns in the order of ``classes``."""
        self._check_fitted()
        items = check_texts(texts)
        if not items:
            return np.zeros((0, len(self.classes)))
        if self.encoder == "tfidf":
            return np.asarray(self._logistic.predict_proba(self._vectorizer.transform(items)))
        assert self.model is not None
        assert self._tokenizer is not None
        encoded = self._tokenizer.encode(items)
        order = sorted(range(len(items)), key=lambda i: -len(encoded[i]))
        out = torch.empty(len(items), len(self.classes))
        bs = self.options["batch_size"]
        from lepton.text._embed import _threads

        with torch.inference_mode(), _threads(self.num_threads):
            for start in range(0, len(order), bs):
                rows = order[start : start + bs]
                logits = self.model(Tokenizer.pad([encoded[i] for i in rows]))
                out[torch.tensor(rows)] = torch.softmax(logits, dim=-1)
        return out.numpy().astype(np.float64)

    def predict(self, texts: Any) -> list[str]:
        """The most probable class name of each text."""
        proba = self.predict_proba(texts)
        return [self.classes[i] for i in proba.argmax(axis=1).tolist()]

    def score(self, texts: Any, labels: Sequence[Any] | None = None) -> float:
        """Accuracy on ``texts`` and ``labels`` (class names), or on a labelled
        ``TextDataset``."""
        if labels is None and hasattr(texts, "label_names"):
            items, truth = list(texts.texts), texts.label_names()
        else:
            items = check_texts(texts)
            truth = [str(v) for v in (labels if labels is not None else [])]
        if len(truth) != len(items) or not items:
            raise TextError(f"score needs one label per text (got {len(items)} texts, "
                            f"{len(truth)} labels)")  # fmt: skip
        predicted = self.predict(items)
        return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted classifier to the folder ``path``: ``config.json``,
        ``weights.safetensors`` and, for the MiniLM encoders, ``tokenizer.json``."""
        self._check_fitted()
        config: dict[str, Any] = {"encoder": self.encoder, "classes": list(self.classes),
                  "options": self.options, "fit_seconds": self.fit_seconds}  # fmt: skip
        if self.encoder == "tfidf":
            vec, lr = self._vectorizer, self._logistic
            vocab = {k: int(v) for k, v in vec.vocabulary_.items()}
            config["vectorizer"] = {
                "ngram_range": list(vec.ngram_range),
                "sublinear_tf": vec.sublinear_tf,
                "vocabulary": vocab,
            }
            tensors = {"idf": torch.as_tensor(vec.idf_), "coef": torch.as_tensor(lr.coef_),
                       "intercept": torch.as_tensor(lr.intercept_)}  # fmt: skip
            return write_folder(path, _FORMAT, config, tensors=tensors)
        assert self.model is not None
        if self.encoder == "minilm":  # the encoder is the packaged one: only the head
            tensors = {f"head.{k}": v for k, v in self.model.head.state_dict().items()}
            config["minilm_sha256"] = MINILM_FILES["model.safetensors"]
        else:
            tensors = dict(self.model.state_dict())
        tokenizer = (minilm_dir() / "tokenizer.json").read_bytes()
        return write_folder(path, _FORMAT, config, tensors=tensors,
                            files={"tokenizer.json": tokenizer})  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> TextClassifier:
        """Read a folder written by :meth:`save` (hashes checked; nothing is unpickled)."""
        config, tensors, files = read_folder(path, _FORMAT)
        clf = cls(config["encoder"], **config["options"])
        clf.classes = tuple(config["classes"])
        clf.fit_seconds = config.get("fit_seconds")
        if clf.encoder == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            v = config["vectorizer"]
            vec = TfidfVectorizer(ngram_range=tuple(v["ngram_range"]),
                                  sublinear_tf=v["sublinear_tf"])  # fmt: skip
            vec.vocabulary_ = v["vocabulary"]
            vec.idf_ = tensors["idf"].numpy()
            logistic = clf._new_logistic()
            logistic.coef_ = tensors["coef"].numpy()
            logistic.intercept_ = tensors["intercept"].numpy()
            logistic.classes_ = np.arange(len(clf.classes))
            clf._vectorizer, clf._logistic = vec, logistic
            return clf
        model = MiniLMClassifier(num_classes=len(clf.classes), pretrained=clf.encoder == "minilm")
        if clf.encoder == "minilm":
            model.head.load_state_dict({k[5:]: v for k, v in tensors.items()})
        else:
            model.load_state_dict(tensors)
        tmp = Path(path).expanduser() / "tokenizer.json"
        assert "tokenizer.json" in files  # checked against its hash by read_folder
        clf.model, clf._tokenizer = model.eval(), Tokenizer(tmp)
        return clf

    def register(
        self, name: str, *, metrics: dict[str, float] | None = None, dataset: Any = None,
        database: Any = None,
    ) -> Any:  # fmt: skip
        """Register the fitted classifier as the next version of ``name`` (any encoder:
        TF-IDF vocabulary and weights, or the MiniLM weights, in safetensors; no pickle)
        and return the ``ModelVersion``. The manifest describes a text input; ``dataset``
        (the training ``TextDataset``) goes in its lineage."""
        self._check_fitted()
        from lepton.text._stored import register_classifier

        return register_classifier(self, name, metrics=metrics, dataset=dataset, database=database)

    @classmethod
    def from_registry(cls, ref: str, *, database: Any = None) -> TextClassifier:
        """The classifier registered as ``ref`` (``"name"``, ``"name:2"``, ...)."""
        from lepton.text._stored import classifier_encoder, fill_classifier, load_text

        module, version = load_text(ref, ("text-tfidf", "text-classifier"), database=database)
        clf = cls(classifier_encoder(version.manifest))
        fill_classifier(clf, module, version.manifest)
        return clf
