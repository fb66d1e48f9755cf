"""The MiniLM sentence classifier as one ``nn.Module``: token ids in, class logits out.

``encoder -> mean pooling -> L2 normalisation -> linear head``. With the encoder frozen and
the head fitted by logistic regression it is ``TextClassifier(encoder="minilm")``; trained
end to end through ``lp.fit`` it is ``encoder="transformer"``. Registered as
``"text-classifier"``, so ``lp.register`` stores it (safetensors) and ``lp.load_model``
rebuilds it; the tokenizer is the packaged one, checked by hash.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lepton.models import register_model
from lepton.text._encoder import BertConfig, BertEncoder, _Layer, load_minilm, mean_pool

__all__ = ["MiniLMClassifier"]


@register_model("text-classifier")
class MiniLMClassifier(nn.Module):
    """Sentence classifier on a BERT encoder.

    Args:
        num_classes: Number of classes.
        dropout: Dropout of the encoder and before the head while training.
        pretrained: Start from the packaged all-MiniLM-L6-v2 weights (else random; the
            registry builds it this way, then loads the stored weights).

    Input: (B, L) int64 token ids, 0 = padding. Output: (B, num_classes) logits.
    """

    def __init__(self, num_classes: int = 2, dropout: float = 0.1, pretrained: bool = False):
        super().__init__()
        if pretrained:
            self.encoder, _ = load_minilm()
            for m in self.encoder.modules():
                if isinstance(m, nn.Dropout):
                    m.p = dropout
                if isinstance(m, _Layer):
                    m.p_attn = dropout
        else:
            self.encoder = BertEncoder(BertConfig(dropout=dropout))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.config.hidden, num_classes)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, H) unit sentence vectors (padding beyond the batch's longest
        text is cut first, so a globally padded batch costs what its texts cost)."""
        mask = ids != 0  # (B, L)
        longest = int(mask.sum(1).max().clamp(min=1))
        ids, mask = ids[:, :longest], mask[:, :longest]
        return F.normalize(mean_pool(self.encoder(ids, mask), mask), dim=-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 ids -> (B, num_classes) logits."""
        logits: torch.Tensor = self.head(self.drop(self.embed(ids)))
        return logits
