"""``Graph``: one embedded RDF store (pyoxigraph) per graph, under ``LEPTON_HOME/graphs``.

A graph lives in ``LEPTON_HOME/graphs/<name>/``: the RocksDB store (``store/``) and a
small manifest (``graph.json``: its namespace, when it was made, what was loaded). The
triples a user asserts go to the store's default graph; what the reasoner infers goes to
the named graph :data:`INFERRED` so it can be dropped and recomputed
(:meth:`Graph.drop_inferred`). Queries see both unless told otherwise.

Limits: ``query(..., timeout=, max_rows=)`` stops a query that runs too long or answers
too many rows with :class:`~lepton.errors.QueryLimitError`. pyoxigraph cannot cancel an
evaluation from outside, so a timed query runs on a worker thread that the caller stops
waiting for at the deadline; the worker checks the deadline between result rows and
gives up there (an operator that must see all its input first, such as ``ORDER BY``,
finishes that step in the background before it notices).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyoxigraph as ox

from lepton._fs import atomic_write_bytes, private_dir
from lepton.config import get_settings
from lepton.errors import (
    GraphError,
    GraphNotFoundError,
    GraphReadOnlyError,
    QueryLimitError,
    SparqlError,
)
from lepton.graph._sparql import check_no_service, python_value, query_form

__all__ = [
    "INFERRED",
    "Graph",
    "QueryResult",
    "create",
    "delete",
    "graphs_dir",
    "list_graphs",
    "open_graph",
]

#: The named graph that holds inferred triples (never asserted ones).
INFERRED = "urn:lepton:inferred"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_UPDATE_FORMS = {"INSERT", "DELETE", "LOAD", "CLEAR", "CREATE", "DROP", "COPY", "MOVE", "ADD"}
_FORMATS = {
    ".nt": ox.RdfFormat.N_TRIPLES,
    ".ntriples": ox.RdfFormat.N_TRIPLES,
    ".ttl": ox.RdfFormat.TURTLE,
    ".turtle": ox.RdfFormat.TURTLE,
}
_FORMAT_NAMES = {"nt": ".nt", "ntriples": ".nt", "n-triples": ".nt", "ttl": ".ttl",
                 "turtle": ".ttl", "csv": ".csv"}  # fmt: skip

# One pyoxigraph Store per folder and process: RocksDB locks its folder, so a second
# open of the same graph (read-only or not) shares the first one's store.
_OPEN: dict[Path, ox.Store] = {}
_OPEN_LOCK = threading.Lock()


def graphs_dir() -> Path:
    """``LEPTON_HOME/graphs``: where every graph's folder is."""
    return get_settings().home / "graphs"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise GraphError(
            f"graph name {name!r} is not valid: use 1-64 lowercase letters, digits, '_', '.' "
            f"or '-', starting with a letter or digit (e.g. 'wordnet')"
        )
    return name


def _store_at(folder: Path) -> ox.Store:
    with _OPEN_LOCK:
        store = _OPEN.get(folder)
        if store is None:
            try:
                store = ox.Store(str(folder))
            except OSError as exc:
                raise GraphError(f"cannot open the graph store at {folder}: {exc}") from None
            _OPEN[folder] = store
        return store


def _forget(folder: Path) -> None:
    with _OPEN_LOCK:
        _OPEN.pop(folder, None)


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


