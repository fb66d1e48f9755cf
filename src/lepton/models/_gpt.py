"""``GPT``: a small decoder-only transformer (nanoGPT-sized) over characters or bytes.

Shapes: ``B`` batch, ``T`` positions (``T <= context``), ``D`` width (``d_model``), ``H``
heads, ``V`` vocabulary. The model is a stack of pre-LayerNorm blocks::

    ids (B, T) -> token embedding + position embedding (B, T, D)
        -> n_layers x [x + attn(ln(x)); x + mlp(ln(x))]  (B, T, D)
        -> ln_f -> logits = h @ token_embedding.T  (B, T, V)   (weight tying)

Attention is causal (``F.scaled_dot_product_attention(is_causal=True)``): position ``t``
sees positions ``<= t`` only, so every position is trained to predict its next token.

The tokenizer is part of the model's arguments (``vocab``: the characters it knows, or
``None`` for UTF-8 bytes), so ``model_spec`` (the registry's JSON manifest) carries it:
nothing is pickled. :class:`CharTokenizer` encodes and decodes; :meth:`GPT.stream` samples
piece by piece (temperature, top-k, top-p, a seed) and :meth:`GPT.generate` joins them.
"""

from __future__ import annotations

import codecs
import json
import math
import random
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lepton.errors import GenerationError, ShapeError, UnknownModelError
from lepton.models._checks import ArgChecker, token_batch
from lepton.models._registry import register_model

__all__ = ["GPT", "CharTokenizer", "check_sampling", "sample_next"]

_UNKNOWN = "\ufffd"  # what an out-of-vocabulary id decodes to


