"""The files a graph imports: N-Triples, Turtle and ``head,relation,tail`` CSV.

:func:`read_source` turns what :meth:`Graph.load <lepton.graph.Graph.load>` was given (a
path, or bytes with a format) into the bytes and the suffix that names their format;
:func:`csv_rows` reads a triples CSV into label rows (which the graph turns into IRIs).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyoxigraph as ox

from lepton.errors import GraphError

__all__ = ["FORMAT_NAMES", "RDF_FORMATS", "csv_rows", "read_source"]

#: File suffixes pyoxigraph parses, and as which format.
RDF_FORMATS = {
    ".nt": ox.RdfFormat.N_TRIPLES,
    ".ntriples": ox.RdfFormat.N_TRIPLES,
    ".ttl": ox.RdfFormat.TURTLE,
    ".turtle": ox.RdfFormat.TURTLE,
}
#: ``format=`` names -> the suffix they stand for.
FORMAT_NAMES = {"nt": ".nt", "ntriples": ".nt", "n-triples": ".nt", "ttl": ".ttl",
                "turtle": ".ttl", "csv": ".csv"}  # fmt: skip


def read_source(source: str | Path | bytes, format: str | None) -> tuple[bytes, str, str]:
    """``(data, suffix, label)`` of a file path or bytes: the suffix names the format
    (``".nt"``, ``".ttl"``, ``".csv"``; from ``format`` when given, else the file's),
    the label names the source in messages and the manifest.

    Raises:
        GraphError: An unknown format, bytes without a format, or no such file.
    """
    if format is not None and format.lower() not in FORMAT_NAMES:
        raise GraphError(f"cannot tell the format {format!r}; pass format='nt', 'ttl' or 'csv'")
    if isinstance(source, bytes):
        suffix = FORMAT_NAMES.get((format or "").lower(), "")
        if not suffix:
            raise GraphError("loading bytes needs format='nt', 'ttl' or 'csv'")
        return source, suffix, f"<{len(source)} bytes>"
    path = Path(source).expanduser()
    if not path.is_file():
        raise GraphError(f"no file {path}; give the path of a .nt, .ttl or .csv file")
    suffix = FORMAT_NAMES.get((format or "").lower(), path.suffix.lower())
    return path.read_bytes(), suffix, str(path)


def csv_rows(text: str, *, header: bool) -> list[tuple[str, str, str]]:
    """The ``(head, relation, tail)`` rows of a triples CSV.

    Args:
        text: The CSV text.
        header: The first row names the columns ``head,relation,tail`` (in any order);
            without a header the columns are taken in that order.

    Raises:
        GraphError: A header without those columns, or a row of fewer than 3 columns.
    """
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
    return rows
