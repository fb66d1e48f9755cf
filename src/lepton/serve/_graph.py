"""A registered graph embedding behind ``/predict_link``, ``/similar``, ``/query`` and
``/info``.

``lepton deploy nations@production`` (and a platform deployment of that version) serves a
:class:`GraphService` when the version's architecture is a knowledge-graph embedding
(``lp.graph.KGEModel``, ``"kg-embedding"``; the table in :mod:`lepton.serve._by_model`
decides). The version carries its entity and relation vocabularies and its known triples (train,
valid and test, as index triples in the safetensors file), so a replica needs nothing
but the registry:

* ``POST /predict_link`` ``{"head": "usa", "relation": "exports3", "k": 10,
  "exclude_known": false}``: the ``k`` most plausible tails, best first, with their
  scores and whether the triple is already known.
* ``POST /similar`` ``{"entity": "usa", "k": 10}``: the entities closest by cosine.
* ``POST /query`` ``{"query": "SELECT ...", "timeout_s": 2, "max_rows": 1000}``:
  read-only SPARQL 1.1 over the known triples, in an in-memory store opened read-only,
  through the same :func:`lepton.graph._query.run_query` as ``Graph.query`` (so the same
  refusals: updates, ``LOAD`` and ``SERVICE`` federation), within a time limit and a
  result-size limit (at most :data:`MAX_QUERY_SECONDS` and :data:`MAX_QUERY_ROWS`).
  Entities are ``<namespace>e/<label>`` and relations ``<namespace>r/<label>``; the
  prefixes ``e:`` and ``r:`` are declared for every query. A query stopped at its time
  limit may still finish an operator in the background (pyoxigraph cannot be cancelled
  inside ``ORDER BY`` or ``COUNT``), so while :data:`MAX_RUNNING_QUERIES` evaluations
  run, ``/query`` answers 503 ``overloaded`` with ``Retry-After``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from lepton.errors import (
    GraphError,
    OverloadedError,
    QueryLimitError,
    RequestError,
    ServingError,
    SparqlError,
)
from lepton.serve._by_model import architecture_name
from lepton.serve._handler import handler
from lepton.serve._service import Service

if TYPE_CHECKING:
    from lepton.graph import Embedding, Graph
    from lepton.storage import Database

__all__ = [
    "GRAPH_ARCHITECTURES",
    "MAX_QUERY_ROWS",
    "MAX_QUERY_SECONDS",
    "MAX_RUNNING_QUERIES",
    "GraphService",
    "LinkAnswer",
    "PredictLinkRequest",
    "QueryAnswer",
    "QueryRequest",
    "ScoredEntity",
    "SimilarEntitiesAnswer",
    "SimilarEntityRequest",
    "is_graph_model",
]

#: Architectures served by :class:`GraphService` (``lp.graph.KGEModel``).
GRAPH_ARCHITECTURES = frozenset({"kg-embedding"})
MAX_K = 1000
#: The most a ``/query`` may run and answer (a request may ask for less).
MAX_QUERY_SECONDS = 5.0
MAX_QUERY_ROWS = 10_000
MAX_QUERY_CHARS = 20_000
#: SPARQL evaluations running at once in this process, counting those whose caller was
#: answered ``query_limit`` but that pyoxigraph is still finishing (it cannot be stopped
#: inside an operator such as ``ORDER BY`` or ``COUNT``): past this, ``/query`` answers 503.
MAX_RUNNING_QUERIES = 2
_STORE = "served"  # the in-memory graph's name...
_THREAD = f"sparql-{_STORE}"  # ...in the name run_query gives a timed query's thread
Label = str


class PredictLinkRequest(BaseModel):
    """The most plausible tails of ``(head, relation, ?)``."""

    model_config = ConfigDict(extra="forbid")

    head: Label = Field(min_length=1, max_length=1000, description="The head entity's label.")
    relation: Label = Field(min_length=1, max_length=1000, description="The relation's label.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many tails.")
    exclude_known: bool = Field(
        default=False, description="Leave out tails that already form a known triple."
    )


class SimilarEntityRequest(BaseModel):
    """The entities closest to one entity."""

    model_config = ConfigDict(extra="forbid")

    entity: Label = Field(min_length=1, max_length=1000, description="The entity's label.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many entities.")


class QueryRequest(BaseModel):
    """A read-only SPARQL 1.1 query (SELECT, ASK, CONSTRUCT, DESCRIBE)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The SPARQL query.")
    timeout_s: float = Field(
        default=MAX_QUERY_SECONDS, gt=0, le=MAX_QUERY_SECONDS, description="Time limit."
    )
    max_rows: int = Field(
        default=1000, ge=0, le=MAX_QUERY_ROWS, description="Most rows (or triples) answered."
    )


