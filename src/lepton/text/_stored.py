"""``lp.text`` objects in the model registry: each one an ``nn.Module`` of buffers.

The registry stores one safetensors file per version and rebuilds the module from the
manifest's architecture, so a classifier, an index or an assistant goes in as a module
whose buffers hold everything: float tensors (weights, embeddings) as they are, and the
JSON parts (a vocabulary, ids/texts/metadata, the FAQ) as UTF-8 bytes in a ``uint8``
buffer. Nothing is pickled; the sizes the buffers need are the module's arguments.

| architecture | module | forward |
|---|---|---|
| ``"text-classifier"`` | :class:`~lepton.text.MiniLMClassifier` | token ids -> logits |
| ``"text-tfidf"`` | :class:`TfidfLogistic` | (B, F) TF-IDF rows -> logits |
| ``"text-index"`` | :class:`StoredIndex` | (Q, dim) unit queries -> (Q, N) cosines |
| ``"text-assistant"`` | :class:`StoredAssistant` | (Q, dim) unit questions -> (Q, E) scores |

Every version's manifest describes its input as text (``input_schema = {"kind": "text",
"dtype": "string", ...}``), not as the shape of a token probe.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from lepton.errors import TextError
from lepton.models import register_model
from lepton.text._encoder import MAX_LENGTH, MINILM_FILES, Tokenizer, _check, minilm_dir

if TYPE_CHECKING:
    from lepton.text._assistant import Assistant
    from lepton.text._classifier import Encoder, TextClassifier
    from lepton.text._index import Index

__all__ = [
    "TEXT_ARCHITECTURES",
    "StoredAssistant",
    "StoredIndex",
    "TextSchema",
    "TfidfLogistic",
    "register_assistant",
    "register_classifier",
    "register_index",
]

#: The architectures this module (and ``MiniLMClassifier``) registers.
TEXT_ARCHITECTURES = ("text-classifier", "text-tfidf", "text-index", "text-assistant")


def json_tensor(value: Any) -> torch.Tensor:
    """``value`` as JSON in a ``uint8`` tensor."""
    data = json.dumps(value, ensure_ascii=False).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0)


def tensor_json(t: torch.Tensor) -> Any:
    """The JSON value :func:`json_tensor` stored."""
    return json.loads(bytes(t.numpy().tobytes()).decode())


def _bytes(t: torch.Tensor) -> bytes:
    return bytes(t.numpy().tobytes())


class TextSchema:
    """What ``lp.register(..., dataset=)`` reads, for a text model: the training data's
    name, size and fingerprint, its classes, and an input schema that says "text"."""

    preprocessing: ClassVar[list[Any]] = []

    def __init__(
        self, name: str, rows: int, fingerprint: str, *, classes: tuple[str, ...] = (),
        **input_schema: Any,
    ) -> None:  # fmt: skip
        self.name, self.rows, self._fingerprint = name, rows, fingerprint
        self.classes = list(classes)
        self.task = "classification" if classes else None
        self.input_schema = {"kind": "text", "dtype": "string", **input_schema}

    @classmethod
    def of(
        cls, data: Any, texts: list[str], *, labels: np.ndarray | None = None, **kw: Any
    ) -> TextSchema:
        """From a ``TextDataset`` (its name and fingerprint), else from the texts (and
        labels) themselves."""
        if data is not None and hasattr(data, "fingerprint") and hasattr(data, "texts"):
            return cls(str(data.name), len(data.texts), data.fingerprint(), **kw)
        digest = hashlib.sha256("\x1e".join(texts).encode())
        if labels is not None:
            digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
        return cls("texts", len(texts), digest.hexdigest(), **kw)

    def __len__(self) -> int:
        return self.rows

    def fingerprint(self) -> str:
        return self._fingerprint


def _minilm_schema(clf: TextClassifier) -> dict[str, Any]:
    return {
        "encoder": clf.encoder,
        "tokenizer": "all-MiniLM-L6-v2",
        "tokenizer_sha256": MINILM_FILES["tokenizer.json"],
        "max_length": MAX_LENGTH,
    }


# -- TF-IDF ----------------------------------------------------------------------------------
@register_model("text-tfidf")
class TfidfLogistic(nn.Module):
    """A TF-IDF + logistic classifier as buffers.

    Args:
        num_classes: Classes K.
        features: Vocabulary size F.
        coef_rows: Rows of the logistic coefficients (1 for two classes, else K).
        vocabulary_bytes: Size of the JSON vocabulary buffer.
        ngram_range: The vectorizer's n-gram range.
        sublinear_tf: The vectorizer's ``sublinear_tf``.

    Input: (B, F) TF-IDF rows. Output: (B, K) logits.
    """

    idf: torch.Tensor  # (F,)
    coef: torch.Tensor  # (rows, F)
    intercept: torch.Tensor  # (rows,)
    vocabulary: torch.Tensor  # (bytes,) uint8 JSON

    def __init__(
        self, num_classes: int = 2, features: int = 1, coef_rows: int = 1,
        vocabulary_bytes: int = 0, ngram_range: tuple[int, int] = (1, 2),
        sublinear_tf: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_classes, self.ngram_range, self.sublinear_tf = (
            num_classes,
            ngram_range,
            sublinear_tf,
        )
        self.register_buffer("idf", torch.zeros(features, dtype=torch.float64))
        self.register_buffer("coef", torch.zeros(coef_rows, features, dtype=torch.float64))
        self.register_buffer("intercept", torch.zeros(coef_rows, dtype=torch.float64))
        self.register_buffer("vocabulary", torch.zeros(vocabulary_bytes, dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.to(self.coef.dtype) @ self.coef.T + self.intercept  # (B, rows)
        return torch.cat([torch.zeros_like(z), z], 1) if z.shape[1] == 1 else z


def _tfidf_module(clf: TextClassifier) -> TfidfLogistic:
    vec, lr = clf._vectorizer, clf._logistic
    vocab = json_tensor({k: int(v) for k, v in vec.vocabulary_.items()})
    module = TfidfLogistic(
        num_classes=len(clf.classes), features=len(vec.idf_), coef_rows=lr.coef_.shape[0],
        vocabulary_bytes=vocab.numel(), ngram_range=tuple(vec.ngram_range),
        sublinear_tf=bool(vec.sublinear_tf),
    )  # fmt: skip
    module.idf.copy_(torch.as_tensor(vec.idf_))
    module.coef.copy_(torch.as_tensor(lr.coef_))
    module.intercept.copy_(torch.as_tensor(lr.intercept_))
    module.vocabulary.copy_(vocab)
    return module


def _tfidf_from(module: TfidfLogistic, clf: TextClassifier) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=tuple(module.ngram_range), sublinear_tf=module.sublinear_tf)
    vec.vocabulary_ = tensor_json(module.vocabulary)
    vec.idf_ = module.idf.numpy()
    logistic = clf._new_logistic()
    logistic.coef_ = module.coef.numpy()
    logistic.intercept_ = module.intercept.numpy()
    logistic.classes_ = np.arange(len(clf.classes))
    clf._vectorizer, clf._logistic = vec, logistic


def register_classifier(
    clf: TextClassifier, name: str, *, metrics: dict[str, float] | None, dataset: Any,
    database: Any = None,
) -> Any:  # fmt: skip
    """Register a fitted :class:`~lepton.text.TextClassifier` (any encoder)."""
    from lepton.registry import register

    if clf.encoder == "tfidf":
        module: nn.Module = _tfidf_module(clf)
        extra: dict[str, Any] = {"encoder": "tfidf"}
    else:
        assert clf.model is not None
        module, extra = clf.model, _minilm_schema(clf)
    known = dataset is None and isinstance(clf.trained_on, TextSchema)
    source = clf.trained_on if known else TextSchema.of(dataset, [])
    schema = TextSchema(source.name, source.rows, source.fingerprint(), classes=clf.classes,
                        **extra)  # fmt: skip
    return register(
        module, name, metrics=metrics, dataset=schema, database=database,
        description=f"lp.text.TextClassifier(encoder={clf.encoder!r}); classes "
        f"{list(clf.classes)}",
    )  # fmt: skip


# -- Index -----------------------------------------------------------------------------------
@register_model("text-index")
class StoredIndex(nn.Module):
    """An :class:`~lepton.text.Index` as buffers: unit vectors, JSON entries, HNSW graph.

    Input: (Q, dim) unit queries. Output: (Q, N) cosine scores.
    """

    vectors: torch.Tensor  # (N, dim)
    entries: torch.Tensor  # (bytes,) uint8 JSON: ids, texts, metadata
    graph: torch.Tensor  # (bytes,) uint8: USearch's HNSW graph (empty when exact)

    def __init__(
        self, kind: str = "exact", dim: int = 384, count: int = 0,
        params: dict[str, int] | None = None, entries_bytes: int = 0, graph_bytes: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.kind, self.dim, self.params = kind, dim, dict(params or {})
        self.register_buffer("vectors", torch.zeros(count, dim))
        self.register_buffer("entries", torch.zeros(entries_bytes, dtype=torch.uint8))
        self.register_buffer("graph", torch.zeros(graph_bytes, dtype=torch.uint8))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q @ self.vectors.T


def register_index(
    index: Index, name: str, *, metrics: dict[str, float] | None, dataset: Any,
    database: Any = None,
) -> Any:  # fmt: skip
    """Register an :class:`~lepton.text.Index` (removed entries are dropped)."""
    from lepton.registry import register

    config, vectors, entries, graph = index._parts()
    blob = json_tensor(entries)
    graph_t = torch.frombuffer(bytearray(graph), dtype=torch.uint8) if graph else torch.empty(0)
    module = StoredIndex(config["kind"], config["dim"], vectors.shape[0], config["params"],
                         blob.numel(), graph_t.numel())  # fmt: skip
    module.vectors.copy_(vectors)
    module.entries.copy_(blob)
    module.graph.copy_(graph_t.to(torch.uint8))
    schema = TextSchema.of(dataset, entries["texts"], embedder="all-MiniLM-L6-v2")
    return register(
        module, name, metrics=metrics, dataset=schema, database=database,
        description=f"lp.text.Index({config['kind']!r}): {vectors.shape[0]} entries",
    )  # fmt: skip


# -- Assistant -------------------------------------------------------------------------------
@register_model("text-assistant")
class StoredAssistant(nn.Module):
    """An :class:`~lepton.text.Assistant` as buffers: the FAQ (JSON) and its two
    embeddings per entry. Input: (Q, dim) unit questions. Output: (Q, E) scores."""

    q: torch.Tensor  # (E, dim) the questions' embeddings
    qa: torch.Tensor  # (E, dim) question + answer embeddings
    faq: torch.Tensor  # (bytes,) uint8 JSON: [[question, answer], ...]

    def __init__(
        self, entries: int = 1, dim: int = 384, threshold: float = 0.35, faq_bytes: int = 0
    ) -> None:
        super().__init__()
        self.threshold = threshold
        self.register_buffer("q", torch.zeros(entries, dim))
        self.register_buffer("qa", torch.zeros(entries, dim))
        self.register_buffer("faq", torch.zeros(faq_bytes, dtype=torch.uint8))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.maximum(v @ self.q.T, v @ self.qa.T)


def register_assistant(
    bot: Assistant, name: str, *, metrics: dict[str, float] | None, database: Any = None
) -> Any:
    """Register an :class:`~lepton.text.Assistant`: its FAQ and embeddings."""
    from lepton.registry import register

    pairs = [[e.question, e.answer] for e in bot.entries]
    blob = json_tensor(pairs)
    module = StoredAssistant(len(pairs), int(bot._q.shape[1]), bot.threshold, blob.numel())
    module.q.copy_(bot._q)
    module.qa.copy_(bot._qa)
    module.faq.copy_(blob)
    texts = [f"{q}\x1f{a}" for q, a in pairs]
    schema = TextSchema.of(None, texts, embedder="all-MiniLM-L6-v2")
    schema.name = "faq"
    return register(
        module, name, metrics=metrics, dataset=schema, database=database,
        description=f"lp.text.Assistant: {len(pairs)} FAQ entries, threshold {bot.threshold}",
    )  # fmt: skip


# -- back from the registry ------------------------------------------------------------------
def load_text(ref: str, kinds: tuple[str, ...], *, database: Any = None) -> tuple[Any, Any]:
    """``(module, version)`` of the registered version ``ref``, which must be one of the
    architectures ``kinds`` (hashes checked by the registry; nothing unpickled)."""
    from lepton.registry import load_model, resolve

    version = resolve(ref, database=database)
    arch = (version.manifest.get("architecture") or {}).get("name")
    if arch not in kinds:
        raise TextError(
            f"{version.ref} is a {arch!r} model, not one of {', '.join(kinds)}; see "
            f"`lepton models list`"
        )
    return load_model(version.ref, database=database), version


def classifier_encoder(manifest: dict[str, Any]) -> Encoder:
    """The encoder a registered classifier's manifest records."""
    recorded = (manifest.get("input_schema") or {}).get("encoder")
    return (
        "tfidf" if recorded == "tfidf" else "transformer" if recorded == "transformer" else "minilm"
    )


