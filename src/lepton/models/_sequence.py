"""Text classifiers over ``(B, T)`` token ids: LSTM, GRU and Transformer encoders.

Sequences are right-padded with ``padding_idx``; padding never changes the logits
(packed sequences for the recurrent models, key padding masks for the Transformer).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from lepton.errors import ShapeError
from lepton.models._checks import ArgChecker, lengths_from_padding, token_batch
from lepton.models._registry import register_model

__all__ = ["GRUClassifier", "LSTMClassifier", "TransformerClassifier"]


class _RecurrentClassifier(nn.Module):
    """Embedding -> packed LSTM/GRU -> last hidden state(s) -> Dropout -> Linear."""

    def __init__(
        self,
        cell: Literal["LSTM", "GRU"],
        vocab_size: int,
        num_classes: int,
        embed_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        padding_idx: int,
    ) -> None:
        super().__init__()
        owner = f"{cell}Classifier"
        check = ArgChecker(owner, f"{owner}(vocab_size=20000, num_classes=2, hidden_size=128)")
        self.owner = owner
        self.vocab_size = check.int_("vocab_size", vocab_size, 2)
        check.int_("num_classes", num_classes, 2)
        check.int_("embed_dim", embed_dim, 1)
        check.int_("hidden_size", hidden_size, 1)
        check.int_("num_layers", num_layers, 1)
        check.bool_("bidirectional", bidirectional)
        p = check.fraction("dropout", dropout)
        self.padding_idx = check.int_("padding_idx", padding_idx, 0)
        if padding_idx >= vocab_size:
            raise check.fail(f"padding_idx must be < vocab_size={vocab_size}, got {padding_idx}")

        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        rnn_cls = nn.LSTM if cell == "LSTM" else nn.GRU
        self.rnn = rnn_cls(
            embed_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=p if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(p)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map token ids ``(B, T)`` to logits ``(B, num_classes)``."""
        x = token_batch(x, self.owner, self.vocab_size)  # (B, T)
        lengths = lengths_from_padding(x, self.padding_idx)  # (B,)
        packed = pack_padded_sequence(
            self.embedding(x), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, H)
        # The last layer's final state; forward and backward halves when bidirectional.
        last = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.rnn.bidirectional else h_n[-1]
        return self.fc(self.dropout(last))  # type: ignore[no-any-return]  # (B, num_classes)


@register_model("lstm")
class LSTMClassifier(_RecurrentClassifier):
    """LSTM text classifier over right-padded token ids ``(B, T)``.

    Args:
        vocab_size: Number of token ids (ids lie in ``[0, vocab_size)``).
        num_classes: Number of classes (>= 2).
        embed_dim: Size of the token embeddings.
        hidden_size: LSTM hidden size per direction.
        num_layers: Stacked LSTM layers.
        bidirectional: Also read the sequence backwards.
        dropout: Dropout between layers and before the classifier, in [0, 1).
        padding_idx: The id used for padding; its embedding stays zero.

    Example:
        >>> model = LSTMClassifier(vocab_size=100, num_classes=2)
        >>> model(torch.tensor([[5, 7, 9, 0, 0]])).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        padding_idx: int = 0,
    ) -> None:
        super().__init__(
            "LSTM", vocab_size, num_classes, embed_dim, hidden_size, num_layers,
            bidirectional, dropout, padding_idx,
        )  # fmt: skip


@register_model("gru")
class GRUClassifier(_RecurrentClassifier):
    """GRU text classifier over right-padded token ids ``(B, T)``; arguments as LSTMClassifier.

    Example:
        >>> model = GRUClassifier(vocab_size=100, num_classes=3, bidirectional=True)
        >>> model(torch.tensor([[5, 7, 9, 0, 0]])).shape
        torch.Size([1, 3])
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        padding_idx: int = 0,
    ) -> None:
        super().__init__(
            "GRU", vocab_size, num_classes, embed_dim, hidden_size, num_layers,
            bidirectional, dropout, padding_idx,
        )  # fmt: skip


@register_model("transformer")
class TransformerClassifier(nn.Module):
    """Transformer encoder text classifier with learned positions and masked mean pooling.

    Args:
        vocab_size: Number of token ids (ids lie in ``[0, vocab_size)``).
        num_classes: Number of classes (>= 2).
        d_model: Embedding and model width; divisible by ``nhead``.
        nhead: Attention heads.
        num_layers: Encoder layers.
        dim_feedforward: Hidden width of each feed-forward block.
        max_len: Longest sequence accepted (size of the positional table).
        dropout: Dropout inside the encoder, in [0, 1).
        padding_idx: The id used for padding; padded positions are masked out.

    Example:
        >>> model = TransformerClassifier(vocab_size=100, num_classes=2)
        >>> model(torch.tensor([[5, 7, 9, 0, 0]])).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        max_len: int = 512,
        dropout: float = 0.1,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        check = ArgChecker(
            "TransformerClassifier",
            "TransformerClassifier(vocab_size=20000, num_classes=2, d_model=64, nhead=4)",
        )
        self.vocab_size = check.int_("vocab_size", vocab_size, 2)
        check.int_("num_classes", num_classes, 2)
        check.int_("d_model", d_model, 1)
        check.int_("nhead", nhead, 1)
        if d_model % nhead:
            raise check.fail(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        check.int_("num_layers", num_layers, 1)
        check.int_("dim_feedforward", dim_feedforward, 1)
        self.max_len = check.int_("max_len", max_len, 1)
        p = check.fraction("dropout", dropout)
        self.padding_idx = check.int_("padding_idx", padding_idx, 0)
        if padding_idx >= vocab_size:
            raise check.fail(f"padding_idx must be < vocab_size={vocab_size}, got {padding_idx}")

        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.positions = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, p, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map token ids ``(B, T)`` with ``T <= max_len`` to logits ``(B, num_classes)``."""
        x = token_batch(x, "TransformerClassifier", self.vocab_size)  # (B, T)
        if x.shape[1] > self.max_len:
            raise ShapeError(
                f"TransformerClassifier got sequences of length {x.shape[1]} but max_len is "
                f"{self.max_len}; truncate the sequences or rebuild with max_len>={x.shape[1]}."
            )
        lengths = lengths_from_padding(x, self.padding_idx)  # (B,)
        positions = torch.arange(x.shape[1], device=x.device)  # (T,)
        keep = positions.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T), True for real tokens
        h = self.embedding(x) + self.positions(positions)  # (B, T, D)
        h = self.encoder(h, src_key_padding_mask=~keep)  # (B, T, D)
        weights = keep.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * weights).sum(dim=1) / weights.sum(dim=1)  # (B, D)
        return self.fc(pooled)  # type: ignore[no-any-return]  # (B, num_classes)
