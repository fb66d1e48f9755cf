"""``Index``: semantic search over unit vectors, exact or approximate (HNSW).

Both kinds keep every vector (float32, one row per slot), its id, text and metadata.
``"exact"`` scores a query against all rows with one matrix product per chunk of rows and
keeps a running top-k, so memory stays at ``chunk x queries`` scores. ``"hnsw"`` also
builds a USearch HNSW graph (inner product on unit vectors = cosine) and asks it; USearch
was chosen over hnswlib as it installs from wheels, removes entries in place and saves
its graph in its own flat format (never a pickle).

Metadata filters (``where={"pos": "n"}`` or a callable) are applied exactly: an exact
index masks the scores; an HNSW index asks the graph for more candidates than ``k`` in
proportion to how rare the filter is, and falls back to an exact search over the
matching rows when the filter keeps under 5% of them or the graph returns too few.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from lepton.errors import MissingExtraError, TextError
from lepton.text._errors import check_texts
from lepton.text._files import read_folder, write_folder

__all__ = ["Hit", "Index"]

Kind = Literal["exact", "hnsw"]
Where = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]
_FORMAT = "lepton.text.Index/1"
_GRAPH = "hnsw.usearch"


@dataclass(frozen=True)
class Hit:
    """One search result: ``id``, cosine ``score`` (higher is nearer), ``text`` (``""``
    when vectors were added without texts) and ``metadata``."""

    id: str
    score: float
    text: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Index:
    """A searchable set of texts (or vectors) with ids and metadata.

    Args:
        kind: ``"exact"`` (torch matmul, chunked) or ``"hnsw"`` (USearch graph).
        dim: Vector width (384 for the default all-MiniLM-L6-v2 embedder).
        embedder: Turns texts into unit vectors (default: ``lp.text.embed``'s model).
        connectivity: HNSW edges per node (M).
        expansion_add: HNSW candidate-list size while building (ef_construction).
        expansion_search: HNSW candidate-list size while searching (ef).
        chunk: Rows scored per matrix product in exact search.

    Example:
        >>> index = lp.text.Index("hnsw")  # doctest: +SKIP
        >>> index.add(["a cat", "a car"], metadata=[{"kind": "pet"}, {"kind": "vehicle"}])
        >>> index.search("kitten", k=1)[0].text  # doctest: +SKIP
        'a cat'
    """

    def __init__(
        self,
        kind: Kind = "exact",
        *,
        dim: int = 384,
        embedder: Any = None,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        chunk: int = 32768,
    ) -> None:
        if kind not in ("exact", "hnsw"):
            raise TextError(f"kind must be 'exact' or 'hnsw', got {kind!r}")
        if dim < 1 or chunk < 1 or min(connectivity, expansion_add, expansion_search) < 2:
            raise TextError("dim, chunk >= 1 and connectivity, expansions >= 2 are required")
        self.kind: Kind = kind
        self.dim = dim
        self.params = {"connectivity": connectivity, "expansion_add": expansion_add,
                       "expansion_search": expansion_search, "chunk": chunk}  # fmt: skip
        self._embedder = embedder
        self._vectors = torch.empty(0, dim)
        self._alive = torch.empty(0, dtype=torch.bool)
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._meta: list[dict[str, Any]] = []
        self._slot: dict[str, int] = {}
        self._graph: Any = self._new_graph() if kind == "hnsw" else None

    def _new_graph(self) -> Any:
        try:
            from usearch.index import Index as USearch
        except ImportError:
            raise MissingExtraError(
                "Index('hnsw') needs PyPI usearch: pip install 'lepton[text]'"
            ) from None
        p = self.params
        return USearch(
            ndim=self.dim,
            metric="ip",
            dtype="f32",
            connectivity=p["connectivity"],
            expansion_add=p["expansion_add"],
            expansion_search=p["expansion_search"],
        )

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, id: object) -> bool:
        return id in self._slot

    def __repr__(self) -> str:
        return f"Index({self.kind!r}, {len(self)} entries, dim={self.dim})"

    # -- writing ---------------------------------------------------------------------------
    def _embed(self, texts: list[str]) -> torch.Tensor:
        if self._embedder is None:
            from lepton.text._embed import default_embedder

            self._embedder = default_embedder()
        return torch.as_tensor(self._embedder(texts)).float()

    def add(
        self,
        texts: Sequence[str] | None = None,
        *,
        vectors: torch.Tensor | np.ndarray | None = None,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[str]:
        """Add entries: texts (embedded here), vectors, or both (vectors then win).

        Args:
            texts: The texts; returned by searches.
            vectors: (N, dim) vectors; normalised to unit length.
            ids: One unique string id each (default: consecutive numbers).
            metadata: One JSON-safe dict each, for ``where=`` filters.

        Returns:
            The ids of the new entries.
        """
        items = check_texts(texts) if texts is not None else None
        if vectors is None:
            if items is None:
                raise TextError("add needs texts or vectors: index.add(['some text', ...])")
            vecs = self._embed(items) if items else torch.empty(0, self.dim)
        else:
            vecs = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
            if vecs.ndim != 2 or vecs.shape[1] != self.dim:
                raise TextError(
                    f"vectors must be (N, {self.dim}), got {tuple(vecs.shape)}; build the "
                    f"index with Index(dim={vecs.shape[-1]}) for vectors of another width"
                )
            vecs = F.normalize(vecs, dim=1)
        n = vecs.shape[0]
        if items is not None and len(items) != n:
            raise TextError(f"got {len(items)} texts but {n} vectors")
        start = len(self._ids)
        new_ids = [str(start + i) for i in range(n)] if ids is None else [str(i) for i in ids]
        meta = [dict(m) for m in metadata] if metadata is not None else [{} for _ in range(n)]
        if len(new_ids) != n or len(meta) != n:
            raise TextError(f"got {n} entries but {len(new_ids)} ids and {len(meta)} metadata")
        clash = [i for i in new_ids if i in self._slot] or (
            [] if len(set(new_ids)) == n else ["(repeated in this call)"]
        )
        if clash:
            raise TextError(f"ids already in the index: {clash[:5]}; remove them first")
        try:
            json.dumps(meta)
        except TypeError as exc:
            raise TextError(f"metadata must be JSON-safe ({exc})") from None
        self._vectors = torch.cat([self._vectors, vecs])
        self._alive = torch.cat([self._alive, torch.ones(n, dtype=torch.bool)])
        self._ids += new_ids
        self._texts += items if items is not None else [""] * n
        self._meta += meta
        self._slot.update({k: start + i for i, k in enumerate(new_ids)})
        if self._graph is not None and n:
            self._graph.add(np.arange(start, start + n), vecs.numpy())
        return new_ids

    def remove(self, ids: Sequence[str] | str) -> int:
        """Remove entries by id; returns how many were removed (unknown ids raise)."""
        keys = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        unknown = [k for k in keys if k not in self._slot]
        if unknown:
            raise TextError(f"no entries with ids {unknown[:5]} in this index")
        for key in keys:
            slot = self._slot.pop(key)
            self._alive[slot] = False
            if self._graph is not None:
                self._graph.remove(slot)
        return len(keys)

    # -- reading ---------------------------------------------------------------------------
    def _allowed(self, where: Where | None) -> torch.Tensor:
        if where is None:
            return self._alive
        if callable(where):
            test = where
        elif isinstance(where, Mapping):
            wanted = {k: (set(v) if isinstance(v, (list, tuple, set)) else {v})
                      for k, v in where.items()}  # fmt: skip

            def test(m: Mapping[str, Any]) -> bool:
                return all(m.get(k) in vs for k, vs in wanted.items())
        else:
            raise TextError("where must be a dict like {'pos': 'n'} or a function of metadata")
        keep = torch.tensor([bool(test(m)) for m in self._meta], dtype=torch.bool)
        return keep & self._alive

    def _exact(
        self, q: torch.Tensor, k: int, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, k) scores and slots of the best allowed rows, chunk by chunk."""
        best_s = torch.full((q.shape[0], 0), -math.inf)
        best_i = torch.empty((q.shape[0], 0), dtype=torch.int64)
        step = self.params["chunk"]
        for start in range(0, self._vectors.shape[0], step):
            block = self._vectors[start : start + step]  # (C, dim)
            scores = q @ block.T  # (Q, C)
            scores[:, ~allowed[start : start + step]] = -math.inf
            top = scores.topk(min(k, scores.shape[1]), dim=1)
            best_s = torch.cat([best_s, top.values], dim=1)
            best_i = torch.cat([best_i, top.indices + start], dim=1)
            keep = best_s.topk(min(k, best_s.shape[1]), dim=1)
            best_s, best_i = keep.values, best_i.gather(1, keep.indices)
        return best_s, best_i

    def search(
        self,
        query: str | Sequence[str] | torch.Tensor | np.ndarray,
        k: int = 10,
        *,
        where: Where | None = None,
    ) -> Any:
        """The ``k`` nearest entries of each query, best first.

        Args:
            query: A text or a (dim,) vector (answer: ``list[Hit]``), or texts or (Q, dim)
                vectors (answer: one ``list[Hit]`` per query).
            k: Results per query (fewer when fewer entries match).
            where: Keep entries whose metadata has these values (``{"pos": "n"}``; a list
                value means any of them), or for which a function of the metadata is true.
        """
        if k < 1:
            raise TextError(f"k must be >= 1, got {k}")
        single = isinstance(query, str)
        if isinstance(query, (torch.Tensor, np.ndarray)):
            q = torch.as_tensor(np.asarray(query), dtype=torch.float32)
            single = q.ndim == 1
            q = q.unsqueeze(0) if single else q
            if q.ndim != 2 or q.shape[1] != self.dim:
                raise TextError(f"query vectors must be (Q, {self.dim}), got {tuple(q.shape)}")
            q = F.normalize(q, dim=1)
        else:
            texts = [query] if isinstance(query, str) else check_texts(query, "query")
            q = self._embed(texts) if texts else torch.empty(0, self.dim)
        allowed = self._allowed(where)
        n_allowed = int(allowed.sum())
        k_eff = min(k, n_allowed)
        if k_eff == 0:
            out: list[list[Hit]] = [[] for _ in range(q.shape[0])]
        elif self._graph is None:
            out = self._hits(*self._exact(q, k_eff, allowed))
        else:
            out = self._hnsw(q, k_eff, allowed, n_allowed, filtered=where is not None)
        return out[0] if single else out

    def _hnsw(
        self, q: torch.Tensor, k: int, allowed: torch.Tensor, n_allowed: int, *, filtered: bool
    ) -> list[list[Hit]]:
        if filtered and n_allowed < 0.05 * len(self):
            return self._hits(*self._exact(q, k, allowed))
        want = k if not filtered else min(len(self), math.ceil(2 * k * len(self) / n_allowed))
        matches = self._graph.search(q.numpy(), want)
        keys = np.asarray(matches.keys).reshape(q.shape[0], -1)
        dist = np.asarray(matches.distances).reshape(q.shape[0], -1)
        out: list[list[Hit]] = []
        for row in range(q.shape[0]):
            found = [(int(s), 1.0 - float(d)) for s, d in zip(keys[row], dist[row], strict=True)
                     if 0 <= s < len(self._ids) and bool(allowed[int(s)])][:k]  # fmt: skip
            if len(found) < k:  # the graph came back short: answer this query exactly
                s_, i_ = self._exact(q[row : row + 1], k, allowed)
                out.extend(self._hits(s_, i_))
                continue
            out.append([self._hit(s, score) for s, score in found])
        return out

    def _hit(self, slot: int, score: float) -> Hit:
        return Hit(self._ids[slot], score, self._texts[slot], self._meta[slot])

    def _hits(self, scores: torch.Tensor, slots: torch.Tensor) -> list[list[Hit]]:
        return [
            [self._hit(int(i), float(s)) for s, i in zip(row_s, row_i, strict=True)]
            for row_s, row_i in zip(scores.tolist(), slots.tolist(), strict=True)
        ]

    # -- persistence -----------------------------------------------------------------------
    def _parts(self) -> tuple[dict[str, Any], torch.Tensor, dict[str, Any], bytes | None]:
        """``(config, vectors, entries, graph)`` of the live entries (what :meth:`save`
        and :meth:`register` store); ``graph`` is USearch's bytes, ``None`` if exact."""
        live = torch.nonzero(self._alive).flatten().tolist()
        entries = {"ids": [self._ids[i] for i in live], "texts": [self._texts[i] for i in live],
                   "metadata": [self._meta[i] for i in live]}  # fmt: skip
        graph = bytes(self._compacted(live)._graph.save()) if self._graph is not None else None
        config = {"kind": self.kind, "dim": self.dim, "params": self.params}
        return config, self._vectors[live], entries, graph

    def save(self, path: str | Path) -> Path:
        """Write the index to the folder ``path``: vectors (safetensors), ids, texts and
        metadata (JSON) and, for HNSW, USearch's graph file. Removed entries are dropped."""
        config, vectors, entries, graph = self._parts()
        files = {"entries.json": json.dumps(entries).encode()}
        if graph is not None:
            files[_GRAPH] = graph
        return write_folder(path, _FORMAT, config, tensors={"vectors": vectors}, files=files)

    def _compacted(self, live: list[int]) -> Index:
        if len(live) == len(self._ids):
            return self
        fresh = Index(self.kind, dim=self.dim, **self.params)
        fresh.add(vectors=self._vectors[live], ids=[self._ids[i] for i in live])
        return fresh

    @classmethod
    def load(cls, path: str | Path, *, embedder: Any = None) -> Index:
        """Read a folder written by :meth:`save` (hashes checked; nothing unpickled)."""
        config, tensors, files = read_folder(path, _FORMAT)
        entries = json.loads(files["entries.json"])
        return cls._from_parts(config, tensors["vectors"], entries, files.get(_GRAPH), embedder,
                               where=str(path))  # fmt: skip

    @classmethod
    def _from_parts(
        cls, config: Mapping[str, Any], vectors: torch.Tensor, entries: Mapping[str, Any],
        graph: bytes | None, embedder: Any = None, *, where: str = "the index",
    ) -> Index:  # fmt: skip
        index = cls(config["kind"], dim=config["dim"], embedder=embedder, **config["params"])
        keep, index._graph = index._graph, None  # restore a saved graph rather than rebuild
        index.add(entries["texts"], vectors=vectors, ids=entries["ids"],
                  metadata=entries["metadata"])  # fmt: skip
        if keep is None:
            return index
        if graph is None:
            raise TextError(f"{where}: an HNSW index without its graph; save it again")
        index._graph = keep
        index._graph.load(graph)
        if len(index._graph) != len(index):
            raise TextError(
                f"{where}: the HNSW graph holds {len(index._graph)} entries, the index "
                f"{len(index)}; the folder is inconsistent: save it again"
            )
        return index

    def register(
        self, name: str, *, metrics: dict[str, float] | None = None, dataset: Any = None,
        database: Any = None,
    ) -> Any:  # fmt: skip
        """Register the index as the next version of ``name`` in the model registry
        (vectors and the HNSW graph in safetensors, entries as JSON; no pickle) and
        return the ``ModelVersion``; ``dataset`` (the ``TextDataset`` indexed) goes in
        its lineage. Serve it with ``lepton deploy NAME`` (``POST /search``)."""
        from lepton.text._stored import register_index

        return register_index(self, name, metrics=metrics, dataset=dataset, database=database)

    @classmethod
    def from_registry(cls, ref: str, *, database: Any = None, embedder: Any = None) -> Index:
        """The index registered as ``ref`` (``"name"``, ``"name:2"``, ``"name@prod"``)."""
        from lepton.text._stored import index_parts, load_text

        module, version = load_text(ref, ("text-index",), database=database)
        return cls._from_parts(*index_parts(module), embedder=embedder, where=version.ref)
