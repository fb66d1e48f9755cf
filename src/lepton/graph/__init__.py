"""Knowledge graphs on Lepton: an RDF store with SPARQL, reasoning and embeddings.

- **Store**: :class:`Graph`, an embedded RDF store (pyoxigraph) per graph under
  ``LEPTON_HOME/graphs/<name>``: import N-Triples, Turtle or ``head,relation,tail`` CSV;
  SPARQL 1.1 query (with time and result-size limits) and update; ``SERVICE`` refused;
  a read-only mode.
- **Data**: WordNet 3.0 (Debian ``wordnet-base``, parsed here) and the Nations, Kinships
  and UMLS link-prediction splits (files of PyPI ``pykeen``).
- **Reasoning**: RDFS and OWL RL's transitive, symmetric and inverse-property rules,
  materialized to a fixpoint into a separate named graph (:data:`INFERRED`).
- **Embeddings**: TransE, DistMult, ComplEx, RotatE trained with ``lp.fit``; filtered
  MRR and Hits@k, link prediction and entity similarity.
- **Platform**: :mod:`lepton.graph.recipe` (``lepton graph train``, a ``graph`` job)
  trains, ranks and registers one (``lp.register``: weights, vocabularies and known
  triples in safetensors); :func:`load` brings a registered version back, and
  ``lepton deploy`` serves it (``/predict_link``, ``/similar``, read-only ``/query``).

Example:
    >>> import lepton as lp
    >>> g = lp.graph.create("wordnet")  # doctest: +SKIP
    >>> lp.graph.add_wordnet(g)  # doctest: +SKIP
    >>> g.query("SELECT ?s WHERE { ?s ?p ?o } LIMIT 3", timeout=2).rows  # doctest: +SKIP
    >>> data = lp.graph.load_triples("nations")  # doctest: +SKIP
    >>> emb = lp.graph.Embedding("transe").fit(data)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from lepton.graph._data import (
    TRIPLE_DATASETS,
    Synset,
    TripleSplits,
    WordNet,
    load_triples,
    load_wordnet,
)
from lepton.graph._embed import Embedding, rank_metrics
from lepton.graph._load import add_triples, add_wordnet
from lepton.graph._models import KGEModel
from lepton.graph._reason import RULES, materialize
from lepton.graph._store import (
    INFERRED,
    Graph,
    QueryResult,
    create,
    delete,
    graphs_dir,
    list_graphs,
    open_graph,
)

__all__ = [
    "INFERRED",
    "RULES",
    "TRIPLE_DATASETS",
    "Embedding",
    "Graph",
    "KGEModel",
    "QueryResult",
    "Synset",
    "TripleSplits",
    "WordNet",
    "add_triples",
    "add_wordnet",
    "create",
    "delete",
    "graphs_dir",
    "list_graphs",
    "load",
    "load_triples",
    "load_wordnet",
    "materialize",
    "open",
    "open_graph",
    "rank_metrics",
]

open = open_graph


def load(ref: str, **kwargs: Any) -> Embedding:
    """A registered graph embedding (``"name:3"``, ``"name@production"``, ``"name"``) as
    an :class:`Embedding`; the same as ``Embedding.from_model(lp.load_model(ref))``."""
    from lepton.registry import load_model

    return Embedding.from_model(load_model(ref, **kwargs))  # type: ignore[arg-type]
