"""Sentence embeddings: ``lp.text.embed(texts)`` -> (N, 384) L2-normalised vectors.

Texts are tokenized once, sorted by length and cut into batches of similar lengths, so a
batch pads to little more than its own texts (on short-and-long mixes this roughly halves
the work against padding in the given order); the vectors are put back in input order.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from lepton.text._encoder import BertEncoder, Tokenizer, load_minilm, mean_pool
from lepton.text._errors import check_texts

__all__ = ["DIM", "Embedder", "default_embedder", "embed"]

DIM = 384
_default: Embedder | None = None


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Embedder:
    """An encoder and its tokenizer, turning texts into normalised sentence vectors.

    Args:
        encoder: A :class:`BertEncoder` (default: the packaged all-MiniLM-L6-v2).
        tokenizer: Its tokenizer.
    """

    def __init__(self, encoder: BertEncoder | None = None, tokenizer: Tokenizer | None = None):
        if encoder is None or tokenizer is None:
            encoder, tokenizer = load_minilm()
        self.encoder = encoder.eval()
        self.tokenizer = tokenizer

    @property
    def dim(self) -> int:
        """Width of the vectors."""
        return self.encoder.config.hidden

    def __call__(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        progress: bool | None = None,
        num_threads: int | None = None,
    ) -> torch.Tensor:
        """(N, dim) float32 unit vectors, row ``i`` for ``texts[i]``; see :func:`embed`."""
        items = check_texts(texts)
        if batch_size < 1:
            from lepton.errors import TextError

            raise TextError(f"batch_size must be a positive integer, got {batch_size}")
        out = torch.empty(len(items), self.dim)
        if not items:
            return out
        encoded = self.tokenizer.encode(items)
        order = sorted(range(len(items)), key=lambda i: -len(encoded[i]))  # longest first
        batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        show = len(batches) > 4 if progress is None else progress
        bar = _Bar(len(items)) if show else None
        try:
            with torch.inference_mode(), _threads(num_threads):
                for rows in batches:
                    ids = Tokenizer.pad([encoded[i] for i in rows])  # (B, L)
                    mask = ids != 0
                    vectors = F.normalize(mean_pool(self.encoder(ids, mask), mask), dim=-1)
                    out[torch.tensor(rows)] = vectors  # back to input order
                    if bar is not None:
                        bar.advance(len(rows))
        finally:
            if bar is not None:
                bar.close()
        return out


class _Bar:
    """A transient rich progress bar on stderr (nothing when stderr is not a terminal)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.progress = Progress(
            "embedding", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(file=sys.stderr), transient=True,
        )  # fmt: skip
        self.task = self.progress.add_task("embed", total=total)
        self.progress.start()

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        self.progress.stop()


def default_embedder() -> Embedder:
    """The process-wide all-MiniLM-L6-v2 embedder (loaded and verified once)."""
    global _default
    if _default is None:
        _default = Embedder()
    return _default


def embed(
    texts: Sequence[str] | str,
    *,
    batch_size: int = 32,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> torch.Tensor:
    """Embed texts with all-MiniLM-L6-v2: (N, 384) float32, L2-normalised, so a dot
    product is the cosine similarity.

    Args:
        texts: Strings (one string is one text: the result is then (1, 384)).
        batch_size: Texts per forward pass (batched by length, results in input order).
        progress: Show a progress bar (default: when there are more than 4 batches).
        num_threads: Torch CPU threads for the call (default: unchanged).

    Raises:
        TextError: ``texts`` is not a sequence of strings.
        MissingExtraError: The model or ``tokenizers`` is not installed.

    Example:
        >>> v = lp.text.embed(["a cat sits", "a kitten is sitting"])  # doctest: +SKIP
        >>> float(v[0] @ v[1]) > 0.7  # doctest: +SKIP
        True
    """
    return default_embedder()(
        [texts] if isinstance(texts, str) else texts,
        batch_size=batch_size,
        progress=progress,
        num_threads=num_threads,
    )
