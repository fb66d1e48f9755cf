"""SPARQL helpers: the ``SERVICE`` check, the query-form sniff, and RDF terms as Python.

pyoxigraph runs the queries; this module only decides what may run (no ``SERVICE``:
federation would let a query make the server call other hosts) and turns its terms into
plain values: an IRI as its string, a blank node as ``"_:id"``, a typed literal as the
matching Python value (``xsd:integer`` -> ``int``, ``xsd:boolean`` -> ``bool``, the
decimal types -> ``float``), any other literal as its lexical string.
"""

from __future__ import annotations

import re
from typing import Any

import pyoxigraph as ox

from lepton.errors import SparqlError

__all__ = ["check_no_service", "python_value", "query_form", "strip_lexical"]

XSD = "http://www.w3.org/2001/XMLSchema#"
_INTEGERS = {
    f"{XSD}{t}"
    for t in (
        "integer", "int", "long", "short", "byte", "nonNegativeInteger", "positiveInteger",
        "negativeInteger", "nonPositiveInteger", "unsignedInt", "unsignedLong",
        "unsignedShort", "unsignedByte",
    )
}  # fmt: skip
_FLOATS = {f"{XSD}decimal", f"{XSD}double", f"{XSD}float"}

# strings (long and short, either quote), IRIs and comments: removed before keywords are
# looked for, so a literal "SERVICE" or <http://x/SERVICE> is not taken for the keyword
_LEXICAL = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""'
    r"|'''(?:[^'\\]|\\.|'(?!''))*'''"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'(?:[^'\\\n]|\\.)*'"
    r"|<[^<>\"{}|^`\\\s]*>"
    r"|#[^\n]*",
    re.DOTALL,
)
_SERVICE = re.compile(r"(?<![\w:?$-])SERVICE(?![\w:-])", re.IGNORECASE)
_FORM = re.compile(
    r"(?<![\w:?$-])(SELECT|ASK|CONSTRUCT|DESCRIBE|INSERT|DELETE|LOAD|CLEAR|CREATE|DROP|COPY"
    r"|MOVE|ADD)(?![\w:-])",
    re.IGNORECASE,
)


def strip_lexical(text: str) -> str:
    """``text`` with its strings, IRIs and comments blanked out (keywords stay)."""
    return _LEXICAL.sub(" ", text)


def check_no_service(text: str) -> None:
    """Refuse a query or update with a ``SERVICE`` clause (federation to other hosts)."""
    if _SERVICE.search(strip_lexical(text)):
        raise SparqlError(
            "SERVICE is refused: a query may not call other SPARQL endpoints (federation); "
            "load the remote data into a graph with Graph.load and query it here"
        )


def query_form(text: str) -> str:
    """The first query/update keyword, upper-cased (``"SELECT"``, ``"INSERT"``, ...)."""
    found = _FORM.search(strip_lexical(text))
    return found.group(1).upper() if found else ""


def python_value(term: Any) -> Any:
    """An RDF term from pyoxigraph as a plain Python value (``None`` stays ``None``)."""
    if term is None:
        return None
    if isinstance(term, ox.NamedNode):
        return term.value
    if isinstance(term, ox.BlankNode):
        return f"_:{term.value}"
    if isinstance(term, ox.Literal):
        dt = term.datatype.value
        try:
            if dt in _INTEGERS:
                return int(term.value)
            if dt in _FLOATS:
                return float(term.value)
        except ValueError:
            return term.value
        if dt == f"{XSD}boolean":
            return term.value in ("true", "1")
        return term.value
    if isinstance(term, ox.Triple):
        return (python_value(term.subject), python_value(term.predicate), python_value(term.object))
    return str(term)
