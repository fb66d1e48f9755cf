"""``uvicorn.Config`` for every Lepton server: slow, idle and excess connections end.

uvicorn alone keeps a connection that never sends a request, or stops in the middle of
one, open for ever. :func:`server_config` builds the config with the protocol of
:mod:`lepton.serve._connections` (header, body and idle timeouts, a connection limit);
``lepton serve`` replicas and the platform server both use it, and no other place of
Lepton builds a ``uvicorn.Config`` (a test checks).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
from typing import Any

import uvicorn

from lepton.errors import ConfigError
from lepton.serve._connections import ConnectionLimits, protocol_class

__all__ = ["ConnectionLimits", "server_config"]

log = logging.getLogger("lepton.serve")

_FD_RESERVE = 256  # descriptors kept for files, the database, pipes and logs


def _fit_descriptors(limits: ConnectionLimits) -> ConnectionLimits:
    """Raise the open-file limit to fit ``max_connections``, or lower it to what fits."""
    need = limits.max_connections + _FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        fit = max(16, soft - _FD_RESERVE)
        log.warning("the open-file limit (%d) allows only %d connections, not %d; raise "
                    "`ulimit -n` to serve more", soft, fit, limits.max_connections)  # fmt: skip
        return dataclasses.replace(limits, max_connections=fit)
    return limits


def server_config(
    app: Any, *, limits: ConnectionLimits | None = None, parser: str = "auto", **options: Any
) -> uvicorn.Config:
    """A ``uvicorn.Config`` whose connections obey ``limits`` (see the module).

    Args:
        app: The ASGI app.
        limits: Timeouts and the connection limit; default :class:`ConnectionLimits()`.
        parser: ``"auto"`` (httptools when installed, else h11), ``"httptools"`` or ``"h11"``.
        **options: Any other ``uvicorn.Config`` argument (host, port, lifespan, ...).

    Raises:
        ConfigError: ``options`` sets what ``limits`` decides, or the parser is missing.
    """
    owned = {"http", "ws", "timeout_keep_alive", "limit_concurrency",
             "h11_max_incomplete_event_size"}  # fmt: skip
    if owned & set(options):
        raise ConfigError(
            f"server_config sets {', '.join(sorted(owned & set(options)))} itself; pass "
            f"ConnectionLimits instead"
        )
    if parser not in ("auto", "httptools", "h11"):
        raise ConfigError(f"parser {parser!r}: use 'auto', 'httptools' or 'h11'")
    fitted = _fit_descriptors(limits or ConnectionLimits())
    return uvicorn.Config(
        app,
        http=protocol_class(parser, fitted),
        timeout_keep_alive=max(1, math.ceil(fitted.idle_timeout_s)),
        limit_concurrency=None,  # its 503 would also hit requests on the open connections
        ws="none",  # an upgraded connection would still be timed as HTTP
        h11_max_incomplete_event_size=fitted.max_header_bytes,
        **options,
    )
