"""Checks at the boundary of ``lepton.text``: what counts as a list of texts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lepton.errors import TextError

__all__ = ["check_texts"]


def check_texts(texts: Any, what: str = "texts") -> list[str]:
    """``texts`` as a list of strings, or a :class:`TextError` that shows a correct call."""
    if isinstance(texts, str):
        raise TextError(f"{what} must be a list of strings, got one str; wrap it: [{texts!r:.40}]")
    if hasattr(texts, "texts") and not isinstance(texts, dict):  # a TextDataset
        texts = texts.texts
    if not isinstance(texts, Iterable):
        raise TextError(f"{what} must be a list of strings, got {type(texts).__name__}")
    items = list(texts)
    bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
    if bad is not None:
        raise TextError(
            f"{what}[{bad}] is a {type(items[bad]).__name__}, not a str; pass strings, e.g. "
            f"[str(x) for x in {what}]"
        )
    return items
