"""Reading the audit log (``/api/v1/audit``, the Audit page, the overview's latest
entries): entries newest first, by user or only the refused ones. The guards write it,
through :meth:`~lepton.platform._state.Platform.audit`.

Example:
    >>> entries, total = audit_entries(db, 0, 10, refused=True)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from lepton.storage import Database
from lepton.storage.schema import AuditRow

__all__ = ["AuditView", "audit_entries"]


class AuditView(BaseModel):
    """One entry: who did what to which target, when, and the answer's status."""

    model_config = ConfigDict(from_attributes=True)  # read straight from an AuditRow

    id: int
    at: float
    actor: str
    action: str
    target: str
    status: int
    detail: dict[str, Any]


def audit_entries(
    db: Database, offset: int, limit: int, *, actor: str | None = None, refused: bool = False
) -> tuple[list[AuditView], int]:
    """Audit entries, newest first, and how many match: of ``actor`` only, or only the
    ``refused`` ones (status 400 or more)."""
    where: list[Any] = [AuditRow.actor == actor] if actor else []
    if refused:
        where.append(AuditRow.status >= 400)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(AuditRow).where(*where)) or 0
        rows = s.scalars(
            select(AuditRow).where(*where).order_by(AuditRow.id.desc()).offset(offset).limit(limit)
        )
        return [AuditView.model_validate(r) for r in rows], int(total)