def fill_classifier(clf: TextClassifier, module: nn.Module, manifest: dict[str, Any]) -> None:
    """Give a fresh ``TextClassifier`` the classes, weights and tokenizer of a version."""
    clf.classes = tuple((manifest.get("output_schema") or {}).get("classes") or ())
    if isinstance(module, TfidfLogistic):
        _tfidf_from(module, clf)
        return
    path = minilm_dir() / "tokenizer.json"
    _check(path)  # the packaged tokenizer, by hash, as the manifest records
    clf.model, clf._tokenizer = module.eval(), Tokenizer(path)  # type: ignore[assignment]


def index_parts(module: StoredIndex) -> tuple[dict[str, Any], torch.Tensor, Any, bytes | None]:
    """``(config, vectors, entries, graph)`` for ``Index._from_parts``."""
    graph = _bytes(module.graph) if module.graph.numel() else None
    config = {"kind": module.kind, "dim": module.dim, "params": module.params}
    return config, module.vectors, tensor_json(module.entries), graph


def assistant_parts(
    module: StoredAssistant,
) -> tuple[list[tuple[str, str]], float, torch.Tensor, torch.Tensor]:
    """``(pairs, threshold, q, qa)`` for ``Assistant._restore``."""
    pairs = [(str(q), str(a)) for q, a in tensor_json(module.faq)]
    return pairs, module.threshold, module.q, module.qa