class Graph:
    """A knowledge graph: an RDF store with SPARQL 1.1, imports and reasoning.

    Open one with :meth:`open` / :func:`create` (persisted under ``LEPTON_HOME``) or
    :meth:`memory` (in memory, gone with the object).

    Args:
        store: The pyoxigraph store.
        name: The graph's name.
        namespace: Prefix of the IRIs made for CSV rows and dataset entities.
        folder: Where it is persisted (``None`` in memory).
        read_only: Refuse updates, loads and materialization.

    Example:
        >>> g = Graph.memory("demo")
        >>> g.load_rows([("alice", "knows", "bob")])
        1
        >>> g.query("SELECT ?o WHERE { ?s ?p ?o }").column("o")
        ['http://lepton.local/graph/demo/e/bob']
    """

    def __init__(
        self,
        store: ox.Store,
        name: str,
        *,
        namespace: str,
        folder: Path | None = None,
        read_only: bool = False,
    ) -> None:
        self.store, self.name, self.namespace = store, name, namespace
        self.folder, self.read_only = folder, read_only

    def __repr__(self) -> str:
        where = str(self.folder) if self.folder else "memory"
        mode = ", read_only" if self.read_only else ""
        return f"Graph({self.name!r}, {where}{mode})"

    # -- opening -----------------------------------------------------------------
    @staticmethod
    def default_namespace(name: str) -> str:
        return f"http://lepton.local/graph/{name}/"

    @classmethod
    def memory(cls, name: str = "memory", namespace: str | None = None) -> Graph:
        """A graph in memory (not persisted): for tests and one-off work."""
        _check_name(name)
        return cls(ox.Store(), name, namespace=namespace or cls.default_namespace(name))

    @classmethod
    def create(cls, name: str, *, namespace: str | None = None, exist_ok: bool = False) -> Graph:
        """Make a new persisted graph ``LEPTON_HOME/graphs/<name>``.

        Raises:
            GraphError: The name is not valid, or the graph exists and ``exist_ok`` is
                false.
        """
        _check_name(name)
        folder = graphs_dir() / name
        if (folder / "graph.json").exists():
            if exist_ok:
                return cls.open(name)
            raise GraphError(
                f"a graph named {name!r} already exists; open it with lp.graph.open({name!r}) "
                f"or delete it with lp.graph.delete({name!r})"
            )
        get_settings().ensure_home()
        private_dir(graphs_dir())
        private_dir(folder)
        ns = namespace or cls.default_namespace(name)
        meta = {"name": name, "namespace": ns,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "sources": []}  # fmt: skip
        store = _store_at(folder / "store")
        atomic_write_bytes(folder / "graph.json", json.dumps(meta, indent=2).encode())
        return cls(store, name, namespace=ns, folder=folder)

    @classmethod
    def open(cls, name: str, *, read_only: bool = False) -> Graph:
        """Open an existing persisted graph.

        Raises:
            GraphNotFoundError: No graph has that name.
        """
        _check_name(name)
        folder = graphs_dir() / name
        if not (folder / "graph.json").exists():
            have = list_graphs()
            raise GraphNotFoundError(
                f"no graph named {name!r} in {graphs_dir()} (graphs: {have or 'none'}); "
                f"make it with lp.graph.create({name!r})"
            )
        meta = json.loads((folder / "graph.json").read_text(encoding="utf-8"))
        store = _store_at(folder / "store")
        return cls(store, name, namespace=meta["namespace"], folder=folder, read_only=read_only)

    @property
    def meta(self) -> dict[str, Any]:
        """The manifest (``graph.json``): namespace, creation time, loaded sources."""
        if self.folder is None:
            return {"name": self.name, "namespace": self.namespace, "sources": []}
        meta: dict[str, Any] = json.loads((self.folder / "graph.json").read_text("utf-8"))
        return meta

    def _note_source(self, source: str, triples: int) -> None:
        if self.folder is None:
            return
        meta = self.meta
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        meta["sources"].append({"source": source, "triples": triples, "at": now})
        atomic_write_bytes(self.folder / "graph.json", json.dumps(meta, indent=2).encode())

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise GraphReadOnlyError(
                f"graph {self.name!r} is open read-only, so {what} is refused; open it with "
                f"lp.graph.open({self.name!r}, read_only=False) to change it"
            )

    def flush(self) -> None:
        """Write pending changes to disk (the store also does this on its own)."""
        if self.folder is not None:
            self.store.flush()

    # -- IRIs --------------------------------------------------------------------
    def entity(self, label: str) -> str:
        """The IRI this graph gives an entity label from a CSV row or a dataset."""
        return f"{self.namespace}e/{quote(str(label), safe='')}"

    def relation(self, label: str) -> str:
        """The IRI this graph gives a relation label."""
        return f"{self.namespace}r/{quote(str(label), safe='')}"

    def label(self, iri: str) -> str:
        """The label back from an entity or relation IRI of this graph (else the IRI)."""
        from urllib.parse import unquote

        for kind in ("e/", "r/"):
            if iri.startswith(self.namespace + kind):
                return unquote(iri[len(self.namespace) + 2 :])
        return iri

    # -- counting ----------------------------------------------------------------
    def __len__(self) -> int:
        """Asserted triples (the default graph)."""
        return self.count()

    def count(self, *, inferred: bool = False) -> int:
        """Triples in the default graph, or (``inferred=True``) in the inferred graph."""
        graph = ox.NamedNode(INFERRED) if inferred else ox.DefaultGraph()
        return sum(1 for _ in self.store.quads_for_pattern(None, None, None, graph))

    # -- loading -----------------------------------------------------------------
    def load(
        self,
        source: str | Path | bytes,
        *,
        format: str | None = None,
        base_iri: str | None = None,
        header: bool = True,
    ) -> int:
        """Import triples from a file (or bytes) and return how many the store gained.

        Args:
            source: A path to a ``.nt``, ``.ttl`` or ``.csv`` file, or the data as bytes.
            format: ``"nt"``, ``"ttl"`` or ``"csv"``; by default from the file suffix.
            base_iri: Base for relative IRIs in Turtle (default: the graph's namespace).
            header: CSV only: the first row names the columns ``head,relation,tail``
                (in any order); without a header the columns are taken in that order.

        Raises:
            GraphError: An unknown format, or data that does not parse.
            GraphReadOnlyError: The graph is open read-only.
        """
        self._writable("load")
        if format is not None and format.lower() not in _FORMAT_NAMES:
            raise GraphError(f"cannot tell the format {format!r}; pass format='nt', 'ttl' or 'csv'")
        if isinstance(source, bytes):
            data, suffix = source, _FORMAT_NAMES.get((format or "").lower(), "")
            if not suffix:
                raise GraphError("loading bytes needs format='nt', 'ttl' or 'csv'")
            label = f"<{len(source)} bytes>"
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                raise GraphError(f"no file {path}; give the path of a .nt, .ttl or .csv file")
            suffix = _FORMAT_NAMES.get((format or "").lower(), path.suffix.lower())
            data, label = path.read_bytes(), str(path)
        before = self.count()
        if suffix == ".csv":
            self._load_csv(data.decode("utf-8-sig"), header=header)
        elif suffix in _FORMATS:
            try:
                self.store.load(data, _FORMATS[suffix], base_iri=base_iri or self.namespace)
            except SyntaxError as exc:
                raise GraphError(f"{label} is not valid {_FORMATS[suffix]}: {exc}") from None
        else:
            raise GraphError(
                f"cannot tell the format of {label} (suffix {suffix or 'none'}); pass "
                f"format='nt', 'ttl' or 'csv'"
            )
        gained = self.count() - before
        self._note_source(label, gained)
        return gained

    def _load_csv(self, text: str, *, header: bool) -> None:
        reader = csv.reader(io.StringIO(text))
        order = (0, 1, 2)
        if header:
            first = next(reader, None)
            names = [c.strip().lower() for c in first] if first else []
            if not {"head", "relation", "tail"} <= set(names):
                raise GraphError(
                    f"a triples CSV needs the columns head,relation,tail; its header is "
                    f"{first}; rename them, or pass header=False when the file has none"
                )
            order = (names.index("head"), names.index("relation"), names.index("tail"))
        rows = []
        for n, row in enumerate(reader, 2 if header else 1):
            if not row:
                continue
            if len(row) <= max(order):
                raise GraphError(f"CSV line {n} has {len(row)} columns, fewer than 3: {row}")
            rows.append((row[order[0]], row[order[1]], row[order[2]]))
        self.load_rows(rows, _note=False)

    def load_rows(
        self, rows: Iterable[tuple[str, str, str]], *, graph: str | None = None, _note: bool = True
    ) -> int:
        """Add ``(head, relation, tail)`` label triples as IRIs under the graph's namespace
        (:meth:`entity`, :meth:`relation`); returns the number of rows given."""
        self._writable("load_rows")
        target = ox.NamedNode(graph) if graph else ox.DefaultGraph()
        ents: dict[str, ox.NamedNode] = {}
        rels: dict[str, ox.NamedNode] = {}

        def node(cache: dict[str, ox.NamedNode], make: Any, label: str) -> ox.NamedNode:
            found = cache.get(label)
            if found is None:
                found = cache[label] = ox.NamedNode(make(label))
            return found

        quads = [
            ox.Quad(
                node(ents, self.entity, h),
                node(rels, self.relation, r),
                node(ents, self.entity, t),
                target,
            )
            for h, r, t in rows
        ]
        self.store.extend(quads)
        if _note:
            self._note_source(f"<{len(quads)} rows>", len(quads))
        return len(quads)

    def add_iris(self, triples: Iterable[tuple[str, str, str]], *, graph: str | None = None) -> int:
        """Add triples of full IRIs (no literals); returns how many were given."""
        self._writable("add_iris")
        target = ox.NamedNode(graph) if graph else ox.DefaultGraph()
        quads = [
            ox.Quad(ox.NamedNode(s), ox.NamedNode(p), ox.NamedNode(o), target)
            for s, p, o in triples
        ]
        self.store.extend(quads)
        return len(quads)

    def dump(self, path: str | Path, *, inferred: bool = False) -> Path:
        """Write the asserted (or the inferred) triples to an N-Triples file."""
        graph = ox.NamedNode(INFERRED) if inferred else ox.DefaultGraph()
        out = Path(path).expanduser()
        self.store.dump(str(out), ox.RdfFormat.N_TRIPLES, from_graph=graph)
        return out

    # -- SPARQL ------------------------------------------------------------------
    def query(
        self,
        sparql: str,
        *,
        timeout: float | None = None,
        max_rows: int | None = None,
        inferred: bool = True,
        prefixes: dict[str, str] | None = None,
    ) -> QueryResult:
        """Run a SPARQL 1.1 query (SELECT, ASK, CONSTRUCT or DESCRIBE).

        Args:
            sparql: The query.
            timeout: Seconds before :class:`~lepton.errors.QueryLimitError` (``None``:
                no limit).
            max_rows: Most rows (solutions or triples) the answer may have; more raise
                :class:`~lepton.errors.QueryLimitError` (``None``: no limit).
            inferred: Let the default graph be asserted + inferred triples (default);
                ``False``: asserted triples only.
            prefixes: Extra ``PREFIX`` declarations, ``{"ex": "http://example.org/"}``.

        Raises:
            SparqlError: A syntax error, an update, or a ``SERVICE`` clause.
            QueryLimitError: Past ``timeout`` or ``max_rows``.
        """
        check_no_service(sparql)
        form = query_form(sparql)
        if form in _UPDATE_FORMS:
            raise SparqlError(f"query() runs queries, and this is an update ({form}); use update()")
        if timeout is not None and not timeout > 0:
            raise GraphError(f"timeout must be > 0 seconds or None, got {timeout}")
        if max_rows is not None and max_rows < 0:
            raise GraphError(f"max_rows must be >= 0 or None, got {max_rows}")
        started = time.perf_counter()
        deadline = None if timeout is None else started + timeout
        stop = threading.Event()
        if timeout is None:
            result = self._run(sparql, prefixes, inferred, max_rows, deadline, stop)
        else:
            result = self._run_timed(sparql, prefixes, inferred, max_rows, timeout, stop)
        result.seconds = time.perf_counter() - started
        return result

    def _run_timed(
        self,
        sparql: str,
        prefixes: dict[str, str] | None,
        inferred: bool,
        max_rows: int | None,
        timeout: float,
        stop: threading.Event,
    ) -> QueryResult:
        box: dict[str, Any] = {}
        deadline = time.perf_counter() + timeout

        def work() -> None:
            try:
                box["result"] = self._run(sparql, prefixes, inferred, max_rows, deadline, stop)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=work, name=f"sparql-{self.name}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            stop.set()
            raise QueryLimitError(
                f"the query ran past its time limit of {timeout:g} s and was stopped; narrow "
                f"it (LIMIT, a more specific pattern) or raise timeout="
            )
        if "error" in box:
            raise box["error"]
        result: QueryResult = box["result"]
        return result

    def _run(
        self,
        sparql: str,
        prefixes: dict[str, str] | None,
        inferred: bool,
        max_rows: int | None,
        deadline: float | None,
        stop: threading.Event,
    ) -> QueryResult:
        try:
            answer = self.store.query(
                sparql, prefixes=prefixes, use_default_graph_as_union=inferred,
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
            out = QueryResult(query_form(sparql) or "CONSTRUCT", rows=rows)
            items = answer
            convert = lambda t: (  # noqa: E731
                python_value(t.subject),
                python_value(t.predicate),
                python_value(t.object),
            )
        try:
            for item in items:
                if stop.is_set() or (deadline is not None and time.perf_counter() > deadline):
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

    def update(self, sparql: str, *, prefixes: dict[str, str] | None = None) -> None:
        """Run a SPARQL 1.1 update (``INSERT DATA``, ``DELETE WHERE``, ...), atomically.

        Raises:
            GraphReadOnlyError: The graph is open read-only.
            SparqlError: A syntax error, a query form, a ``SERVICE`` clause, or ``LOAD``
                (which would fetch a URL).
        """
        self._writable("update")
        check_no_service(sparql)
        form = query_form(sparql)
        if form == "LOAD":
            raise SparqlError(
                "LOAD is refused: it fetches a URL from another host; download the file "
                "and use Graph.load(path)"
            )
        if form and form not in _UPDATE_FORMS:
            raise SparqlError(f"update() runs updates, and this is a {form} query; use query()")
        try:
            self.store.update(sparql, prefixes=prefixes, base_iri=self.namespace)
        except SyntaxError as exc:
            raise SparqlError(f"the update does not parse: {exc}") from None
        except OSError as exc:
            raise SparqlError(f"the update failed: {exc}") from None

    # -- reasoning ---------------------------------------------------------------
    def materialize(
        self, rules: Iterable[str] = ("rdfs", "owl"), *, max_rounds: int = 100
    ) -> dict[str, Any]:
        """Infer triples to a fixpoint into the inferred graph (see
        :func:`lepton.graph.materialize`); returns ``{"rounds", "inferred", "seconds"}``."""
        from lepton.graph._reason import materialize

        return materialize(self, rules, max_rounds=max_rounds)

    def drop_inferred(self) -> int:
        """Remove every inferred triple (asserted ones stay); returns how many."""
        self._writable("drop_inferred")
        n = self.count(inferred=True)
        self.store.clear_graph(ox.NamedNode(INFERRED))
        return n


def create(name: str, *, namespace: str | None = None, exist_ok: bool = False) -> Graph:
    """Make a new persisted graph (``Graph.create``)."""
    return Graph.create(name, namespace=namespace, exist_ok=exist_ok)


def open_graph(name: str, *, read_only: bool = False) -> Graph:
    """Open a persisted graph (``Graph.open``)."""
    return Graph.open(name, read_only=read_only)


def list_graphs() -> list[str]:
    """Names of the graphs under ``LEPTON_HOME/graphs``."""
    root = graphs_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "graph.json").exists())


def delete(name: str) -> None:
    """Delete a persisted graph and its files.

    Raises:
        GraphNotFoundError: No graph has that name.
    """
    _check_name(name)
    folder = graphs_dir() / name
    if not (folder / "graph.json").exists():
        raise GraphNotFoundError(f"no graph named {name!r}; lp.graph.list_graphs() names them")
    _forget(folder / "store")
    shutil.rmtree(folder)
