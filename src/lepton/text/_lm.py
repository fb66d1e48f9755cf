"""Language modelling data and evaluation: next-token windows for ``lp.fit``, perplexity.

Texts are joined into one stream (each followed by ``separator``), tokenized by a
:class:`~lepton.models.CharTokenizer`, and cut into windows of ``context + 1`` ids: the
first ``context`` are the inputs ``(N, T)``, the last ``context`` the targets ``(N, T)``
(each position's next token). ``lp.fit`` trains on them with its default loss, the
cross-entropy over every position, and reports token accuracy and ``val_loss`` (the mean
negative log-likelihood in nats: ``exp(val_loss)`` is the perplexity of the windows).

Example:
    >>> glosses = lp.data.load("wordnet-glosses")  # doctest: +SKIP
    >>> data = lp.text.LanguageModelData(glosses.texts[:20000], context=128)  # doctest: +SKIP
    >>> model = lp.models.GPT(vocab=data.tokenizer.vocab, context=128)  # doctest: +SKIP
    >>> lp.fit(model, data.dataset, epochs=1, batch_size=32, lr=3e-3)  # doctest: +SKIP
    >>> lp.text.perplexity(model, glosses.texts[-500:])  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lepton.data import Dataset
from lepton.errors import TextError
from lepton.models import GPT, CharTokenizer
from lepton.text._embed import _threads
from lepton.text._errors import check_texts

__all__ = ["LanguageModelData", "perplexity"]


def _stream(texts: Sequence[str], separator: str) -> str:
    return "".join(t + separator for t in texts)


class LanguageModelData:
    """Next-token ``(inputs, targets)`` windows of texts, as a :class:`~lepton.data.Dataset`.

    Args:
        texts: Strings (or a ``TextDataset``), read in order as one stream.
        tokenizer: The tokenizer to use (a validation set takes the training set's);
            default: every character of ``texts`` and ``separator``.
        context: Positions per window (the model's ``context``).
        stride: Ids between the starts of consecutive windows; default ``context``
            (each token is a target once).
        separator: Appended to every text (the model learns where a text ends).
        name: The dataset's name in run records.

    Attributes:
        tokenizer: The :class:`~lepton.models.CharTokenizer` (build the model with its
            ``vocab``).
        ids: The whole stream's ids, ``(L,)`` int64.
        dataset: ``inputs (N, context)`` and ``targets (N, context)`` int64 ids.
    """

    def __init__(
        self,
        texts: Any,
        tokenizer: CharTokenizer | None = None,
        *,
        context: int = 128,
        stride: int | None = None,
        separator: str = "\n",
        name: str = "text",
    ) -> None:
        items = check_texts(texts)
        if context < 1 or (stride is not None and stride < 1):
            raise TextError(f"context and stride must be >= 1, got {context} and {stride}")
        stream = _stream(items, separator)
        self.tokenizer = tokenizer or CharTokenizer.from_texts([stream])
        self.context = context
        self.ids = torch.tensor(self.tokenizer.encode(stream), dtype=torch.int64)  # (L,)
        if len(self.ids) < context + 1:
            raise TextError(
                f"{len(self.ids)} tokens make no window of context + 1 = {context + 1}; pass more "
                f"text or a smaller context"
            )
        windows = self.ids.unfold(0, context + 1, stride or context)  # (N, T + 1)
        self.dataset = Dataset(
            windows[:, :-1].contiguous(),  # (N, T) inputs
            windows[:, 1:].contiguous(),  # (N, T) next tokens
            name=f"{name} (next {'byte' if self.tokenizer.vocab is None else 'char'})",
            classes=self._classes(),
        )

    def _classes(self) -> list[str]:
        """One name per id (so class counts read as characters)."""
        vocab = self.tokenizer.vocab
        if vocab is None:
            return [f"0x{i:02x}" for i in range(256)]
        return [*vocab, "\ufffd"]

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return (
            f"LanguageModelData(tokens={len(self.ids):,}, windows={len(self)}, "
            f"context={self.context}, vocab={self.tokenizer.size})"
        )


@torch.no_grad()
def perplexity(
    model: GPT,
    texts: Any,
    *,
    stride: int | None = None,
    batch_size: int = 32,
    separator: str = "\n",
    num_threads: int | None = None,
) -> float:
    """The model's perplexity on held-out ``texts``: ``exp`` of the mean negative
    log-likelihood of every token after the first, in the model's own tokens.

    Each token is scored once, seeing up to ``context`` tokens before it: windows of
    ``context`` ids start every ``stride`` ids (default ``context // 2``) and each scores
    only the tokens the previous windows did not. For a character model ``log2`` of it is
    the bits per character.

    Args:
        model: A :class:`~lepton.models.GPT`.
        texts: Strings (or a ``TextDataset``), joined as for training.
        stride: Ids between window starts (smaller: more context per token, slower).
        batch_size: Windows per forward pass.
        separator: Appended to every text, as in :class:`LanguageModelData`.
        num_threads: Torch CPU threads during the call (default: unchanged).

    Raises:
        TextError: Fewer than two tokens, or a stride out of range.
    """
    items = check_texts(texts)
    ids = model.tokenizer.encode(_stream(items, separator))
    if len(ids) < 2:
        raise TextError("perplexity needs at least two tokens of text")
    T = model.context
    step = stride or max(1, T // 2)
    if not 1 <= step <= T:
        raise TextError(f"stride must be in [1, context={T}], got {stride}")
    stream = torch.tensor(ids, dtype=torch.int64)  # (L,)
    device = model.tokens.weight.device
    last = len(ids) - 1  # targets are stream[1:], inputs stream[:-1]
    spans: list[tuple[int, int, int]] = []  # (start, length, positions already scored)
    scored, start = 0, 0
    while scored < last:
        end = min(start + model.context, last)
        spans.append((start, end - start, max(0, scored - start)))
        scored, start = end, start + step
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with _threads(num_threads):
            for length in sorted({n for _, n, _ in spans}):
                same = [(s, skip) for s, n, skip in spans if n == length]
                for i in range(0, len(same), batch_size):
                    group = same[i : i + batch_size]
                    x = torch.stack([stream[s : s + length] for s, _ in group])  # (b, n)
                    y = torch.stack([stream[s + 1 : s + length + 1] for s, _ in group])  # (b, n)
                    logp = F.log_softmax(model(x.to(device)).float(), dim=-1)  # (b, n, V)
                    nll = -logp.gather(-1, y.to(device).unsqueeze(-1)).squeeze(-1)  # (b, n)
                    for row, (_, skip) in enumerate(group):
                        total += float(nll[row, skip:].sum())
                        count += length - skip
    finally:
        model.train(was_training)
    return math.exp(total / count)
