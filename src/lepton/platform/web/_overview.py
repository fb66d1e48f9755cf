"""The dashboard's front page: how much of everything there is, the latest jobs and, for
admins, the latest audit entries."""

from __future__ import annotations

from dataclasses import fields

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lepton.platform._audit import audit_entries
from lepton.platform._deps import P
from lepton.platform._http import allow
from lepton.platform._queries import overview as counts
from lepton.platform.web._render import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/")
@allow("viewer")
def overview(p: P, request: Request) -> Response:
    """Counts of everything, the latest jobs and, for admins, the latest audit entries."""
    audit = audit_entries(p.db, 0, 10)[0] if request.state.principal.may("admin") else []
    found = counts(p)
    figures = {f.name: getattr(found, f.name) for f in fields(found)}
    return render(request, "overview.html", section="/", audit=audit, **figures)
