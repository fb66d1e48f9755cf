"""What the manager knows of each deployment beyond its row (:class:`Runtime`), and the
lock that serializes changes to one deployment (:class:`Runtimes`).

A row says what should be and what was last seen; a :class:`Runtime` holds what only
this server knows: the supervisor's ``Popen`` handle, its fingerprint, the timers of the
health checks and the restart backoff. It lives as long as the server and is rebuilt
from the deployment's folder (token, ``process.json``) after a restart.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lepton.storage.schema import DeploymentRow

__all__ = ["Runtime", "Runtimes", "own_figures"]


@dataclass
class Runtime:
    """What the manager knows of one deployment beyond its row.

    ``desired`` and ``state`` mirror the row (the store updates both together), so the
    predict proxy reads them without a database query.
    """

    name: str
    port: int
    token: str
    desired: str
    state: str
    process: subprocess.Popen[bytes] | None = None  # ours; None when adopted
    pid: int | None = None
    ident: str | None = None  # _procs.fingerprint(pid) when we started or adopted it
    fresh: bool = True  # started by this manager: its counters began at zero
    spawned_at: float = 0.0  # time.monotonic()
    was_ready: bool = False  # ready at least once since it was started
    ready_since: float | None = None
    unready_since: float | None = None
    failures: int = 0  # exits in a row
    next_start: float = 0.0
    port_busy_since: float | None = None
    kill_reason: str | None = None
    kill_deadline: float | None = None
    exited_group: int | None = None  # the group of the supervisor that last exited
    exited_at: float = 0.0
    scaling: bool = False  # its supervisor is being replaced for a new replica count
    memory_mb: float | None = None  # its process group's memory at the last monitor round
    cpu_percent: float | None = None  # its group's CPU use between the last two rounds
    cpu_seen: tuple[float, float] | None = None  # (time.monotonic(), CPU seconds) then
    serving_since: float = 0.0  # time.time() when it last turned ready
    # (time.time() sent, status) of the proxy's recent answers: what its clients saw,
    # timeouts and refused connections included (its own /metrics never sees those)
    answers: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=20_000))


def own_figures(rt: Runtime | None, window_s: float) -> dict[str, float | None]:
    """What this server saw of a deployment itself: ``memory_mb`` and ``cpu_percent``
    (its processes, at the last monitor round; 100 is one core) and, of the proxy's
    answers in the last ``window_s`` seconds, ``proxied`` (how many),
    ``proxy_error_rate`` (share of 5xx) and ``timeouts`` (504s).
    Only requests sent since it last turned ready count: those a restart cut short are
    not the new processes' doing."""
    answers = list(rt.answers) if rt is not None else []
    since = max(time.time() - window_s, rt.serving_since if rt is not None else 0.0)
    recent = [status for t, status in answers if t >= since]
    failed = sum(1 for status in recent if status >= 500)
    return {
        "memory_mb": rt.memory_mb if rt is not None else None,
        "cpu_percent": rt.cpu_percent if rt is not None else None,
        "proxied": float(len(recent)),
        "proxy_error_rate": failed / len(recent) if recent else 0.0,
        "timeouts": float(sum(1 for status in recent if status == 504)),
    }


class Runtimes:
    """The :class:`Runtime` of each deployment, and one lock per deployment.

    Locking: a deployment's lock (:meth:`lock`) is held by whoever changes that
    deployment (its row, its :class:`Runtime`, its process): API calls wait for it,
    monitor rounds skip a deployment whose lock is taken. ``_guard`` guards only the two
    maps below, never I/O. A lock is kept after its deployment is deleted, so a caller
    still waiting on it and a new namesake never hold two different locks.

    Args:
        load: Builds the :class:`Runtime` of a deployment seen for the first time, from
            its row and folder (a token, a process an earlier server started).
    """

    def __init__(self, load: Callable[[DeploymentRow], Runtime]) -> None:
        self._load = load
        self._guard = threading.Lock()
        self._runtimes: dict[str, Runtime] = {}
        self._locks: dict[str, threading.Lock] = {}

    def lock(self, name: str) -> threading.Lock:
        """The lock that serializes changes to deployment ``name``."""
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def get(self, name: str) -> Runtime | None:
        """The runtime of ``name``, if this server has seen it."""
        with self._guard:
            return self._runtimes.get(name)

    def of(self, row: DeploymentRow) -> Runtime:
        """The runtime of ``row``'s deployment (loaded on first sight), its ``desired``
        and ``state`` set from the row."""
        rt = self.get(row.name)
        if rt is None:
            loaded = self._load(row)  # reads files: outside the guard
            with self._guard:
                rt = self._runtimes.setdefault(row.name, loaded)
        rt.desired, rt.state = row.desired, row.state
        return rt

    def put(self, rt: Runtime) -> Runtime:
        """Make ``rt`` the runtime of its deployment (a new one replaces a namesake's)."""
        with self._guard:
            self._runtimes[rt.name] = rt
        return rt

    def drop(self, name: str) -> None:
        """Forget what is known of ``name`` (deleted, or to be loaded again)."""
        with self._guard:
            self._runtimes.pop(name, None)

    def all(self) -> list[Runtime]:
        """Every runtime this server knows, as of now."""
        with self._guard:
            return list(self._runtimes.values())
