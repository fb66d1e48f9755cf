"""Registered ``lp.text`` versions behind their own routes: a classifier's ``/predict``, an
index's ``/search`` and an assistant's streamed ``/chat``, each with ``GET /info``.

``lepton deploy NAME`` (and a platform deployment) serves one of these instead of
:class:`~lepton.serve.ModelService` when the version's architecture is a text one (the
table in :mod:`lepton.serve._by_model` decides):

* :class:`TextClassifierService` (``text-classifier``, ``text-tfidf``): ``POST /predict``
  ``{"text": "..."}`` or ``{"texts": [...]}`` -> ``{"predictions": [{"label",
  "probabilities": {class: p}}], "label", "probabilities"}`` (the last two for ``text``).
* :class:`IndexService` (``text-index``): ``POST /search`` ``{"query": "...", "k": 10,
  "filter": {"pos": "n"}}`` -> ``{"hits": [{"id", "score", "text", "metadata"}]}``.
* :class:`AssistantService` (``text-assistant``): ``POST /chat`` ``{"message": "...",
  "history": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}``,
  answered as a stream of **NDJSON** lines (``application/x-ndjson``, one JSON object per
  line, flushed as it is made): first ``{"event": "start", "known", "score", "question",
  "used_context", "alternatives"}``, then ``{"event": "delta", "text": "..."}`` pieces of
  the answer, then ``{"event": "end", "text": <the whole answer>}``; an error after the
  start is one ``{"error": {...}}`` line. The conversation state is the ``history``: its
  user turns are asked again, in order, so a follow-up ("and how do I delete it?") is
  read with the previous topic, as ``Assistant.ask`` does in a notebook. Below its
  threshold the assistant says "I don't know" and names the nearest topics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lepton.errors import RequestError
from lepton.serve._handler import handler
from lepton.serve._service import Service

if TYPE_CHECKING:
    from lepton.storage import Database

__all__ = [
    "AssistantService",
    "ChatEvent",
    "ChatRequest",
    "ChatTurn",
    "IndexService",
    "PredictRequest",
    "SearchRequest",
    "TextClassifierService",
    "TextPredictAnswer",
]

MAX_TEXTS = 1000
MAX_CHARS = 20_000
MAX_K = 100
MAX_TURNS = 10  # user turns of history replayed (older ones cannot change the reading)

Scalar = str | int | float | bool


class PredictRequest(BaseModel):
    """One text or a list of texts to classify."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, max_length=MAX_CHARS, description="One text.")
    texts: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_TEXTS, description="Several texts."
    )

    @model_validator(mode="after")
    def _one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('send exactly one of "text" (a string) or "texts" (a list)')
        if self.texts is not None and any(len(t) > MAX_CHARS for t in self.texts):
            raise ValueError(f"each text has at most {MAX_CHARS:,} characters")
        return self


class Prediction(BaseModel):
    """A text's most probable class and every class's probability."""

    label: str
    probabilities: dict[str, float]


class TextPredictAnswer(BaseModel):
    """One prediction per text; ``label`` and ``probabilities`` repeat the first when
    the request sent one ``text``."""

    predictions: list[Prediction]
    label: str | None = None
    probabilities: dict[str, float] | None = None


class SearchRequest(BaseModel):
    """A semantic search."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_CHARS, description="The query text.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many hits.")
    filter: dict[str, Scalar | list[Scalar]] | None = Field(
        default=None,
        description='Metadata values to keep, e.g. {"pos": "n"} or {"pos": ["n", "v"]}.',
    )


class SearchHit(BaseModel):
    """One hit: its id, cosine score, text and metadata."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]


class SearchAnswer(BaseModel):
    """The ``k`` nearest entries, best first."""

    query: str
    hits: list[SearchHit]


class ChatTurn(BaseModel):
    """One earlier turn of the conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_CHARS)


class ChatRequest(BaseModel):
    """A message, with the conversation so far (oldest first)."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_CHARS, description="The user's message.")
    history: list[ChatTurn] = Field(default_factory=list, max_length=200)


class ChatEvent(BaseModel):
    """One NDJSON line of a ``/chat`` stream (see the module's docstring)."""

    event: Literal["start", "delta", "end"]
    text: str | None = None
    known: bool | None = None
    score: float | None = None
    question: str | None = None
    used_context: bool | None = None
    alternatives: list[tuple[str, float]] | None = None


