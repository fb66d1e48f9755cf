"""What a route or page declares to get the shared state and its caller.

Example:
    >>> @router.get("/api/v1/things")  # doctest: +SKIP
    ... @allow("viewer")
    ... def things(p: P, who: Caller) -> list[str]: ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lepton.platform._auth import Principal
from lepton.platform._http import caller
from lepton.platform._state import Platform

__all__ = ["Caller", "P", "platform"]


def platform(request: Request) -> Platform:
    """The shared :class:`Platform` (a route dependency)."""
    found: Platform = request.app.state.platform
    return found


P = Annotated[Platform, Depends(platform)]
Caller = Annotated[Principal, Depends(caller)]
