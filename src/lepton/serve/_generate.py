"""A registered language model (``lp.models.GPT``) behind a streamed ``/generate``.

``lepton deploy NAME`` (and a platform deployment) serves a :class:`GenerateService`
when the version's architecture is ``"gpt"`` (the table in :mod:`lepton.serve._by_model`):

* ``POST /generate`` ``{"prompt": "a dog ", "max_new_tokens": 200, "temperature": 0.8,
  "top_k": 20, "top_p": 0.95, "seed": 0}``, answered as **NDJSON** lines
  (``application/x-ndjson``, flushed as each is made), the format of the assistant's
  ``/chat``: first ``{"event": "start", "prompt", "seed"}`` (the seed drawn when none was
  given, so any answer can be reproduced), then ``{"event": "delta", "text": "..."}`` for
  every sampled piece, then ``{"event": "end", "text": <the whole continuation>,
  "pieces", "seconds"}``; an error after the start is one ``{"error": {...}}`` line.
* ``GET /info``: the version, its size, context and vocabulary, its metrics.

The model is small (trained here, on a CPU, in minutes): it continues text in the style of
its corpus, character by character; it does not answer questions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lepton.serve._handler import handler
from lepton.serve._service import Service

if TYPE_CHECKING:
    from lepton.models import GPT
    from lepton.storage import Database

__all__ = ["GenerateEvent", "GenerateRequest", "GenerateService"]

MAX_PROMPT = 10_000
MAX_NEW_TOKENS = 2_000


class GenerateRequest(BaseModel):
    """What to continue, and how to sample."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(default="", max_length=MAX_PROMPT, description="The text to continue.")
    max_new_tokens: int = Field(
        default=200, ge=0, le=MAX_NEW_TOKENS, description="Tokens (characters) to sample."
    )
    temperature: float = Field(
        default=1.0, ge=0.0, le=10.0, description="Divides the logits; 0 is greedy."
    )
    top_k: int | None = Field(default=None, ge=1, description="Sample among the k likeliest.")
    top_p: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Nucleus: the likeliest tokens of this mass."
    )
    seed: int | None = Field(
        default=None, ge=0, lt=2**63, description="Same seed, same text; none: a fresh one."
    )


class GenerateEvent(BaseModel):
    """One NDJSON line of a ``/generate`` stream (see the module's docstring)."""

    event: Literal["start", "delta", "end"]
    text: str | None = None
    prompt: str | None = None
    seed: int | None = None
    pieces: int | None = None
    seconds: float | None = None


class GenerateService(Service):
    """A registered :class:`~lepton.models.GPT` version: ``/generate`` (streamed) and
    ``/info``."""

    def __init__(self, ref: str, *, database: Database | None = None) -> None:
        self.ref = ref
        self.database = database

    def setup(self) -> None:
        from lepton.registry import load_model, resolve

        self.version = resolve(self.ref, database=self.database)
        # eval mode for good: concurrent samplers share the model and never change its mode
        self.model: GPT = load_model(self.version.ref, database=self.database).eval()  # type: ignore[assignment]

    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The served version: its size, context, vocabulary and metrics."""
        m, manifest = self.model, self.version.manifest
        return {
            "model": self.version.name,
            "version": self.version.version,
            "ref": self.version.ref,
            "kind": "language-model",
            "architecture": manifest.get("architecture", {}).get("config"),
            "parameters": sum(p.numel() for p in m.parameters()),
            "context": m.context,
            "tokenizer": "byte" if m.tokenizer.vocab is None else "char",
            "vocab_size": m.vocab_size,
            "dataset": manifest.get("dataset"),
            "metrics": manifest.get("metrics"),
            "routes": ["/generate"],
        }

    @handler(workers=2, timeout_s=60)
    def generate(self, request: GenerateRequest) -> Iterator[GenerateEvent]:
        """Sample a continuation of ``prompt``, streamed piece by piece as NDJSON events."""
        seed = request.seed if request.seed is not None else random.SystemRandom().getrandbits(63)
        started = time.perf_counter()
        yield GenerateEvent(event="start", prompt=request.prompt, seed=seed)
        text: list[str] = []
        for piece in self.model.stream(
            request.prompt, request.max_new_tokens, temperature=request.temperature,
            top_k=request.top_k, top_p=request.top_p, seed=seed,
        ):  # fmt: skip
            text.append(piece)
            yield GenerateEvent(event="delta", text=piece)
        yield GenerateEvent(
            event="end", text="".join(text), pieces=len(text),
            seconds=round(time.perf_counter() - started, 4),
        )  # fmt: skip