class _TextService(Service):
    """Loads a registered text version (``lp.text`` rebuilds it) at setup."""

    kind = "text"
    route = "/predict"

    def __init__(self, ref: str, *, database: Database | None = None) -> None:
        self.ref = ref
        self.database = database

    def setup(self) -> None:
        from lepton.registry import resolve

        self.version = resolve(self.ref, database=self.database)
        self.obj = self.load(self.version.ref)

    def load(self, ref: str) -> Any:
        """The ``lp.text`` object registered as ``ref``: the class this service's kind
        names rebuilds it (and refuses a version of another architecture)."""
        from lepton.text import Assistant, Index, TextClassifier

        made: Any = {"text-classifier": TextClassifier, "text-index": Index,
                     "text-assistant": Assistant}[self.kind]  # fmt: skip
        return made.from_registry(ref, database=self.database)

    def _info(self, **extra: Any) -> dict[str, Any]:
        m = self.version.manifest
        return {
            "model": self.version.name,
            "version": self.version.version,
            "ref": self.version.ref,
            "kind": self.kind,
            "input_schema": m.get("input_schema"),
            "dataset": m.get("dataset"),
            "metrics": m.get("metrics"),
            **extra,
            "routes": [self.route],
        }


class TextClassifierService(_TextService):
    """A registered ``TextClassifier`` (any encoder): ``/predict`` and ``/info``."""

    kind = "text-classifier"

    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The served version: encoder, classes, dataset and metrics."""
        return self._info(encoder=self.obj.encoder, classes=list(self.obj.classes))

    @handler(workers=2)
    def predict(self, request: PredictRequest) -> TextPredictAnswer:
        """Label and class probabilities of each text."""
        texts = [request.text] if request.text is not None else list(request.texts or [])
        proba = self.obj.predict_proba(texts)
        classes = list(self.obj.classes)
        out = [
            Prediction(label=classes[int(row.argmax())],
                       probabilities={c: float(p) for c, p in zip(classes, row, strict=True)})
            for row in proba
        ]  # fmt: skip
        if request.text is None:
            return TextPredictAnswer(predictions=out)
        return TextPredictAnswer(
            predictions=out, label=out[0].label, probabilities=out[0].probabilities
        )


class IndexService(_TextService):
    """A registered ``Index``: ``/search`` and ``/info``."""

    kind = "text-index"
    route = "/search"

    def setup(self) -> None:
        super().setup()
        self.keys = sorted({k for m in self.obj._meta for k in m})

    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The served index: kind, entries, dimensions and metadata keys."""
        return self._info(index=self.obj.kind, entries=len(self.obj), dim=self.obj.dim,
                          filter_keys=self.keys)  # fmt: skip

    @handler(workers=2)
    def search(self, request: SearchRequest) -> SearchAnswer:
        """The ``k`` entries nearest in meaning to ``query``, filtered by metadata."""
        if request.filter:
            unknown = sorted(set(request.filter) - set(self.keys))
            if unknown:
                raise RequestError(
                    f"no entry has the metadata key(s) {unknown}; filter on one of "
                    f"{self.keys or 'nothing (this index has no metadata)'}",
                    code="unknown_filter",
                )
        hits = self.obj.search(request.query, request.k, where=request.filter or None)
        return SearchAnswer(
            query=request.query,
            hits=[SearchHit(id=h.id, score=h.score, text=h.text, metadata=dict(h.metadata))
                  for h in hits],
        )  # fmt: skip


def pieces(text: str) -> list[str]:
    """``text`` cut into words with their trailing spaces (what a stream sends)."""
    return re.findall(r"\S+\s*", text) or [text]


class AssistantService(_TextService):
    """A registered ``Assistant``: ``/chat`` (streamed NDJSON) and ``/info``."""

    kind = "text-assistant"
    route = "/chat"

    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The served assistant: entries, threshold and the questions it knows."""
        return self._info(entries=len(self.obj.entries), threshold=self.obj.threshold,
                          questions=[e.question for e in self.obj.entries])  # fmt: skip

    @handler(workers=4, timeout_s=60)
    def chat(self, request: ChatRequest) -> Iterator[ChatEvent]:
        """The answer to ``message`` given ``history``, streamed as NDJSON events."""
        asked = [t.content for t in request.history if t.role == "user" and t.content.strip()]
        bot = self.obj.conversation(asked[-MAX_TURNS:])
        answer = bot.ask(request.message)
        yield ChatEvent(
            event="start", known=answer.known, score=answer.score, question=answer.question,
            used_context=answer.used_context, alternatives=answer.alternatives,
        )  # fmt: skip
        for piece in pieces(answer.text):
            yield ChatEvent(event="delta", text=piece)
        yield ChatEvent(event="end", text=answer.text)
