"""The Graph pages: the registered graph embeddings with the form that trains one (a
``graph`` job), and one version's page: entity search, a link-prediction form, the
entity's most similar entities, and an SVG view of its neighbourhood in the known
triples.

Answers come from the very :class:`~lepton.serve._graph.GraphService` a deployment of the
version runs (same ranking, same "known" marks), loaded in the platform's process and kept
for a few versions (:class:`~lepton.platform.web._loaded.Loaded`). The SVG is drawn here,
on the server, from our own escaped strings (no script, no ``style=``): the page marks it
``|safe`` for that reason only.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from lepton import registry
from lepton.errors import LeptonError, NotFoundError
from lepton.platform._deps import Caller, P
from lepton.platform._http import RecordId, allow
from lepton.platform._state import Platform
from lepton.platform.jobs._specs import GraphJob
from lepton.platform.web._loaded import Loaded, versions_of
from lepton.platform.web._render import (
    FormText,
    form_problems,
    job_form_defaults,
    number,
    optional_int,
    redirect,
    render,
    submit_job_form,
)
from lepton.serve._graph import (
    GRAPH_ARCHITECTURES,
    GraphService,
    PredictLinkRequest,
    SimilarEntityRequest,
    is_graph_model,
)
from lepton.storage import Database

__all__ = ["MAX_NEIGHBOURS", "graph_versions", "neighbourhood_svg", "router"]

router = APIRouter(include_in_schema=False)
ModelName = Annotated[str, Path(max_length=100)]
Text = Annotated[str, Query(max_length=200)]
MAX_NEIGHBOURS = 16  # entities drawn around the centre of the neighbourhood view
MAX_IN_SELECT = 2000  # more entities than this: a text field instead of a list
SEARCH_ROWS = 50
_W, _H, _R = 680, 460, 160  # the view's size and the circle the neighbours sit on


def _graph_service(ref: str, database: Database) -> GraphService:
    return GraphService(ref, database=database)


_service: Loaded[GraphService] = Loaded(_graph_service)  # loaded versions, a few kept


def graph_versions(database: Database) -> list[registry.ModelVersion]:
    """Every ready graph-embedding version, newest first."""
    return versions_of(database, GRAPH_ARCHITECTURES)


# -- the neighbourhood view ------------------------------------------------------------------


def _short(text: str, most: int = 18) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def neighbourhood_svg(
    centre: str, edges: list[tuple[str, str, str]], href: Callable[[str], str]
) -> str:
    """An SVG of ``centre`` and the entities its known triples touch.

    Args:
        centre: The entity in the middle.
        edges: ``(direction, relation, other)``: ``"out"`` for ``(centre, relation,
            other)``, ``"in"`` for ``(other, relation, centre)``.
        href: The link of an entity's own view (a neighbour is clickable).

    Returns:
        SVG markup, safe to put in a page as is: every label, title and link is escaped
        here. At most :data:`MAX_NEIGHBOURS` neighbours are drawn, each with its
        relations (``→`` from the centre, ``←`` to it; a triple of the centre with itself
        is a loop label on the centre).
    """
    esc = html.escape
    grouped: dict[str, list[tuple[str, str]]] = {}
    for direction, relation, other in edges:
        if other != centre:  # a loop is a label on the centre
            grouped.setdefault(other, []).append((direction, relation))
    others = list(grouped)[:MAX_NEIGHBOURS]
    cx, cy = _W / 2, _H / 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart graph-view" viewBox="0 0 '
        f'{_W} {_H}" role="img" aria-label="{esc(f"neighbourhood of {centre}")}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#64748b"/></marker></defs>',
    ]
    nodes = []
    for i, other in enumerate(others):
        angle = 2 * math.pi * i / max(1, len(others)) - math.pi / 2
        x, y = cx + _R * math.cos(angle), cy + _R * math.sin(angle)
        rels = grouped[other]
        outgoing = any(d == "out" for d, _ in rels)
        incoming = any(d == "in" for d, _ in rels)
        # the line stops short of both circles so the arrowheads show
        dx, dy = x - cx, y - cy
        length = math.hypot(dx, dy) or 1.0
        x1, y1 = cx + dx / length * 34, cy + dy / length * 34
        x2, y2 = x - dx / length * 26, y - dy / length * 26
        marks = (' marker-end="url(#arrow)"' if outgoing else "") + (
            ' marker-start="url(#arrow)"' if incoming else ""
        )
        out.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#94a3b8" '
            f'stroke-width="1.2"{marks}/>'
        )
        words = [("→ " if d == "out" else "← ") + r for d, r in rels]
        if len(words) <= 2:
            shown = ", ".join(_short(w, 16) for w in words)
        else:  # a dense pair: the counts here, the names in the tooltip
            n_out = sum(1 for d, _ in rels if d == "out")
            shown = f"→ {n_out}  ← {len(rels) - n_out} relations"
        # outside the node, away from the centre, anchored on the side it sits
        cos, sin = math.cos(angle), math.sin(angle)
        lx, ly = cx + (_R + 32) * cos, cy + (_R + 32) * sin + 3 + 6 * sin
        anchor = "start" if cos > 0.35 else "end" if cos < -0.35 else "middle"
        out.append(
            f'<text x="{lx:.1f}" y="{ly:.1f}" class="tick" font-size="9" fill="#475569" '
            f'text-anchor="{anchor}"><title>{esc("; ".join(words))}</title>{esc(shown)}</text>'
        )
        nodes.append(
            f'<a href="{esc(href(other))}"><title>{esc(other)}: {esc("; ".join(words))}</title>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="24" fill="#eff6ff" stroke="#2563eb"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" font-size="10" fill="#1e3a8a" '
            f'text-anchor="middle">{esc(_short(other, 12))}</text></a>'
        )
    out.extend(nodes)
    loops = [r for d, r, o in edges if o == centre and d == "out"]
    out.append(
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="32" fill="#2563eb" stroke="#1e3a8a"/>'
        f'<text x="{cx:.1f}" y="{cy + 4:.1f}" font-size="11" fill="#ffffff" '
        f'text-anchor="middle" class="graph-centre"><title>{esc(centre)}</title>'
        f"{esc(_short(centre, 14))}</text>"
    )
    if loops:
        out.append(
            f'<text x="{cx:.1f}" y="{cy + 48:.1f}" font-size="9" fill="#475569" '
            f'text-anchor="middle">↻ {esc(_short(", ".join(loops), 40))}</text>'
        )
    if len(grouped) > len(others):
        out.append(
            f'<text x="8" y="{_H - 8}" class="tick" font-size="10" fill="#64748b">'
            f"{len(grouped) - len(others)} more neighbours not drawn</text>"
        )
    out.append("</svg>")
    return "".join(out)


# -- the list and the training form -------------------------------------------------------


def _defaults() -> dict[str, str]:
    """The form's first values: the recipe's own defaults (`lepton graph train`'s)."""
    return job_form_defaults(
        GraphJob, ("dataset", "model", "dim", "epochs", "lr", "negatives"), ("register",)
    )


def _list_page(
    p: Platform, request: Request, *, form: dict[str, str] | None = None, error: str = ""
) -> Response:
    return render(
        request, "graph.html", section="/models", status=422 if error else 200,
        versions=graph_versions(p.db), form=form or _defaults(), error=error,
        datasets=("nations", "kinships", "umls"),
        kinds=("transe", "distmult", "complex", "rotate"), version=None,
    )  # fmt: skip


@router.get("/graph")
@allow("viewer")
def graphs(p: P, request: Request) -> Response:
    """The registered graph embeddings, and the form that trains one."""
    return _list_page(p, request)


@router.post("/graph")
@allow("editor")
def submit_graph_job(
    p: P,
    who: Caller,
    request: Request,
    dataset: FormText = "",
    model: FormText = "",
    dim: FormText = "",
    epochs: FormText = "",
    lr: FormText = "",
    negatives: FormText = "",
    register_as: FormText = "",
    cpus: FormText = "",
    memory_mb: FormText = "",
) -> Response:
    """Submit a ``graph`` job from the form (the same typed spec as the API)."""
    form = {"dataset": dataset, "model": model, "dim": dim, "epochs": epochs, "lr": lr,
            "negatives": negatives, "register": register_as, "cpus": cpus,
            "memory_mb": memory_mb}  # fmt: skip
    try:
        given = {
            "dataset": dataset.strip() or None, "model": model.strip() or None,
            "dim": optional_int(dim, "dim"), "epochs": optional_int(epochs, "epochs"),
            "lr": number(lr, "learning rate") if lr.strip() else None,
            "negatives": optional_int(negatives, "negatives"),
            "register": register_as.strip() or None,
        }  # fmt: skip
        job = submit_job_form(p, who, GraphJob, given, cpus=cpus, memory_mb=memory_mb)
    except ValidationError as exc:
        return _list_page(p, request, form=form, error=form_problems(exc))
    except LeptonError as exc:
        return _list_page(p, request, form=form, error=exc.message)
    return redirect(f"/jobs/{job.id}")


# -- one version ---------------------------------------------------------------------------


@router.get("/models/{name}/{version}/graph")
@allow("viewer")
def version_graph(
    p: P,
    request: Request,
    name: ModelName,
    version: RecordId,
    q: Text = "",
    entity: Text = "",
    relation: Text = "",
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    exclude_known: Annotated[str, Query(max_length=5)] = "",
) -> Response:
    """Entity search, link prediction from an entity, its similar entities and its
    neighbourhood."""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    if not is_graph_model(found.manifest):
        raise NotFoundError(
            f"{found.ref} is not a graph embedding (its architecture is "
            f"{(found.manifest.get('architecture') or {}).get('name', '?')}); see "
            f"/models/{name}/{version}, or /graph for the graph embeddings"
        )
    service = _service(found.ref, p.db)
    model = service.model
    chosen = entity.strip() or model.entities[0]
    rel = relation.strip() or model.relations[0]
    drop = exclude_known in ("1", "on", "true")
    problems: list[str] = []
    links: dict[str, Any] | None = None
    similar: dict[str, Any] | None = None
    svg = ""
    try:
        asked = PredictLinkRequest(head=chosen, relation=rel, k=k, exclude_known=drop)
        links = service.predict_link(asked).model_dump()
    except (LeptonError, ValidationError) as exc:
        problems.append(exc.message if isinstance(exc, LeptonError) else str(exc))
    if chosen in service.entity_index:
        similar = service.similar(SimilarEntityRequest(entity=chosen, k=k)).model_dump()
        base = f"/models/{found.name}/{found.version}/graph"

        def href(other: str) -> str:
            return f"{base}?{urlencode({'entity': other, 'relation': rel, 'k': k})}"

        svg = neighbourhood_svg(chosen, service.neighbours(chosen, limit=400), href)
    return render(
        request, "graph.html", section="/models", version=found, info=service.info(),
        q=q, hits=service.search(q, SEARCH_ROWS) if q.strip() else [], entity=chosen,
        relation=rel, k=k, exclude_known=drop, links=links, similar=similar, svg=svg,
        problems=problems, relations=list(model.relations),
        entities=list(model.entities) if len(model.entities) <= MAX_IN_SELECT else None,
    )  # fmt: skip
