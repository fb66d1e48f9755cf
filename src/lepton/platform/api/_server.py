"""``/api/v1/health``: whether the server is up, its version and uptime (no token needed)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel

from lepton._version import __version__
from lepton.platform._deps import P
from lepton.platform._http import public

__all__ = ["Health", "router"]

router = APIRouter(prefix="/api/v1")


class Health(BaseModel):
    status: str
    version: str
    uptime_s: float


@router.get("/health", tags=["server"])
@public
def health(p: P) -> Health:
    """Alive (no token needed)."""
    return Health(status="ok", version=__version__, uptime_s=time.time() - p.started_at)
