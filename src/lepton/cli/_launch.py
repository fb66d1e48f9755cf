"""``lepton launch``: run a training script on N processes per machine over M machines.

A thin wrapper over PyTorch's own launcher (``torch.distributed.run``, what ``torchrun``
runs): elastic agents meet at a c10d rendezvous on node 0 (``--rdzv-endpoint``), each
starts ``--nproc-per-node`` workers with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set, and a script that calls ``lp.fit`` joins that job
as it is (no ``workers=`` needed). Node 0 hosts the rendezvous store, the other nodes
reach it, so a port that is taken on node 0 or an address nobody listens on fails at
once with a clear error rather than a hang; a worker that fails stops the others (no
restarts unless ``--max-restarts``) and its error is reported here.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import typer

from lepton.errors import DistributedError, PortInUseError, RendezvousError, WorkerFailedError

__all__ = ["launch"]

_LOCAL = ("127.0.0.1", "localhost", "0.0.0.0", "::1")
_SECONDARY = ("DistBackendError", "DistNetworkError", "DistStoreError", "Signal ")


def launch(
    script: str = typer.Argument(..., help="The Python script every worker runs."),
    args: list[str] | None = typer.Argument(None, help="The script's own arguments."),
    nproc_per_node: int = typer.Option(
        1, "--nproc-per-node", min=1, help="Worker processes on this machine."
    ),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="Machines (nodes) in the job."),
    node_rank: int = typer.Option(
        0, "--node-rank", min=0, help="This machine's number, 0 to nnodes-1 (0 hosts)."
    ),
    rdzv_endpoint: str | None = typer.Option(
        None,
        "--rdzv-endpoint",
        help="HOST:PORT of node 0, the same on every node (default with one node: a free "
        "port on 127.0.0.1).",
    ),
    rdzv_id: str = typer.Option(
        "lepton", "--rdzv-id", help="The job's name at the rendezvous, the same on every node."
    ),
    rdzv_timeout: float = typer.Option(
        120.0, "--rdzv-timeout", min=1, help="Seconds to wait for every node to join."
    ),
    max_restarts: int = typer.Option(
        0, "--max-restarts", min=0, help="Restart the workers this often after a failure."
    ),
) -> None:
    """Run SCRIPT on `--nproc-per-node` processes on each of `--nnodes` machines.

    Data-parallel `lp.fit` in SCRIPT trains over all of them (rank 0 prints, tracks and
    writes checkpoints). One machine, two processes:
    `lepton launch --nproc-per-node 2 train.py`. Two machines: on each,
    `lepton launch --nproc-per-node 2 --nnodes 2 --node-rank 0|1 --rdzv-endpoint
    node0:29400 train.py`.
    """
    if node_rank >= nnodes:
        raise DistributedError(
            f"--node-rank {node_rank} is outside --nnodes {nnodes}; number the machines "
            f"0 to {nnodes - 1}"
        )
    if rdzv_endpoint is None and nnodes > 1:
        raise RendezvousError(
            f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT of node 0, the same on "
            f"every node (e.g. --rdzv-endpoint 10.0.0.1:29400)"
        )
    argv = [
        "--nnodes",
        str(nnodes),
        "--nproc-per-node",
        str(nproc_per_node),
        "--node-rank",
        str(node_rank),
        "--max-restarts",
        str(max_restarts),
        "--monitor-interval",
        "0.2",
    ]
    if rdzv_endpoint is None:
        argv.append("--standalone")
    else:
        host, port = _endpoint(rdzv_endpoint)
        if node_rank == 0 and host in _LOCAL:
            _check_free(host, port, rdzv_endpoint)
        conf = (
            f"is_host={'true' if node_rank == 0 else 'false'},"
            f"join_timeout={rdzv_timeout:g},read_timeout={rdzv_timeout:g}"
        )
        argv += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint]
        argv += ["--rdzv-id", rdzv_id, "--rdzv-conf", conf]
    argv += [script, *(args or [])]
    _run(argv, world=nproc_per_node * nnodes, endpoint=rdzv_endpoint, timeout=rdzv_timeout)


def _endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RendezvousError(
            f"--rdzv-endpoint takes HOST:PORT (e.g. 127.0.0.1:29400), got {text!r}"
        )
    return host.strip("[]"), int(port)


def _check_free(host: str, port: int, endpoint: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1" if host == "localhost" else host, port))
        except OSError:
            raise PortInUseError(
                f"port {port} of --rdzv-endpoint {endpoint} is in use by another process on "
                f"this machine (node 0 hosts the rendezvous there); stop that process or "
                f"choose another port, the same on every node"
            ) from None


def _run(argv: list[str], *, world: int, endpoint: str | None, timeout: float) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError as TorchRendezvous
    from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(argv))  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        rank, message, code = _root_failure(exc.failures)
        raise WorkerFailedError(
            f"worker rank {rank} of {world} failed ({code}): {message}; the other workers "
            f"were stopped"
        ) from None
    except RendezvousTimeoutError:
        raise RendezvousError(
            f"not every node joined the rendezvous at {endpoint} within {timeout:g}s; start "
            f"`lepton launch` on every node with the same --nnodes, --rdzv-endpoint and "
            f"--rdzv-id, or raise --rdzv-timeout"
        ) from None
    except TorchRendezvous as exc:
        cause = _causes(exc)
        if "EADDRINUSE" in cause or "address already in use" in cause.lower():
            raise PortInUseError(
                f"the rendezvous port of {endpoint} is in use by another process; stop it or "
                f"choose another port, the same on every node"
            ) from None
        raise RendezvousError(
            f"could not reach the rendezvous at {endpoint} ({cause}); check that "
            f"--rdzv-endpoint names node 0's address and port, that node 0 runs "
            f"`lepton launch --node-rank 0` with it, and that the port is open"
        ) from None


def _causes(exc: BaseException) -> str:
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        text = str(seen).strip().splitlines()
        parts.append(text[0] if text else type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return "; ".join(parts)


def _root_failure(failures: dict[int, Any]) -> tuple[int, str, str]:
    """The failure that caused the others: not a peer's broken connection or a signal
    the agent sent while stopping the rest, when there is such a one."""

    def text(failure: Any) -> str:
        message = failure.message
        if isinstance(message, dict):
            message = str(message.get("message", message))
        return str(message).strip()

    ranked = sorted(
        failures.items(),
        key=lambda kv: (text(kv[1]).startswith(_SECONDARY), kv[1].timestamp, kv[0]),
    )
    rank, failure = ranked[0]
    code = f"exit code {failure.exitcode}"
    with contextlib.suppress(Exception):
        if failure.exitcode < 0:
            code = f"signal {failure.signal_name()}"
    return rank, text(failure), code
