"""Which ``Host`` and ``Origin`` headers a service answers: the guard against DNS rebinding.

A tokenless service on 127.0.0.1 trusts whoever can connect to it, and a web page can
make the visitor's browser connect: by DNS rebinding (``evil.example`` resolving to
127.0.0.1, so the browser sends ``Host: evil.example``) or by a cross-site form post
(which carries the page's ``Origin``). So a service answers only requests that name it
by one of its own addresses, and refuses any ``Origin`` that is not one of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from lepton.errors import ConfigError

__all__ = ["LOOPBACK_NAMES", "HostPolicy", "check_allowed_host"]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_WILDCARDS = frozenset({"0.0.0.0", "[::]"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _bracket(host: str) -> str:
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _split(value: str, default_port: int | None) -> tuple[str, int | None] | None:
    """``(name, port)`` of ``name[:port]`` (IPv6 in brackets); ``None`` when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        name, _, port_text = value.partition(":")
        if ":" in port_text:  # an unbracketed IPv6 address is no valid Host
            return None
    if not name or any(c in name for c in " /\\@?#"):
        return None
    if not port_text:
        return name, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


def check_allowed_host(value: str) -> str:
    """Validate one ``--allowed-host`` value (``name``, ``name:port`` or ``*``).

    Raises:
        ConfigError: The value is not a host name with an optional port.
    """
    if value.strip() == "*":
        return "*"
    parsed = _split(value, None)
    if parsed is None:
        raise ConfigError(
            f"--allowed-host {value!r} is not a host name with an optional port; "
            f"e.g. --allowed-host models.example.com or --allowed-host 10.0.0.5:8100"
        )
    name, port = parsed
    return name if port is None else f"{name}:{port}"


@dataclass(frozen=True)
class HostPolicy:
    """The ``Host`` values a service accepts.

    Attributes:
        names: Its own names (lower case, IPv6 in brackets).
        port: The port those names must carry; ``None`` accepts any port.
        allowed: Extra ``(name, port)`` pairs from ``--allowed-host`` (port ``None``:
            any port).
        any_host: ``--allowed-host '*'``: every ``Host`` is accepted.
    """

    names: frozenset[str]
    port: int | None
    allowed: frozenset[tuple[str, int | None]] = frozenset()
    any_host: bool = False

    @classmethod
    def loopback(cls) -> HostPolicy:
        """Loopback names on any port: an app served in-process (tests, ASGI mounts)."""
        return cls(LOOPBACK_NAMES, None)

    @classmethod
    def for_address(cls, host: str, port: int, allowed: Sequence[str] = ()) -> HostPolicy:
        """The policy of a service bound to ``host:port``.

        Bound to loopback, it is 127.0.0.1, localhost and [::1] on that port; bound to a
        wildcard (0.0.0.0, ::), those and the wildcard itself; bound elsewhere, that
        address. ``allowed`` adds ``--allowed-host`` values.
        """
        own = _bracket(host)
        names = {own}
        if own in _WILDCARDS or own == "localhost" or _is_loopback(own):
            names |= LOOPBACK_NAMES
        values = [check_allowed_host(value) for value in allowed]
        extra = {_split(value, None) for value in values if value != "*"}
        pairs = frozenset(pair for pair in extra if pair is not None)
        return cls(frozenset(names), port, pairs, "*" in values)

    def allows(self, header: bytes) -> bool:
        """Whether a request's ``Host`` header names this service."""
        if self.any_host:
            return True
        parsed = _split(header.decode("latin-1"), 80)
        return parsed is not None and self._allows(*parsed)

    def allows_origin(self, header: bytes) -> bool:
        """Whether a request's ``Origin`` header is a page served from this service."""
        if self.any_host:
            return True
        try:
            origin = urlsplit(header.decode("latin-1").strip())
        except ValueError:
            return False
        if origin.scheme not in _DEFAULT_PORTS or not origin.netloc or "@" in origin.netloc:
            return False
        parsed = _split(origin.netloc, _DEFAULT_PORTS[origin.scheme])
        return parsed is not None and self._allows(*parsed)

    def _allows(self, name: str, port: int | None) -> bool:
        if name in self.names and (self.port is None or port == self.port):
            return True
        return (name, None) in self.allowed or (name, port) in self.allowed

    def describe(self) -> str:
        """The accepted names, for an error message."""
        suffix = f":{self.port}" if self.port is not None else ""
        return ", ".join(sorted(name + suffix for name in self.names))


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False
