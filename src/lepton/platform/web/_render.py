"""What every dashboard page shares: templates, formatting, security headers, errors.

Pages are rendered on the server with Jinja2 (autoescape on, undefined names are errors)
from ``templates/``; ``static/`` holds our own stylesheet and script. Every answer gets
a Content-Security-Policy that allows only this server's own script and style, so even
a value that slipped past escaping could not run.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lepton._version import __version__
from lepton.errors import LeptonError, PlatformError, UnauthorizedError
from lepton.platform._http import status_of

if TYPE_CHECKING:
    from lepton.platform._auth import Principal
    from lepton.platform._state import Platform
    from lepton.platform.jobs._specs import JobView
from lepton.platform.web._markdown import render_markdown

__all__ = [
    "PER_PAGE",
    "STATIC",
    "FormText",
    "ago",
    "duration",
    "errors_as_pages",
    "form_problems",
    "local_path",
    "num",
    "number",
    "optional_int",
    "redirect",
    "render",
    "when",
]

log = logging.getLogger("lepton.platform")
TEMPLATES = Path(__file__).parent / "templates"
FormText = Annotated[str, Form(max_length=300)]  # a text field of a dashboard form
PER_PAGE = 50  # rows of a paginated dashboard table
STATIC = Path(__file__).parent / "static"

NAV: tuple[tuple[str, str, str], ...] = (  # (path, label, least role)
    ("/", "Overview", "viewer"),
    ("/datasets", "Datasets", "viewer"),
    ("/runs", "Runs", "viewer"),
    ("/studies", "Studies", "viewer"),
    ("/models", "Models", "viewer"),
    ("/jobs", "Jobs", "viewer"),
    ("/deployments", "Deployments", "viewer"),
    ("/alerts", "Alerts", "viewer"),
    ("/vision", "Vision", "viewer"),
    ("/gallery", "Gallery", "viewer"),
    ("/text", "Text", "viewer"),
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


def number(value: str, name: str) -> float:
    """A form field as a number."""
    try:
        return float(value.strip())
    except ValueError:
        raise PlatformError(f"{name} must be a number, got {value!r}") from None


def job_form_defaults(
    spec: type[BaseModel], names: tuple[str, ...], blanks: tuple[str, ...] = ("register",)
) -> dict[str, str]:
    """A job form's first values: ``spec``'s own defaults for ``names`` (the recipe's,
    the same as its CLI command's), ``""`` for ``blanks``, and the request's CPU and
    memory slots."""
    from lepton.platform.jobs._specs import JobRequest

    fields, slots = spec.model_fields, JobRequest.model_fields
    return {
        **{name: str(fields[name].default) for name in names},
        **dict.fromkeys(blanks, ""),
        "cpus": f"{slots['cpus'].default:g}",
        "memory_mb": str(slots["memory_mb"].default),
    }


def submit_job_form(
    platform: Platform,
    who: Principal,
    spec: type[BaseModel],
    given: Mapping[str, Any],
    *,
    cpus: str,
    memory_mb: str,
) -> JobView:
    """Submit a job from a page's form: ``spec`` (a job kind's spec) from the fields the
    user filled in (``None`` ones are left to the spec's defaults), and the CPU and memory
    slots when given. Returns the job; raises pydantic's ``ValidationError`` or a
    :class:`~lepton.errors.LeptonError` for the page to show beside what was typed."""
    from lepton.platform.jobs._specs import JobRequest

    job_spec = spec.model_validate({k: v for k, v in given.items() if v is not None})
    slots = {
        "cpus": number(cpus, "CPUs") if cpus.strip() else None,
        "memory_mb": optional_int(memory_mb, "memory (MiB)"),
    }
    body = {"spec": job_spec, **{k: v for k, v in slots.items() if v is not None}}
    return platform.jobs.submit(JobRequest.model_validate(body), who.name)


def form_problems(exc: ValidationError) -> str:
    """A form's validation error as one line per field, without pydantic's prefixes (the
    ``spec`` and ``train`` levels of a job request are left out of the field's name)."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if p not in ("spec", "train"))
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


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
    env.globals.update(lepton_version=__version__)  # not `version`: pages pass a model version
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


# -- errors on pages ----------------------------------------------------------------------
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def _page_error(request: Request, exc: Exception) -> Response:
    """The page shown for ``exc`` on a dashboard route."""
    if isinstance(exc, UnauthorizedError):
        if request.scope.get("path") == "/login":  # a used or expired link: say so, 401
            return render(request, "login_help.html", reason="expired", status=401)
        return RedirectResponse("/login-help", status_code=303)
    if isinstance(exc, LeptonError):
        status, message = status_of(exc), exc.message
        if status == 500:  # a fault of this server: its details stay in its log
            log.error("%s: %s", type(exc).__name__, exc.message)
            message = "the server failed on this page; its log has the details"
    elif isinstance(exc, StarletteHTTPException):
        status, message = exc.status_code, str(exc.detail)
    elif hasattr(exc, "errors"):  # a form or path value that failed validation
        status = 422
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'value'}: {e.get('msg', '')}"
            for e in exc.errors()
        )
    else:
        status, message = 500, "the server failed on this page; its log has the details"
    return render(
        request,
        "error.html",
        status=status,
        code=status,
        message=message,
        back=_same_site_path(request),
        section="",
    )


def _same_site_path(request: Request) -> str:
    """The path of the page that led here, if it is one of ours (for a "back" link)."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc != request.headers.get("host") or referer.scheme not in ("http", "https"):
        return ""
    return local_path(referer.path + (f"?{referer.query}" if referer.query else ""))


def local_path(value: str) -> str:
    """``value`` if it is a path on this server (one ``/`` first, no scheme, no host), else
    ``""``. A browser reads ``//host/x``, ``/\\host/x`` and ``/<tab>/host/x`` as another
    site, so none of them may become a link of ours."""
    if not value.startswith("/") or value.startswith("//"):
        return ""
    if "\\" in value or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return ""
    return value


def _wrap(original: Handler, pages: set[Any]) -> Handler:
    async def handle(request: Request, exc: Any) -> Response:
        endpoint = request.scope.get("endpoint")
        wants_html = "text/html" in request.headers.get("accept", "")
        is_api = request.url.path.startswith("/api/")
        if endpoint in pages or (endpoint is None and wants_html and not is_api):
            try:
                return _page_error(request, exc)
            except Exception:  # a page about an error must never fail itself
                log.exception("could not render the error page")
        answer = original(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    return handle


def errors_as_pages(app: FastAPI, pages: set[Any]) -> None:
    """Make errors on the endpoints in ``pages`` (and on unknown paths a browser asks for)
    pages with their message: a visitor who is not signed in is sent to ``/login-help``,
    while the API keeps its JSON errors. Call it after the app's error handlers are
    installed: it wraps them."""
    for exc_class, handler in list(app.exception_handlers.items()):
        if isinstance(exc_class, type):
            app.exception_handlers[exc_class] = _wrap(handler, pages)
