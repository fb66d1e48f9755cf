"""``Graph``: one embedded RDF store (pyoxigraph) per graph, under ``LEPTON_HOME/graphs``.

A graph lives in ``LEPTON_HOME/graphs/<name>/``: the RocksDB store (``store-<id>/``, a
new id for each graph made, so a graph deleted while a process still holds its store never
shares RocksDB's lock with a namesake made after it) and a small manifest (``graph.json``:
its namespace, its store's folder, when it was made, what was loaded). The
triples a user asserts go to the store's default graph; what the reasoner infers goes to
the named graph :data:`INFERRED` so it can be dropped and recomputed
(:meth:`Graph.drop_inferred`). Queries see both unless told otherwise.

Where graphs live and their open stores (:mod:`lepton.graph._home`), imports
(:mod:`lepton.graph._formats`) and SPARQL with time and result-size limits
(:mod:`lepton.graph._query`) live in their own modules; ``Graph`` composes them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyoxigraph as ox

from lepton._fs import atomic_write_bytes, private_dir, remove_tree
from lepton.config import get_settings
from lepton.errors import GraphError, GraphNotFoundError, GraphReadOnlyError
from lepton.graph._formats import RDF_FORMATS, csv_rows, read_source
from lepton.graph._home import (
    check_name,
    forget,
    graphs_dir,
    list_graphs,
    store_at,
    store_dir,
)
from lepton.graph._query import QueryResult, run_query, run_update

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


class Graph:
    """A knowledge graph: an RDF store with SPARQL 1.1, imports and reasoning.

    Open one with :meth:`open` / :func:`create` (persisted under ``LEPTON_HOME``) or
    :meth:`memory` (in memory, gone with the object).

    Args:
        store: The pyoxigraph store.
        name: The graph's name.
        namespace: Prefix of the IRIs made for CSV rows and dataset entities.
        folder: Where it is persisted (``None`` in memory).
        store_dir: The store's folder inside ``folder`` (``None`` in memory).
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
        store_dir: Path | None = None,
        read_only: bool = False,
    ) -> None:
        self.store, self.name, self.namespace = store, name, namespace
        self.folder, self.store_dir, self.read_only = folder, store_dir, read_only

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
        check_name(name)
        return cls(ox.Store(), name, namespace=namespace or cls.default_namespace(name))

    @classmethod
    def create(cls, name: str, *, namespace: str | None = None, exist_ok: bool = False) -> Graph:
        """Make a new persisted graph ``LEPTON_HOME/graphs/<name>``.

        Raises:
            GraphError: The name is not valid, or the graph exists and ``exist_ok`` is
                false.
        """
        check_name(name)
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
        store_name = f"store-{uuid.uuid4().hex[:12]}"
        meta = {"name": name, "namespace": ns, "store": store_name,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "sources": []}  # fmt: skip
        store = store_at(folder / store_name)
        atomic_write_bytes(folder / "graph.json", json.dumps(meta, indent=2).encode())
        return cls(store, name, namespace=ns, folder=folder, store_dir=folder / store_name)

    @classmethod
    def open(cls, name: str, *, read_only: bool = False) -> Graph:
        """Open an existing persisted graph.

        Raises:
            GraphNotFoundError: No graph has that name.
        """
        check_name(name)
        folder = graphs_dir() / name
        if not (folder / "graph.json").exists():
            have = list_graphs()
            raise GraphNotFoundError(
                f"no graph named {name!r} in {graphs_dir()} (graphs: {have or 'none'}); "
                f"make it with lp.graph.create({name!r})"
            )
        meta = json.loads((folder / "graph.json").read_text(encoding="utf-8"))
        where = store_dir(folder, meta)
        return cls(store_at(where), name, namespace=meta["namespace"], folder=folder,
                   store_dir=where, read_only=read_only)  # fmt: skip

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

    def close(self) -> None:
        """Write pending changes and let go of the store: RocksDB closes, and another
        process may open the graph, once no other ``Graph`` of it in this process is
        left."""
        if self.store_dir is not None:
            if not self.read_only:
                self.flush()
            forget(self.store_dir)

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
        data, suffix, label = read_source(source, format)
        before = self.count()
        if suffix == ".csv":
            self.load_rows(csv_rows(data.decode("utf-8-sig"), header=header), _note=False)
        elif suffix in RDF_FORMATS:
            try:
                self.store.load(data, RDF_FORMATS[suffix], base_iri=base_iri or self.namespace)
            except SyntaxError as exc:
                raise GraphError(f"{label} is not valid {RDF_FORMATS[suffix]}: {exc}") from None
        else:
            raise GraphError(
                f"cannot tell the format of {label} (suffix {suffix or 'none'}); pass "
                f"format='nt', 'ttl' or 'csv'"
            )
        gained = self.count() - before
        self._note_source(label, gained)
        return gained

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
        return run_query(
            self.store, sparql, namespace=self.namespace, timeout=timeout, max_rows=max_rows,
            inferred=inferred, prefixes=prefixes, name=self.name,
        )  # fmt: skip

    def update(self, sparql: str, *, prefixes: dict[str, str] | None = None) -> None:
        """Run a SPARQL 1.1 update (``INSERT DATA``, ``DELETE WHERE``, ...), atomically.

        Raises:
            GraphReadOnlyError: The graph is open read-only.
            SparqlError: A syntax error, a query form, a ``SERVICE`` clause, or ``LOAD``
                (which would fetch a URL).
        """
        self._writable("update")
        run_update(self.store, sparql, namespace=self.namespace, prefixes=prefixes)

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


def delete(name: str) -> None:
    """Delete a persisted graph and its files.

    Raises:
        GraphNotFoundError: No graph has that name.
    """
    check_name(name)
    folder = graphs_dir() / name
    if not (folder / "graph.json").exists():
        raise GraphNotFoundError(f"no graph named {name!r}; lp.graph.list_graphs() names them")
    forget(store_dir(folder))
    remove_tree(folder)  # one still held may compact into it while it goes
