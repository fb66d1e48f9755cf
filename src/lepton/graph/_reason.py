"""Forward-chaining reasoning on the store: RDFS and a part of OWL 2 RL, to a fixpoint.

Each rule is one SPARQL ``INSERT { GRAPH <inferred> {...} } WHERE {...}`` update. A
premise matches asserted or inferred triples (each triple pattern reads the default graph
``UNION`` the inferred graph); a conclusion is written to the inferred graph only when it
is not already asserted. The rules run in rounds until a round adds nothing.

Rules (names from the RDF 1.1 Semantics and the OWL 2 RL tables):

=========  ==================================================================
rdfs2      ``p rdfs:domain c . x p y``           -> ``x rdf:type c``
rdfs3      ``p rdfs:range c . x p y`` (y no literal) -> ``y rdf:type c``
rdfs5      ``p subPropertyOf q . q subPropertyOf r`` -> ``p subPropertyOf r``
rdfs7      ``p subPropertyOf q . x p y``         -> ``x q y``
rdfs9      ``c subClassOf d . x rdf:type c``     -> ``x rdf:type d``
rdfs11     ``c subClassOf d . d subClassOf e``   -> ``c subClassOf e``
prp-trp    ``p a owl:TransitiveProperty . x p y . y p z`` -> ``x p z``
prp-symp   ``p a owl:SymmetricProperty . x p y`` -> ``y p x``
prp-inv1   ``p owl:inverseOf q . x p y``         -> ``y q x``
prp-inv2   ``p owl:inverseOf q . x q y``         -> ``y p x``
=========  ==================================================================

The RDFS axiomatic triples (``x rdf:type rdfs:Resource`` for every node and the like) are
not generated: they say nothing about the data and would multiply its size.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lepton.errors import GraphError

if TYPE_CHECKING:
    from lepton.graph._store import Graph

__all__ = ["RULES", "materialize", "rule_updates"]

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
OWL = "http://www.w3.org/2002/07/owl#"
_INF = "urn:lepton:inferred"
_TYPE, _SC, _SP = f"<{RDF}type>", f"<{RDFS}subClassOf>", f"<{RDFS}subPropertyOf>"
_DOM, _RANGE = f"<{RDFS}domain>", f"<{RDFS}range>"
_TRANS, _SYM, _INV = f"<{OWL}TransitiveProperty>", f"<{OWL}SymmetricProperty>", f"<{OWL}inverseOf>"


def _t(s: str, p: str, o: str) -> str:
    """A premise: the triple pattern over asserted UNION inferred triples."""
    return f"{{ {{ {s} {p} {o} }} UNION {{ GRAPH <{_INF}> {{ {s} {p} {o} }} }} }}"


def _rule(
    conclusion: tuple[str, str, str], *premises: tuple[str, str, str], extra: str = ""
) -> str:
    s, p, o = conclusion
    where = " ".join(_t(*t) for t in premises)
    return (
        f"INSERT {{ GRAPH <{_INF}> {{ {s} {p} {o} }} }} WHERE {{ {where} {extra} "
        f"FILTER NOT EXISTS {{ {s} {p} {o} }} }}"
    )


#: The rules, by set: ``"rdfs"`` and ``"owl"`` (transitive, symmetric, inverse).
RULES: dict[str, dict[str, str]] = {
    "rdfs": {
        "rdfs2": _rule(("?x", _TYPE, "?c"), ("?p", _DOM, "?c"), ("?x", "?p", "?y")),
        "rdfs3": _rule(
            ("?y", _TYPE, "?c"),
            ("?p", _RANGE, "?c"),
            ("?x", "?p", "?y"),
            extra="FILTER(!isLiteral(?y))",
        ),
        "rdfs5": _rule(("?p", _SP, "?r"), ("?p", _SP, "?q"), ("?q", _SP, "?r")),
        "rdfs7": _rule(("?x", "?q", "?y"), ("?p", _SP, "?q"), ("?x", "?p", "?y")),
        "rdfs9": _rule(("?x", _TYPE, "?d"), ("?c", _SC, "?d"), ("?x", _TYPE, "?c")),
        "rdfs11": _rule(("?c", _SC, "?e"), ("?c", _SC, "?d"), ("?d", _SC, "?e")),
    },
    "owl": {
        "prp-trp": _rule(
            ("?x", "?p", "?z"), ("?p", _TYPE, _TRANS), ("?x", "?p", "?y"), ("?y", "?p", "?z")
        ),
        "prp-symp": _rule(("?y", "?p", "?x"), ("?p", _TYPE, _SYM), ("?x", "?p", "?y")),
        "prp-inv1": _rule(("?y", "?q", "?x"), ("?p", _INV, "?q"), ("?x", "?p", "?y")),
        "prp-inv2": _rule(("?y", "?p", "?x"), ("?p", _INV, "?q"), ("?x", "?q", "?y")),
    },
}


def rule_updates(rules: Iterable[str]) -> dict[str, str]:
    """The SPARQL updates of the named rule sets (``"rdfs"``, ``"owl"``) or single rules
    (``"rdfs9"``, ``"prp-trp"``), in order."""
    chosen: dict[str, str] = {}
    for name in rules:
        if name in RULES:
            chosen.update(RULES[name])
            continue
        found = next((rs[name] for rs in RULES.values() if name in rs), None)
        if found is None:
            every = sorted(RULES) + sorted(r for rs in RULES.values() for r in rs)
            raise GraphError(f"unknown rule or rule set {name!r}; choose from {every}")
        chosen[name] = found
    if not chosen:
        raise GraphError("materialize needs at least one rule set, e.g. rules=('rdfs', 'owl')")
    return chosen


def materialize(graph: Graph, rules: Iterable[str], *, max_rounds: int = 100) -> dict[str, Any]:
    """Apply ``rules`` to ``graph`` until a round infers nothing new.

    Returns:
        ``{"rounds": n, "inferred": triples now in the inferred graph, "added": added by
        this call, "seconds": wall time}``.

    Raises:
        GraphReadOnlyError: The graph is open read-only.
        GraphError: An unknown rule, or no fixpoint within ``max_rounds``.
    """
    graph._writable("materialize")
    updates = rule_updates(rules)
    started = time.perf_counter()
    before = count = graph.count(inferred=True)
    rounds = 0
    while True:
        rounds += 1
        if rounds > max_rounds:
            raise GraphError(
                f"no fixpoint after max_rounds={max_rounds} rounds ({count} triples inferred); "
                f"raise max_rounds="
            )
        for update in updates.values():
            graph.store.update(update)
        now = graph.count(inferred=True)
        if now == count:
            break
        count = now
    return {"rounds": rounds, "inferred": count, "added": count - before,
            "seconds": time.perf_counter() - started}  # fmt: skip
