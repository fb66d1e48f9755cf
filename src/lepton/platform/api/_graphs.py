"""``/api/v1/graphs``: SPARQL over the knowledge graphs persisted under the server's home
(``lp.graph.create(name)``, ``LEPTON_HOME/graphs/<name>``).

A SPARQL endpoint is an attack surface, so it is split by role and bounded:

* ``GET /graphs`` and ``GET /graphs/{name}`` (viewer): the graphs, their asserted and
  inferred triple counts and loaded sources.
* ``POST /graphs/{name}/query`` (viewer): read-only SPARQL 1.1 (SELECT, ASK, CONSTRUCT,
  DESCRIBE), at most :data:`~lepton.serve._graph.MAX_QUERY_SECONDS` and
  :data:`~lepton.serve._graph.MAX_QUERY_ROWS`; an update form is refused, and so is
  ``SERVICE`` (no federation to other hosts). While :data:`MAX_RUNNING_QUERIES` queries
  run in this server (counting one stopped at its time limit that pyoxigraph is still
  finishing), another gets 503.
* ``POST /graphs/{name}/update`` (editor): a SPARQL 1.1 update (``INSERT DATA``,
  ``DELETE WHERE``, ...), applied atomically and written to the audit log; ``LOAD`` (it
  fetches a URL) and ``SERVICE`` are refused.

The store is opened for the request and closed after it (RocksDB locks its folder), so
a notebook or a job may open the same graph between two requests; while one holds it,
the API answers 409.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from lepton.errors import ConflictError, GraphError, GraphNotFoundError, OverloadedError
from lepton.platform._deps import P
from lepton.platform._http import allow
from lepton.serve._graph import MAX_QUERY_CHARS, QueryAnswer, QueryRequest

__all__ = ["MAX_RUNNING_QUERIES", "router"]

router = APIRouter(prefix="/api/v1")

GraphName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="A graph.")]
MAX_RUNNING_QUERIES = 2
_THREAD = "sparql-api-"  # run_query names a timed query's thread sparql-<its name>
_GATE = threading.Lock()
_ACTIVE = [0]  # query requests being answered (each runs at most one timed thread)


class GraphView(BaseModel):
    name: str
    namespace: str
    triples: int = Field(description="Asserted triples.")
    inferred: int = Field(description="Triples inferred by materialize(), kept apart.")
    sources: list[dict[str, Any]]
    created: str | None


class UpdateRequest(BaseModel):
    """A SPARQL 1.1 update."""

    model_config = ConfigDict(extra="forbid")

    update: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The update.")


class UpdateAnswer(BaseModel):
    graph: str
    triples_before: int
    triples_after: int


@contextmanager
def _opened(name: str, *, read_only: bool) -> Iterator[Any]:
    """Graph ``name`` of this server's home, opened for one request, closed after it."""
    from lepton.graph import Graph

    try:
        graph = Graph.open(name, read_only=read_only)
    except GraphNotFoundError:
        raise
    except GraphError as exc:  # RocksDB's lock: another process has it open
        raise ConflictError(
            f"graph {name!r} is open in another process (a notebook, a job): close it there "
            f"and retry ({exc.message})"
        ) from None
    try:
        yield graph
    finally:
        graph.close()  # the last reference goes: RocksDB closes


def _view(graph: Any) -> GraphView:
    meta = graph.meta
    return GraphView(
        name=graph.name, namespace=graph.namespace, triples=graph.count(),
        inferred=graph.count(inferred=True), sources=meta.get("sources", []),
        created=meta.get("created"),
    )  # fmt: skip


@router.get("/graphs", tags=["graphs"])
@allow("viewer")
def graphs(p: P) -> list[GraphView]:
    """The knowledge graphs persisted under the server's home."""
    from lepton.graph._home import list_graphs

    found = []
    for name in list_graphs():
        with _opened(name, read_only=True) as graph:
            found.append(_view(graph))
    return found


@router.get("/graphs/{name}", tags=["graphs"])
@allow("viewer")
def graph_info(p: P, name: GraphName) -> GraphView:
    """One graph: namespace, asserted and inferred triple counts, loaded sources."""
    with _opened(name, read_only=True) as graph:
        return _view(graph)


@router.post("/graphs/{name}/query", tags=["graphs"])
@allow("viewer")
def query(p: P, name: GraphName, request: QueryRequest) -> QueryAnswer:
    """Read-only SPARQL 1.1 over the graph (asserted + inferred triples), within a time
    and a row limit; updates and ``SERVICE`` are refused."""
    from lepton.graph._query import run_query

    with _GATE:
        threads = sum(1 for t in threading.enumerate() if t.name.startswith(_THREAD))
        # requests in flight, plus evaluations whose request was answered query_limit but
        # that pyoxigraph is still finishing (it cannot stop inside ORDER BY or COUNT)
        running = _ACTIVE[0] + max(0, threads - _ACTIVE[0])
        if running >= MAX_RUNNING_QUERIES:
            raise OverloadedError(
                f"{running} SPARQL queries are still running in this server; retry in a few "
                f"seconds, and narrow the query (LIMIT, a more specific pattern)",
                retry_after=request.timeout_s,
            )
        _ACTIVE[0] += 1
    try:
        with _opened(name, read_only=True) as graph:
            result = run_query(
                graph.store, request.query, namespace=graph.namespace,
                timeout=request.timeout_s, max_rows=request.max_rows, name=f"api-{name}",
            )  # fmt: skip
    finally:
        with _GATE:
            _ACTIVE[0] -= 1
    return QueryAnswer.model_validate(result.to_dict())


@router.post("/graphs/{name}/update", tags=["graphs"])
@allow("editor")
def update(p: P, name: GraphName, request: UpdateRequest) -> UpdateAnswer:
    """Apply a SPARQL 1.1 update atomically (editors only); ``LOAD`` and ``SERVICE``
    are refused."""
    with _opened(name, read_only=False) as graph:
        before = graph.count()
        graph.update(request.update)
        return UpdateAnswer(graph=name, triples_before=before, triples_after=graph.count())
