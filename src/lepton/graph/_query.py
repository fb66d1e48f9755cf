"""Running SPARQL on a pyoxigraph store with limits: :class:`QueryResult`,
:func:`run_query` and :func:`run_update`.

:class:`~lepton.graph.Graph` delegates its ``query``/``update`` here, and a served graph
model (``lepton.serve._graph``) runs its read-only ``/query`` through the same
:func:`run_query`, so both refuse the same things: ``SERVICE`` (federation to other
hosts), updates sent as queries, ``LOAD`` (it fetches a URL).

Limits: ``timeout=`` and ``max_rows=`` stop a query that runs too long or answers too
many rows with :class:`~lepton.errors.QueryLimitError`. pyoxigraph cannot cancel an
evaluation from outside, so a timed query runs on a worker thread that the caller stops
waiting for at the deadline; the worker checks the deadline between result rows and
gives up there (an operator that must see all its input first, such as ``ORDER BY``,
finishes that step in the background before it notices).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyoxigraph as ox

from lepton.errors import GraphError, QueryLimitError, SparqlError
from lepton.graph._sparql import check_no_service, python_value, query_form

__all__ = ["UPDATE_FORMS", "QueryResult", "check_query", "run_query", "run_update"]

#: The SPARQL keywords that start an update (anything else is a query form).
UPDATE_FORMS = frozenset(
    {"INSERT", "DELETE", "LOAD", "CLEAR", "CREATE", "DROP", "COPY", "MOVE", "ADD"}
)


@dataclass
class QueryResult:
    """The answer to a SPARQL query.

    Attributes:
        form: ``"SELECT"``, ``"ASK"``, ``"CONSTRUCT"`` or ``"DESCRIBE"``.
        variables: The SELECT variables, in order (empty for the other forms).
        rows: SELECT: one dict per solution, ``{variable: value}`` (unbound: ``None``);
            CONSTRUCT/DESCRIBE: one ``(subject, predicate, object)`` tuple per triple.
        boolean: The answer of an ASK query (``None`` for the other forms).
        seconds: Wall time of the query.
    """

    form: str
    variables: list[str] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)
    boolean: bool | None = None
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def __bool__(self) -> bool:
        return bool(self.boolean) if self.form == "ASK" else bool(self.rows)

    def column(self, variable: str) -> list[Any]:
        """One SELECT variable's values, in row order."""
        if variable not in self.variables:
            raise GraphError(f"no variable {variable!r} in the result; it has {self.variables}")
        return [row[variable] for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what an HTTP route would answer)."""
        rows = [list(r) if isinstance(r, tuple) else r for r in self.rows]
        return {"form": self.form, "variables": self.variables, "rows": rows,
                "boolean": self.boolean, "seconds": self.seconds}  # fmt: skip


def check_query(sparql: str) -> str:
    """The query form of ``sparql``, after refusing ``SERVICE`` and updates.

    Raises:
        SparqlError: A ``SERVICE`` clause, or an update (``INSERT``, ``LOAD``, ...).
    """
    check_no_service(sparql)
    form = query_form(sparql)
    if form in UPDATE_FORMS:
        raise SparqlError(f"query() runs queries, and this is an update ({form}); use update()")
    return form


def run_query(
    store: ox.Store,
    sparql: str,
    *,
    namespace: str,
    timeout: float | None = None,
    max_rows: int | None = None,
    inferred: bool = True,
    prefixes: dict[str, str] | None = None,
    name: str = "graph",
) -> QueryResult:
    """Run a SPARQL 1.1 query (SELECT, ASK, CONSTRUCT or DESCRIBE) on ``store``.

    Args:
        store: The pyoxigraph store.
        sparql: The query.
        namespace: The base IRI of relative IRIs in the query.
        timeout: Seconds before :class:`~lepton.errors.QueryLimitError` (``None``:
            no limit).
        max_rows: Most rows (solutions or triples) the answer may have; more raise
            :class:`~lepton.errors.QueryLimitError` (``None``: no limit).
        inferred: Let the default graph be the union of every graph (asserted +
            inferred triples); ``False``: the default graph only.
        prefixes: Extra ``PREFIX`` declarations, ``{"ex": "http://example.org/"}``.
        name: Names the worker thread of a timed query.

    Raises:
        SparqlError: A syntax error, an update, or a ``SERVICE`` clause.
        QueryLimitError: Past ``timeout`` or ``max_rows``.
    """
    check_query(sparql)
    if timeout is not None and not timeout > 0:
        raise GraphError(f"timeout must be > 0 seconds or None, got {timeout}")
    if max_rows is not None and max_rows < 0:
        raise GraphError(f"max_rows must be >= 0 or None, got {max_rows}")
    started = time.perf_counter()
    stop = threading.Event()
    job = _Query(store, sparql, namespace, prefixes, inferred, max_rows, stop)
    result = job.run(None) if timeout is None else _run_timed(job, timeout, name)
    result.seconds = time.perf_counter() - started
    return result


def _run_timed(job: _Query, timeout: float, name: str) -> QueryResult:
    box: dict[str, Any] = {}
    deadline = time.perf_counter() + timeout

    def work() -> None:
        try:
            box["result"] = job.run(deadline)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"sparql-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        job.stop.set()
        raise QueryLimitError(
            f"the query ran past its time limit of {timeout:g} s and was stopped; narrow "
            f"it (LIMIT, a more specific pattern) or raise timeout="
        )
    if "error" in box:
        raise box["error"]
    result: QueryResult = box["result"]
    return result


@dataclass
class _Query:
    store: ox.Store
    sparql: str
    namespace: str
    prefixes: dict[str, str] | None
    inferred: bool
    max_rows: int | None
    stop: threading.Event

    def run(self, deadline: float | None) -> QueryResult:
        try:
            answer = self.store.query(
                self.sparql, prefixes=self.prefixes, use_default_graph_as_union=self.inferred,
                base_iri=self.namespace,
            )  # fmt: skip
        except SyntaxError as exc:
            raise SparqlError(f"the query does not parse: {exc}") from None
        except OSError as exc:
            raise SparqlError(f"the query failed: {exc}") from None
        if isinstance(answer, ox.QueryBoolean):
            return QueryResult("ASK", boolean=bool(answer))
        rows: list[Any] = []
        if isinstance(answer, ox.QuerySolutions):
            variables = [v.value for v in answer.variables]
            out = QueryResult("SELECT", variables=variables, rows=rows)
            items: Iterable[Any] = answer
            convert: Any = lambda s: {v: python_value(s[v]) for v in variables}  # noqa: E731
        else:
            out = QueryResult(query_form(self.sparql) or "CONSTRUCT", rows=rows)
            items = answer
            convert = lambda t: (  # noqa: E731
                python_value(t.subject),
                python_value(t.predicate),
                python_value(t.object),
            )
        max_rows = self.max_rows
        try:
            for item in items:
                if self.stop.is_set() or (deadline is not None and time.perf_counter() > deadline):
                    raise QueryLimitError(
                        "the query ran past its time limit and was stopped; narrow it or "
                        "raise timeout="
                    )
                if max_rows is not None and len(rows) >= max_rows:
                    raise QueryLimitError(
                        f"the query answers more than max_rows={max_rows} rows; add a LIMIT, "
                        f"narrow the pattern, or raise max_rows="
                    )
                rows.append(convert(item))
        except OSError as exc:
            raise SparqlError(f"the query failed: {exc}") from None
        finally:
            # pyoxigraph's result iterators must be dropped on the thread that made them
            # (a timed query's worker): no frame or traceback may keep them alive
            del items, answer
        return out


def run_update(
    store: ox.Store, sparql: str, *, namespace: str, prefixes: dict[str, str] | None = None
) -> None:
    """Run a SPARQL 1.1 update on ``store``, atomically.

    Raises:
        SparqlError: A syntax error, a query form, a ``SERVICE`` clause, or ``LOAD``
            (which would fetch a URL).
    """
    check_no_service(sparql)
    form = query_form(sparql)
    if form == "LOAD":
        raise SparqlError(
            "LOAD is refused: it fetches a URL from another host; download the file "
            "and use Graph.load(path)"
        )
    if form and form not in UPDATE_FORMS:
        raise SparqlError(f"update() runs updates, and this is a {form} query; use query()")
    try:
        store.update(sparql, prefixes=prefixes, base_iri=namespace)
    except SyntaxError as exc:
        raise SparqlError(f"the update does not parse: {exc}") from None
    except OSError as exc:
        raise SparqlError(f"the update failed: {exc}") from None