class ScoredEntity(BaseModel):
    """One entity of an answer."""

    entity: Label
    score: float
    known: bool | None = None


class LinkAnswer(BaseModel):
    """The ``k`` most plausible tails of ``(head, relation, ?)``, best first."""

    head: Label
    relation: Label
    tails: list[ScoredEntity]


class SimilarEntitiesAnswer(BaseModel):
    """The entities closest to ``entity`` (cosine of their vectors)."""

    entity: Label
    entities: list[ScoredEntity]


class QueryAnswer(BaseModel):
    """A SPARQL answer: SELECT rows as ``{variable: value}``, CONSTRUCT/DESCRIBE rows as
    ``[subject, predicate, object]``, ASK as ``boolean``."""

    form: str
    variables: list[str]
    rows: list[Any]
    boolean: bool | None
    seconds: float


class GraphService(Service):
    """A registered graph-embedding version (``lp.graph.KGEModel``) as a service."""

    def __init__(self, ref: str, *, database: Database | None = None) -> None:
        self.ref = ref
        self.database = database

    def setup(self) -> None:
        from lepton.graph import Embedding, Graph
        from lepton.registry import load_model, resolve

        version = resolve(self.ref, database=self.database)
        self.version = version
        model: Any = load_model(version.ref, database=self.database)  # a KGEModel
        self.model = model
        self.embedding: Embedding = Embedding.from_model(model)
        self.entity_index = {e: i for i, e in enumerate(model.entities)}
        self.relation_index = {r: i for i, r in enumerate(model.relations)}
        self.triples: list[tuple[int, int, int]] = [tuple(t) for t in model.triples.tolist()]
        self.known_tails: dict[tuple[int, int], set[int]] = {}
        for h, r, t in self.triples:
            self.known_tails.setdefault((h, r), set()).add(t)
        self.namespace = f"http://lepton.local/model/{version.name}/"
        graph: Graph = Graph.memory(_STORE, namespace=self.namespace)
        ents, rels = model.entities, model.relations
        graph.load_rows([(ents[h], rels[r], ents[t]) for h, r, t in self.triples])
        graph.read_only = True  # /query may only read
        self.graph = graph
        self.prefixes = {"e": f"{self.namespace}e/", "r": f"{self.namespace}r/"}

    # -- lookups (also used by the dashboard page) ---------------------------------------
    def entity(self, label: str) -> int:
        """The index of entity ``label``, or a 404 ``unknown_entity``."""
        found = self.entity_index.get(label)
        if found is None:
            raise ServingError(
                f"entity {label!r} is not known to {self.version.ref}; it knows "
                f"{len(self.entity_index):,} entities, e.g. {self.model.entities[:3]}",
                status=404, code="unknown_entity",
            )  # fmt: skip
        return found

    def relation(self, label: str) -> int:
        """The index of relation ``label``, or a 404 ``unknown_relation``."""
        found = self.relation_index.get(label)
        if found is None:
            raise ServingError(
                f"relation {label!r} is not known to {self.version.ref}; it knows "
                f"{len(self.relation_index):,} relations, e.g. {self.model.relations[:3]}",
                status=404, code="unknown_relation",
            )  # fmt: skip
        return found

    def search(self, text: str, limit: int = 50) -> list[str]:
        """Entities whose label contains ``text`` (case-insensitive), those that start
        with it first."""
        needle = text.strip().lower()
        if not needle:
            return list(self.model.entities[:limit])
        hits = [e for e in self.model.entities if needle in e.lower()]
        hits.sort(key=lambda e: (not e.lower().startswith(needle), len(e), e))
        return hits[:limit]

    def neighbours(self, label: str, limit: int = 24) -> list[tuple[str, str, str]]:
        """Up to ``limit`` known triples that touch entity ``label``, as ``(direction,
        relation, other)`` with direction ``"out"`` (label is the head) or ``"in"``."""
        i = self.entity(label)
        ents, rels = self.model.entities, self.model.relations
        found: list[tuple[str, str, str]] = []
        for h, r, t in self.triples:
            if h == i:
                found.append(("out", rels[r], ents[t]))
            elif t == i:
                found.append(("in", rels[r], ents[h]))
            if len(found) >= limit:
                break
        return found

    def iri(self, label: str) -> str:
        """The IRI ``/query`` gives entity ``label``."""
        return self.graph.entity(label)

    # -- routes --------------------------------------------------------------------------
    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The served version: name, number, model, sizes, SPARQL prefixes and metrics."""
        m = self.model
        manifest = self.version.manifest
        return {
            "model": self.version.name,
            "version": self.version.version,
            "ref": self.version.ref,
            "kind": "graph-embedding",
            "embedding": m.kind,
            "dim": m.dim,
            "entities": len(m.entities),
            "relations": list(m.relations),
            "triples": len(self.triples),
            "namespace": self.namespace,
            "prefixes": self.prefixes,
            "limits": {"query_seconds": MAX_QUERY_SECONDS, "query_rows": MAX_QUERY_ROWS},
            "dataset": manifest.get("dataset"),
            "metrics": manifest.get("metrics"),
            "routes": ["/predict_link", "/similar", "/query"],
        }

    @handler(workers=2)
    def predict_link(self, request: PredictLinkRequest) -> LinkAnswer:
        """The ``k`` most plausible tails of ``(head, relation, ?)``, best first."""
        h, r = self.entity(request.head), self.relation(request.relation)
        known = self.known_tails.get((h, r), set())
        ents = self.model.entities
        exclude = [ents[t] for t in known] if request.exclude_known else []
        found = self.embedding.predict_tail(h, r, request.k, exclude=exclude)
        return LinkAnswer(
            head=request.head,
            relation=request.relation,
            tails=[
                ScoredEntity(entity=e, score=s, known=self.entity_index[e] in known)
                for e, s in found
            ],
        )

    @handler(workers=2)
    def similar(self, request: SimilarEntityRequest) -> SimilarEntitiesAnswer:
        """The ``k`` entities closest to ``entity`` (cosine of their vectors)."""
        found = self.embedding.similar(self.entity(request.entity), request.k)
        return SimilarEntitiesAnswer(
            entity=request.entity, entities=[ScoredEntity(entity=e, score=s) for e, s in found]
        )

    @handler(workers=2)
    def query(self, request: QueryRequest) -> QueryAnswer:
        """Read-only SPARQL over the known triples, within a time and a row limit."""
        from lepton.graph._query import UPDATE_FORMS
        from lepton.graph._sparql import query_form

        running = sum(1 for t in threading.enumerate() if t.name == _THREAD)
        if running >= MAX_RUNNING_QUERIES:
            raise OverloadedError(
                f"{running} SPARQL queries are still running here (a query stopped at its "
                f"time limit may finish in the background); retry in a few seconds, and "
                f"narrow the query (LIMIT, a more specific pattern)",
                retry_after=MAX_QUERY_SECONDS,
            )
        form = query_form(request.query)
        if form in UPDATE_FORMS:
            raise RequestError(
                f"/query is read-only and this is an update ({form}): a served version's "
                f"triples never change; change a graph with lp.graph and register a new version",
                code=SparqlError.code,
            )
        try:
            result = self.graph.query(
                request.query, timeout=request.timeout_s, max_rows=request.max_rows,
                prefixes=self.prefixes,
            )  # fmt: skip
        except QueryLimitError as exc:
            raise ServingError(exc.message, status=422, code=exc.code) from None
        except SparqlError as exc:
            raise RequestError(exc.message, code=exc.code) from None
        except GraphError as exc:
            raise RequestError(exc.message, code=exc.code) from None
        answer = result.to_dict()
        return QueryAnswer.model_validate(answer)


def is_graph_model(manifest: dict[str, Any]) -> bool:
    """Whether a version's manifest names a graph-embedding architecture."""
    return architecture_name(manifest) in GRAPH_ARCHITECTURES