class CharTokenizer:
    """Characters (or UTF-8 bytes) to ids and back; JSON on disk, never pickle.

    Args:
        vocab: The known characters, each once, in id order; ``None``: byte level (256
            ids, any text). A character outside ``vocab`` gets the extra id
            ``len(vocab)``, which decodes to U+FFFD.

    Example:
        >>> tok = CharTokenizer.from_texts(["hello", "world"])
        >>> tok.decode(tok.encode("hold"))
        'hold'
    """

    def __init__(self, vocab: str | None = None) -> None:
        if vocab is not None and len(set(vocab)) != len(vocab):
            raise UnknownModelError(
                "vocab must list each character once; build it with CharTokenizer.from_texts(texts)"
            )
        self.vocab = vocab
        self._ids = {c: i for i, c in enumerate(vocab)} if vocab is not None else {}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """The tokenizer of every character that occurs in ``texts`` (sorted)."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls("".join(sorted(chars)))

    @property
    def size(self) -> int:
        """Number of ids: ``len(vocab) + 1`` (the unknown id), or 256 for bytes."""
        return 256 if self.vocab is None else len(self.vocab) + 1

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``: one per character (or per UTF-8 byte)."""
        if self.vocab is None:
            return list(text.encode("utf-8"))
        unknown = len(self.vocab)
        return [self._ids.get(c, unknown) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (invalid UTF-8 and unknown ids become U+FFFD)."""
        if self.vocab is None:
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        vocab = self.vocab
        return "".join(vocab[i] if 0 <= i < len(vocab) else _UNKNOWN for i in map(int, ids))

    def decoder(self) -> Generator[str, int, None]:
        """An incremental decoder: ``send(id)`` returns the text completed by that id
        (``""`` while a multi-byte character is incomplete). Prime it with ``next()``."""
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        piece = ""
        while True:
            i = yield piece
            piece = utf8.decode(bytes([int(i)])) if self.vocab is None else self.decode([i])

    def to_json(self) -> str:
        """``{"kind": "char" | "byte", "vocab": ...}`` as JSON text."""
        kind = "byte" if self.vocab is None else "char"
        return json.dumps({"kind": kind, "vocab": self.vocab}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CharTokenizer:
        """Read what :meth:`to_json` wrote."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") not in ("char", "byte"):
            raise UnknownModelError(
                'a tokenizer file is {"kind": "char" | "byte", "vocab": ...}; write it with '
                "CharTokenizer.save(path)"
            )
        return cls(data["vocab"] if data["kind"] == "char" else None)

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer as JSON (``tokenizer.json``)."""
        out = Path(path)
        out.write_text(self.to_json(), encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


class _CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` attends to positions ``<= t``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)  # (B, T, D) -> (B, T, 3D)
        self.proj = nn.Linear(d_model, d_model)  # (B, T, D) -> (B, T, D)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # 3 x (B, T, D)
        # (B, T, D) -> (B, H, T, D/H): one attention per head
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, D/H)
        y = y.transpose(1, 2).contiguous().view(B, T, D)  # (B, T, D)
        return self.drop(self.proj(y))  # type: ignore[no-any-return]


class _Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = _CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),  # (B, T, D) -> (B, T, 4D)
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),  # (B, T, 4D) -> (B, T, D)
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # (B, T, D)
        return x + self.mlp(self.ln2(x))  # type: ignore[no-any-return]  # (B, T, D)


@register_model("gpt")
class GPT(nn.Module):
    """A small GPT: causal transformer language model over characters or bytes.

    Args:
        vocab: The characters it knows, in id order (``CharTokenizer.from_texts(texts)
            .vocab``), or ``None`` for byte level (256 ids).
        context: The longest sequence it reads (positions of the position table).
        d_model: Width of every position's vector; divisible by ``n_heads``.
        n_heads: Attention heads.
        n_layers: Transformer blocks.
        dropout: Dropout on embeddings, attention and residual branches, in [0, 1).

    Input ``(B, T)`` int64 ids with ``T <= context``; output ``(B, T, V)`` next-token logits.

    Example:
        >>> model = GPT(vocab="abc ", context=16, d_model=32, n_heads=2, n_layers=1)
        >>> model(torch.tensor([model.tokenizer.encode("ab c")])).shape
        torch.Size([1, 4, 5])
    """

    def __init__(
        self,
        vocab: str | None = None,
        context: int = 128,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check = ArgChecker("GPT", "GPT(vocab=CharTokenizer.from_texts(texts).vocab, context=128)")
        if vocab is not None and not isinstance(vocab, str):
            raise check.fail(f"vocab must be a string of characters or None, got {vocab!r}")
        self.tokenizer = CharTokenizer(vocab)
        self.vocab_size = self.tokenizer.size
        self.context = check.int_("context", context, 1)
        check.int_("d_model", d_model, 1)
        check.int_("n_heads", n_heads, 1)
        if d_model % n_heads:
            raise check.fail(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        check.int_("n_layers", n_layers, 1)
        p = check.fraction("dropout", dropout)

        self.tokens = nn.Embedding(self.vocab_size, d_model)  # (B, T) -> (B, T, D)
        self.positions = nn.Embedding(context, d_model)  # (T,) -> (T, D)
        self.drop = nn.Dropout(p)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, p) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init)
        for name, param in self.named_parameters():  # GPT-2: residual projections scaled
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Map ids ``(B, T)`` to next-token logits ``(B, T, V)``."""
        ids = token_batch(ids, "GPT", self.vocab_size)  # (B, T)
        T = ids.shape[1]
        if self.context < T:
            raise ShapeError(
                f"GPT reads at most context={self.context} positions, got {T}; pass the last "
                f"{self.context} ids (generate() does) or rebuild with context>={T}."
            )
        pos = torch.arange(T, device=ids.device)  # (T,)
        h = self.drop(self.tokens(ids) + self.positions(pos))  # (B, T, D)
        for block in self.blocks:
            h = block(h)  # (B, T, D)
        h = self.ln_f(h)  # (B, T, D)
        return F.linear(h, self.tokens.weight)  # (B, T, V): the embedding, tied

    @torch.no_grad()
    def stream(
        self,
        prompt: str = "",
        max_new_tokens: int = 200,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Sample a continuation of ``prompt``, yielding each new piece of text as it comes.

        Args:
            prompt: The text to continue (its last ``context`` tokens are read); an empty
                prompt starts after a newline.
            max_new_tokens: Tokens to sample.
            temperature: Divides the logits; ``0`` picks the most likely token (greedy).
            top_k: Sample among the ``k`` most likely tokens only.
            top_p: Sample among the most likely tokens whose probabilities add up to
                ``top_p`` (nucleus sampling), in (0, 1].
            seed: The same seed gives the same text; ``None`` draws a fresh one.

        Yields:
            Text pieces: a character each (a byte-level model yields a multi-byte
            character once its last byte is sampled).
        """
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        device = self.tokens.weight.device
        start = self.tokenizer.encode(prompt or "\n") or [0]
        ids = torch.tensor([start], dtype=torch.long, device=device)  # (1, T)
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else random.SystemRandom().getrandbits(63))
        decoder = self.tokenizer.decoder()
        next(decoder)
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                logits = self(ids[:, -self.context :])[0, -1]  # (V,)
                if self.tokenizer.vocab is not None:  # never the unknown character
                    logits[-1] = float("-inf")
                token = sample_next(logits, temperature, top_k, top_p, generator)
                ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)  # (1, T + 1)
                piece = decoder.send(token)
                if piece:
                    yield piece
        finally:
            self.train(was_training)

    def generate(
        self,
        prompt: str = "",
        max_new_tokens: int = 200,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> str:
        """The continuation :meth:`stream` samples, as one string (the prompt excluded)."""
        return "".join(
            self.stream(prompt, max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, seed=seed)
        )  # fmt: skip


def check_sampling(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Refuse sampling settings that cannot work, with the range each one takes."""
    problems = []
    if max_new_tokens < 0:
        problems.append(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not temperature >= 0:
        problems.append(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        problems.append(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        problems.append(f"top_p must be in (0, 1] or None, got {top_p}")
    if problems:
        raise GenerationError("; ".join(problems) + ".")


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Draw one token id from next-token ``logits`` ``(V,)``.

    ``temperature == 0`` is greedy. Otherwise the logits are divided by ``temperature``,
    all but the ``top_k`` largest are dropped, then all but the smallest set of most
    likely tokens whose probability reaches ``top_p``; one id is drawn from the rest.
    """
    if temperature == 0:
        return int(logits.argmax())
    scaled = logits.float() / temperature  # (V,)
    if top_k is not None and top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        probs, order = torch.sort(scaled.softmax(dim=-1), descending=True)  # (V,), (V,)
        before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        drop = before >= top_p  # the first token is always kept
        scaled = scaled.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = scaled.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
