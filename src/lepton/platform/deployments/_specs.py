"""What a deployment is, as the API takes and shows it: :class:`DeploymentRequest`,
:class:`DeploymentView`, and the small helpers the manager shares (its name's pattern,
its URL, whether its port is free).

Example:
    >>> DeploymentRequest(name="mnist-prod", model="mnist-convnet@production").replicas
    1
    >>> base_url("::1", 8100)
    'http://[::1]:8100'
"""

from __future__ import annotations

import re
import socket

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lepton.platform._procs import signal_name
from lepton.serve._predlog import PredictionLogSpec
from lepton.storage.schema import DeploymentRow

__all__ = [
    "MAX_REPLICAS",
    "NAME",
    "DeploymentRequest",
    "DeploymentView",
    "base_url",
    "describe_exit",
    "port_free",
    "view_of",
]

MAX_REPLICAS = 16
NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # a DNS label


class DeploymentRequest(BaseModel):
    """What creating a deployment takes (``POST /api/v1/deployments``).

    Example:
        >>> DeploymentRequest(name="mnist-prod", model="mnist-convnet@production").replicas
        1
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="1-63 of a-z, 0-9 and '-', like a DNS label: mnist-prod.")
    model: str = Field(
        min_length=1,
        max_length=300,
        description="A registered version: name@production (alias or stage), name:3, name.",
    )
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS, description="Replica processes.")
    port: int | None = Field(
        None, ge=1, le=65535, description="TCP port; default: the first free one of the range."
    )
    prediction_log: PredictionLogSpec | None = Field(
        default=None, description="Log a sample of inputs and outputs (off when left out)."
    )

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(
                f"name {value!r} must be 1-63 characters of a-z, 0-9 and '-', starting and "
                f"ending with a letter or digit (e.g. 'mnist-prod')"
            )
        return value


class DeploymentView(BaseModel):
    """A deployment as the API shows it.

    ``model_ref`` is the reference it was created from (``mnist@production``); ``ref``
    is the version it serves (``mnist:3``), pinned at creation so moving an alias later
    changes no running deployment. ``error`` is the last problem seen, kept after a
    recovery so the reason for ``restarts`` stays visible.
    """

    name: str
    model_ref: str
    model_name: str
    version: int
    ref: str
    replicas: int
    port: int
    url: str
    desired: str
    state: str
    pid: int | None
    restarts: int
    error: str | None
    created_by: str
    created_at: float
    updated_at: float


def base_url(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 address in brackets."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def view_of(row: DeploymentRow, host: str) -> DeploymentView:
    """Freeze a database row (``host``: the address deployments listen on)."""
    return DeploymentView(
        name=row.name,
        model_ref=row.model_ref,
        model_name=row.model_name,
        version=row.version,
        ref=f"{row.model_name}:{row.version}",
        replicas=row.replicas,
        port=row.port,
        url=base_url(host, row.port),
        desired=row.desired,
        state=row.state,
        pid=row.pid,
        restarts=row.restarts,
        error=row.error,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def port_free(host: str, port: int) -> bool:
    """Whether the supervisor could bind ``host:port`` now (same options as it uses)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def describe_exit(code: int | None) -> str:
    """``"exit status 1"``, ``"killed by SIGKILL"`` (a ``Popen.returncode``) or unknown."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        return f"killed by {signal_name(-code)}"
    return f"exit status {code}"
