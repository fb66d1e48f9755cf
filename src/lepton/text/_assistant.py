"""``Assistant``: answers questions from a FAQ by meaning, and says when it does not know.

A knowledge base is question/answer pairs (a Markdown file whose ``## `` headings are the
questions and the text below each its answer, or a CSV with ``question`` and ``answer``
columns). Each entry is embedded twice, its question alone and question + answer, and a
user's question scores ``max`` of its cosine with the two. The best entry is the answer
when its score reaches ``threshold``; below it the assistant says it does not know and
names the nearest topics.

Conversation state: the turns so far are kept. A follow-up ("and how do I delete it?")
often lacks its subject, so when a question is short or refers back (it, that, this,
them, ...), it is also scored with the topic of the latest answered turn appended; that
reading may not pick the topic itself again, and counts only for entries the question
alone scores at least half the threshold on. The better of the two readings wins.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lepton.errors import DataFormatError, DataSourceMissingError, TextError

__all__ = ["Answer", "Assistant", "FaqEntry", "read_faq"]

_REFERRING = re.compile(
    r"\b(it|its|that|this|those|these|them|they|there|one|same|instead|also|then)\b|"
    r"^(and|but|what about|how about|so|or)\b",
    re.IGNORECASE,
)
DONT_KNOW = "I don't know. I can answer questions about these topics, e.g.: "


@dataclass(frozen=True)
class FaqEntry:
    """One question and its answer."""

    question: str
    answer: str


@dataclass(frozen=True)
class Answer:
    """What :meth:`Assistant.ask` returns.

    Attributes:
        text: The answer, or an "I don't know" with the nearest topics.
        known: Whether the best match reached the threshold.
        score: Cosine similarity of the best match (0..1 in practice).
        question: The FAQ question that matched best.
        used_context: Whether the previous turn was used to read this question.
        alternatives: The next-best FAQ questions with their scores.
    """

    text: str
    known: bool
    score: float
    question: str
    used_context: bool = False
    alternatives: list[tuple[str, float]] = field(default_factory=list)


def _parse_markdown(text: str, where: str) -> list[FaqEntry]:
    entries: list[FaqEntry] = []
    question: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("## "):
            if question is not None:
                entries.append(FaqEntry(question, "\n".join(body).strip()))
            question, body = line[3:].strip(), []
        elif question is not None:
            body.append(line)
    if question is not None:
        entries.append(FaqEntry(question, "\n".join(body).strip()))
    empty = [e.question for e in entries if not e.answer]
    if empty:
        raise DataFormatError(f"{where}: the questions {empty[:3]} have no answer below them")
    return entries


def _parse_csv(text: str, where: str) -> list[FaqEntry]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"question", "answer"} <= set(rows[0]):
        raise DataFormatError(
            f"{where} needs 'question' and 'answer' columns; it has {list(rows[0])}"
        )
    return [FaqEntry(r["question"].strip(), r["answer"].strip()) for r in rows]


def read_faq(path: str | Path | None = None) -> list[FaqEntry]:
    """The entries of a FAQ file (``.md``/``.markdown`` or ``.csv``); without a path,
    the FAQ about Lepton that ships with it."""
    if path is None:
        text = resources.files("lepton.text").joinpath("faq.md").read_text(encoding="utf-8")
        return _parse_markdown(text, "lepton/text/faq.md")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataSourceMissingError(f"{p} does not exist; pass a Markdown or CSV FAQ file")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".csv":
        entries = _parse_csv(text, str(p))
    elif p.suffix.lower() in (".md", ".markdown"):
        entries = _parse_markdown(text, str(p))
    else:
        raise DataFormatError(f"{p}: a FAQ is a .md (## question, answer below) or .csv file")
    if not entries:
        raise DataFormatError(f"{p} holds no question/answer pairs")
    return entries


class Assistant:
    """A FAQ assistant with a confidence threshold and conversation memory.

    Args:
        faq: A FAQ file path, a list of :class:`FaqEntry` / ``(question, answer)`` pairs,
            or ``None`` for the FAQ about Lepton that ships with it.
        threshold: The least cosine score that counts as knowing the answer.
        embedder: Turns texts into unit vectors (default: ``lp.text.embed``'s model).

    Example:
        >>> bot = lp.text.Assistant()  # doctest: +SKIP
        >>> bot.ask("how can I put a model in the registry?").question  # doctest: +SKIP
        'How do I register a model?'
    """

    def __init__(self, faq: Any = None, *, threshold: float = 0.35, embedder: Any = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise TextError(f"threshold is a cosine score in (0, 1), got {threshold}")
        if faq is None or isinstance(faq, (str, Path)):
            entries = read_faq(faq)
        else:
            entries = [e if isinstance(e, FaqEntry) else FaqEntry(*e) for e in faq]
        if not entries:
            raise TextError("an assistant needs at least one question/answer pair")
        if embedder is None:
            from lepton.text._embed import default_embedder

            embedder = default_embedder()
        self.entries, self.threshold, self._embed = entries, threshold, embedder
        questions = [e.question for e in entries]
        both = [f"{e.question} {e.answer}" for e in entries]
        vectors = embedder(questions + both)
        self._q, self._qa = vectors[: len(entries)], vectors[len(entries) :]  # (E, 384) each
        self.history: list[tuple[str, Answer]] = []

    def __repr__(self) -> str:
        return f"Assistant({len(self.entries)} entries, threshold={self.threshold})"

    @classmethod
    def _restore(
        cls, entries: list[FaqEntry], threshold: float, q: torch.Tensor, qa: torch.Tensor,
        embedder: Any = None,
    ) -> Assistant:  # fmt: skip
        """An assistant from stored embeddings (no re-embedding of the FAQ)."""
        if embedder is None:
            from lepton.text._embed import default_embedder

            embedder = default_embedder()
        bot = cls.__new__(cls)
        bot.entries, bot.threshold, bot._embed = list(entries), threshold, embedder
        bot._q, bot._qa, bot.history = q, qa, []
        return bot

    def conversation(self, history: list[str] | None = None) -> Assistant:
        """A new conversation with this knowledge base (shares its embeddings, not its
        turns), after replaying the user's earlier ``history`` questions in order."""
        bot = type(self)._restore(self.entries, self.threshold, self._q, self._qa, self._embed)
        for question in history or []:
            bot.ask(question)
        return bot

    def register(
        self, name: str, *, metrics: dict[str, float] | None = None, database: Any = None
    ) -> Any:
        """Register the knowledge base and its embeddings (safetensors; the FAQ as JSON)
        as the next version of ``name``; serve it with ``lepton deploy NAME`` (``/chat``)."""
        from lepton.text._stored import register_assistant

        return register_assistant(self, name, metrics=metrics, database=database)

    @classmethod
    def from_registry(cls, ref: str, *, database: Any = None, embedder: Any = None) -> Assistant:
        """The assistant registered as ``ref``."""
        from lepton.text._stored import assistant_parts, load_text

        module, _ = load_text(ref, ("text-assistant",), database=database)
        pairs, threshold, q, qa = assistant_parts(module)
        return cls._restore([FaqEntry(*p) for p in pairs], threshold, q, qa, embedder)

    def reset(self) -> None:
        """Forget the conversation."""
        self.history.clear()

    def scores(self, questions: list[str]) -> torch.Tensor:
        """(Q, E) match scores of questions against every entry (no conversation)."""
        v = self._embed(questions)  # (Q, 384)
        return torch.maximum(v @ self._q.T, v @ self._qa.T)

    def _topic(self) -> str | None:
        """The FAQ question of the latest answered turn (``None`` without one)."""
        return next((a.question for _, a in reversed(self.history) if a.known), None)

    def ask(self, question: str) -> Answer:
        """Answer ``question``, using the previous turn when it reads as a follow-up."""
        if not isinstance(question, str) or not question.strip():
            raise TextError("ask takes a non-empty question string, e.g. ask('How do I ...?')")
        readings = [question]
        topic = self._topic()
        if topic is not None and (
            len(question.split()) <= 4 or _REFERRING.search(question) is not None
        ):
            readings.append(f"{question} ({topic})")
        scores = self.scores(readings)  # (1 or 2, E)
        row, used = scores[0], False
        if topic is not None and len(readings) == 2:
            # The appended topic matches its own entry: a follow-up asks something else
            # (asking the same again scores on its own). And the question alone must lean
            # to the entry a little, so context never turns an unrelated question into a hit.
            ctx = scores[1].clone()
            ctx[[e.question for e in self.entries].index(topic)] = -1.0
            ctx[scores[0] < self.threshold / 2] = -1.0
            used = float(ctx.max()) > float(row.max())
            row = torch.maximum(row, ctx)
        top = row.topk(min(4, len(self.entries)))
        best, score = int(top.indices[0]), float(top.values[0])
        others = [(self.entries[int(i)].question, float(s))
                  for s, i in zip(top.values[1:], top.indices[1:], strict=True)]  # fmt: skip
        known = score >= self.threshold
        entry = self.entries[best]
        if known:
            text = entry.answer
        else:
            names = "; ".join([entry.question] + [q for q, _ in others[:2]])
            text = DONT_KNOW + names
        answer = Answer(text, known, score, entry.question, used, others)
        self.history.append((question, answer))
        return answer
