"""Putting the packaged datasets into a :class:`~lepton.graph.Graph`.

WordNet synsets become ``<namespace>e/<synset id>`` IRIs with an ``rdfs:label`` (their
first word, underscores as spaces) and relations ``<namespace>r/<relation>``; a triple
dataset's labels go through :meth:`Graph.load_rows`, so its IRIs match the ones CSV
imports give.
"""

from __future__ import annotations

from collections.abc import Iterable

from lepton.errors import GraphError
from lepton.graph._data import TripleSplits, WordNet, load_wordnet
from lepton.graph._store import Graph

__all__ = ["add_triples", "add_wordnet"]

_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def add_wordnet(
    graph: Graph,
    wordnet: WordNet | None = None,
    *,
    relations: Iterable[str] | None = None,
    lexical: bool = True,
    labels: bool = True,
) -> int:
    """Add WordNet to ``graph``; returns the number of triples the store gained.

    Args:
        wordnet: A parsed WordNet (default: :func:`load_wordnet`).
        relations: Only these relation names (default: all).
        lexical: Keep lexical (word-to-word) pointers, at synset level.
        labels: Add an ``rdfs:label`` per synset.
    """
    graph._writable("add_wordnet")
    wn = wordnet or load_wordnet()
    keep = set(relations) if relations is not None else None
    if keep is not None:
        unknown = keep - {r for _, r, _, _ in wn.relations}
        if unknown:
            raise GraphError(f"WordNet has no relations {sorted(unknown)}; see WordNet.counts()")
    lines: list[str] = []
    for s, r, t, is_lexical in wn.relations:
        if (keep is None or r in keep) and (lexical or not is_lexical):
            lines.append(f"<{graph.entity(s)}> <{graph.relation(r)}> <{graph.entity(t)}> .")
    if labels:
        for sid, synset in wn.synsets.items():
            lines.append(f"<{graph.entity(sid)}> <{_LABEL}> "
                         f"{_literal(synset.words[0].replace('_', ' '))} .")  # fmt: skip
    before = graph.count()
    import pyoxigraph as ox

    graph.store.load("\n".join(lines).encode(), ox.RdfFormat.N_TRIPLES)
    gained = graph.count() - before
    graph._note_source(f"wordnet:{wn.folder}", gained)
    return gained


def add_triples(graph: Graph, data: TripleSplits, *, splits: Iterable[str] = ("train",)) -> int:
    """Add the label triples of some splits (``"train"``, ``"valid"``, ``"test"``) of a
    triple dataset; returns the number of rows added."""
    rows: list[tuple[str, str, str]] = []
    for name in splits:
        if name not in ("train", "valid", "test"):
            raise GraphError(f"unknown split {name!r}; choose from train, valid, test")
        rows.extend(data.labels(getattr(data, name)))
    return graph.load_rows(rows)
