"""What every dashboard page shares: templates, formatting, security headers, errors.

Pages are rendered on the server with Jinja2 (autoescape on, undefined names are errors)
from ``templates/``; ``static/`` holds our own stylesheet and script. Every answer gets
a Content-Security-Policy that allows only this server's own script and style, so even
a value that slipped past escaping could not run.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

import lepton
from lepton.errors import PlatformError
from lepton.platform.web._markdown import render_markdown

__all__ = [
    "PER_PAGE",
    "STATIC",
    "FormText",
    "ago",
    "duration",
    "num",
    "optional_int",
    "redirect",
    "render",
    "when",
]

TEMPLATES = Path(__file__).parent / "templates"
FormText = Annotated[str, Form(max_length=300)]  # a text field of a dashboard form
PER_PAGE = 50  # rows of a paginated dashboard table
STATIC = Path(__file__).parent / "static"

NAV: tuple[tuple[str, str, str], ...] = (  # (path, label, least role)
    ("/", "Overview", "viewer"),
    ("/datasets", "Datasets", "viewer"),
    ("/runs", "Runs", "viewer"),
    ("/models", "Models", "viewer"),
    ("/jobs", "Jobs", "viewer"),
    ("/deployments", "Deployments", "viewer"),
    ("/users", "Users", "admin"),
    ("/audit", "Audit", "admin"),
)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def ago(t: float | None, now: float | None = None) -> str:
    """``"3 min ago"`` for a unix time (``"—"`` for none)."""
    if t is None:
        return "—"
    delta = (now if now is not None else time.time()) - t
    if delta < 0:
        return "in the future"
    if delta < 10:
        return "just now"
    if delta < 60:
        return f"{delta:.0f} s ago"
    if delta < 3600:
        return f"{delta / 60:.0f} min ago"
    if delta < 86400:
        return f"{delta / 3600:.0f} h ago"
    if delta < 7 * 86400:
        return f"{delta / 86400:.0f} d ago"
    return when(t)


def when(t: float | None) -> str:
    """A unix time as ``2025-01-31 14:05:09`` in the server's local time."""
    if t is None:
        return "—"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> str:
    """``"1 min 4 s"`` between two unix times (``end`` defaults to now)."""
    if start is None:
        return "—"
    seconds = max(0.0, (end if end is not None else time.time()) - start)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def num(value: Any) -> str:
    """A number for a table: thousands separated, floats to 4 significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        if abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


def _pretty(value: Any) -> str:
    """A JSON-ish value on one line, for a parameter table."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_pretty(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_pretty(v) for v in value) + "]"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return num(value)
    return "—" if value is None else str(value)


def optional_int(value: str, name: str) -> int | None:
    """A form field as a whole number (``None`` when left empty)."""
    value = value.strip().replace(",", "").replace("_", "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PlatformError(f"{name} must be a whole number, got {value!r}") from None


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ago=ago, when=when, num=num, pretty=_pretty, markdown=render_markdown, duration=duration
    )
    env.globals.update(version=lepton.__version__)
    return env


_ENV = _environment()


def render(
    request: Request,
    template: str,
    *,
    section: str = "",
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``templates/<template>`` with the caller, the nav bar and ``context``."""
    who = getattr(request.state, "principal", None)
    nav = [(path, label) for path, label, role in NAV if who is not None and who.may(role)]
    body = _ENV.get_template(template).render(
        who=who, nav=nav, section=section, now=time.time(), **context
    )
    return HTMLResponse(body, status, headers=SECURITY_HEADERS)


def redirect(path: str) -> RedirectResponse:
    """After a form post: go to ``path`` (303, so a reload does not post again)."""
    return RedirectResponse(path, status_code=303, headers=SECURITY_HEADERS)
