"""``lp.federated.run``: train one model across clients that keep their data, with Flower.

Each round Flower's strategy samples a random subset of the clients (``fraction_fit``),
sends them the global model, each trains it with Lepton's ``fit`` on its own partition
(``local_epochs``), optionally clips and noises its update (:class:`ClientDP`), and the
strategy aggregates the replies; the server then tests the global model. Clients that fail
or do not answer within ``round_timeout`` are left out of the round.

``mode="simulation"`` runs the clients as Ray actors on this machine (Flower's Simulation
Runtime); ``mode="processes"`` starts a real SuperLink and SuperNodes as separate
processes (:mod:`lepton.federated._processes`), over TLS with SuperNode authentication
when asked (``tls=``, ``node_auth=``; required off loopback). Both run the same apps on
the same job folder.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from safetensors.torch import load_file
from torch import nn

from lepton import models as lp_models
from lepton.data import Dataset
from lepton.errors import FederatedError, UnknownModelError
from lepton.federated._dp import ClientDP
from lepton.federated._job import Job, RoundRecord, read_rounds
from lepton.federated._tls import TlsOption, check_transport
from lepton.storage import Database

__all__ = ["FederatedResult", "run"]

Strategy = Literal["fedavg", "fedprox", "fedadam"]
Mode = Literal["simulation", "processes"]


@dataclass
class FederatedResult:
    """What a federated run produced.

    Attributes:
        model: The final global model (the caller's model, updated in place).
        rounds: One :class:`RoundRecord` per round; ``rounds[0]`` is the initial model.
        seconds: Wall time of the whole run, start-up included.
        mode, strategy: As run.
        folder: The job folder (the processes' logs are there in ``processes`` mode).
        run_id: The tracking run, when tracked.
    """

    model: nn.Module
    rounds: list[RoundRecord]
    seconds: float
    mode: str
    strategy: str
    folder: str
    run_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        """The final global test accuracy."""
        return self.rounds[-1].accuracy if self.rounds else None

    def rounds_to(self, accuracy: float) -> int | None:
        """The first round whose global accuracy reached ``accuracy`` (None: never)."""
        for r in self.rounds:
            if r.round > 0 and r.accuracy is not None and r.accuracy >= accuracy:
                return r.round
        return None


def _check(
    model: nn.Module, partitions: Sequence[Dataset], mode: str, strategy: str, rounds: int,
    fraction_fit: float,
) -> dict[str, Any] | None:  # fmt: skip
    if strategy not in ("fedavg", "fedprox", "fedadam"):
        raise FederatedError(f"unknown strategy {strategy!r}; use fedavg, fedprox or fedadam")
    if mode not in ("simulation", "processes"):
        raise FederatedError(f"unknown mode {mode!r}; use 'simulation' or 'processes'")
    if len(partitions) < 2:
        raise FederatedError("a federation needs 2 or more client datasets (partitions)")
    if rounds < 1:
        raise FederatedError(f"rounds must be 1 or more, got {rounds}")
    if not 0 < fraction_fit <= 1:
        raise FederatedError(f"fraction_fit must be in (0, 1], got {fraction_fit}")
    try:
        return lp_models.model_spec(model)
    except UnknownModelError as exc:
        if mode == "processes":
            raise FederatedError(
                "mode='processes' rebuilds the model in other processes, so it must be a zoo "
                f"model (lp.models.build); {exc.message}"
            ) from None
        return None


def run(
    model: nn.Module,
    partitions: Sequence[Dataset],
    *,
    test: Dataset,
    rounds: int = 5,
    strategy: Strategy = "fedavg",
    fraction_fit: float = 1.0,
    min_fit: int = 2,
    min_available: int | None = None,
    local_epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 32,
    optimizer: str = "adamw",
    proximal_mu: float = 0.01,
    server_lr: float = 1e-2,
    dp: ClientDP | None = None,
    secure_aggregation: bool = False,
    mode: Mode = "simulation",
    round_timeout: float = 300.0,
    timeout: float = 3600.0,
    seed: int = 0,
    track: bool = True,
    run_name: str | None = None,
    registrar: Callable[..., Any] | None = None,
    register_as: str | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    folder: str | Path | None = None,
    quiet: bool = True,
    on_start: Callable[[Any], None] | None = None,
    database: Database | None = None,
    host: str = "127.0.0.1",
    tls: TlsOption = None,
    node_auth: bool = False,
) -> FederatedResult:
    """Train ``model`` federated over ``partitions`` (one dataset per client) with Flower.

    Args:
        model: The global model's architecture and starting weights (updated in place).
            ``mode="processes"`` needs a zoo model (``lp.models.build``).
        partitions: Each client's data, e.g. from :func:`lepton.federated.partition`.
        test: The server's test data; the global model is tested after every round.
        rounds: Federated rounds.
        strategy: ``"fedavg"`` (McMahan et al. 2017), ``"fedprox"`` (Li et al. 2020: a
            proximal term ``proximal_mu`` in each client's loss) or ``"fedadam"``
            (Reddi et al. 2021: Adam on the server with step ``server_lr``).
        fraction_fit: Fraction of the connected clients sampled at random each round.
        min_fit: Sample at least this many clients per round.
        min_available: Wait until this many clients are connected before a round
            (default: ``min_fit``). Keep it below the client count to survive failures.
        local_epochs, lr, batch_size, optimizer: Each client's ``lp.fit`` settings.
        proximal_mu: FedProx's mu.
        server_lr: FedAdam's server learning rate (eta).
        dp: Client-side differential privacy (:class:`ClientDP`).
        secure_aggregation: Aggregate with SecAgg+ (Flower's ``SecAggPlusWorkflow``): the
            server sees only the sum of each round's updates, never one client's. Needs 3
            or more clients per round; costs a key exchange and masking every round.
        mode: ``"simulation"`` (Ray actors) or ``"processes"`` (SuperLink + SuperNodes).
        round_timeout: Seconds the server waits for a round's replies; later or missing
            replies are left out of the round.
        timeout: Seconds the whole run may take (``processes`` mode).
        seed: Seeds the initial weights' use, client shuffling and sampling-free parts.
        track: Record a tracking run with per-round metrics.
        run_name: The tracking run's name.
        registrar: Registers the final model when ``register_as`` is set (e.g.
            :func:`lepton.registry.register`).
        register_as: The registered model's name.
        on_round: Called with each :class:`RoundRecord` as it completes.
        folder: The job folder (default: a new temporary folder).
        quiet: Hide Flower's and Ray's logs.
        on_start: ``processes`` mode: called with the running
            :class:`~lepton.federated._processes.Federation` (its ``supernodes`` are the
            client processes) once every process is up and before the app is
            submitted, e.g. to watch or stop one.
        database: The metadata database of the tracking run (default: the configured one).
        host: ``processes`` mode: the SuperLink's bind address. Off loopback (anything but
            127.0.0.1, ::1, localhost) it needs ``tls``.
        tls: ``processes`` mode: serve the SuperLink over TLS. ``True`` makes a throwaway
            CA and a server certificate for ``host``, 127.0.0.1 and localhost in the job
            folder (``tls/``, keys 0600); or give your own PEM files as a
            :class:`~lepton.federated.TlsFiles` or ``{"ca": ..., "cert": ..., "key":
            ...}``. Default: plain HTTP, on loopback only.
        node_auth: ``processes`` mode: SuperNode authentication (Flower's
            ``--enable-supernode-auth``): each SuperNode gets an EC key pair, its public
            key is registered with the SuperLink before it starts, and the SuperLink
            refuses any node whose key was not registered. Needs ``tls``.

    Returns:
        A :class:`FederatedResult`: per-round accuracy, loss, clients and bytes, the
        wall time and the final model.

    Raises:
        FederatedError: Bad arguments, or the federation failed (the logs are named).
        FederationTimeoutError: The run did not finish within ``timeout``.
        InsecureFederationError: ``host`` is off loopback and ``tls`` is off (nothing is
            started).

    Example:
        >>> parts = lp.federated.partition(train, 5, scheme="dirichlet")  # doctest: +SKIP
        >>> result = lp.federated.run(model, parts, test=test, rounds=10)  # doctest: +SKIP
    """
    spec = _check(model, partitions, mode, strategy, rounds, fraction_fit)
    if mode == "processes":
        check_transport(host, tls, node_auth)
    elif tls not in (None, False) or node_auth or host != "127.0.0.1":
        raise FederatedError(
            "host, tls and node_auth apply to mode='processes' (a simulation has no "
            "network); drop them or use mode='processes'"
        )
    per_round = max(min(min_fit, len(partitions)), int(fraction_fit * len(partitions)))
    if secure_aggregation and per_round < 3:
        raise FederatedError(
            "secure_aggregation needs 3 or more clients in every round (masks are shared "
            f"among them); this run samples {per_round}: give 3+ partitions, and raise "
            f"fraction_fit or min_fit"
        )
    started = time.perf_counter()
    base = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="lepton-fl-"))
    job = Job(
        folder=str(base.resolve()), n_clients=len(partitions), rounds=rounds, strategy=strategy,
        fraction_fit=fraction_fit, min_fit=min(min_fit, len(partitions)),
        min_available=min_available if min_available is not None else min(min_fit, len(partitions)),
        local_epochs=local_epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
        proximal_mu=proximal_mu if strategy == "fedprox" else 0.0, server_lr=server_lr,
        round_timeout=round_timeout, seed=seed, model=spec,
        dp=dp.to_json() if dp is not None else None, secure_aggregation=secure_aggregation,
    )  # fmt: skip
    job.write(model, list(partitions), test)
    params = {k: v for k, v in vars(job).items() if k not in ("folder", "model", "dp")}
    params.update(mode=mode, model=(spec or {}).get("name", type(model).__name__))
    if mode == "processes":
        params.update(host=host, tls=tls not in (None, False), node_auth=node_auth)
    if dp is not None:
        params.update(dp_clip=dp.clip, dp_noise_multiplier=dp.noise_multiplier)
    tracked = _start_run(run_name, params, partitions, database) if track else None
    seen: list[RoundRecord] = []

    def report(record: RoundRecord) -> None:
        seen.append(record)
        if tracked is not None:
            tracked.log_metrics(_metrics_of(record), step=record.round)
        if on_round is not None:
            on_round(record)

    try:
        if mode == "simulation":
            _simulate(job, model if spec is None else None, report, quiet)
        else:
            _deploy(job, report, timeout, on_start, host=host, tls=tls, node_auth=node_auth)
        done = (Path(job.folder) / "done.json").read_text()
        if '"error": null' not in done:
            raise FederatedError(f"the ServerApp failed: {done}; see the logs in {job.folder}")
        model.load_state_dict(load_file(str(Path(job.folder) / "final.safetensors")))
        result = FederatedResult(
            model=model, rounds=read_rounds(job.folder), seconds=time.perf_counter() - started,
            mode=mode, strategy=strategy, folder=job.folder,
            run_id=tracked.id if tracked is not None else None,
        )  # fmt: skip
        if tracked is not None:
            _finish_run(tracked, result, registrar, register_as)
        return result
    except BaseException:
        if tracked is not None:
            tracked.end("failed")
        raise


def _metrics_of(record: RoundRecord) -> dict[str, float]:
    out = {f"global_{k}": v for k, v in record.metrics.items()}
    out.update(
        clients=float(record.clients_replied), clients_sampled=float(record.clients_sampled),
        clients_failed=float(record.clients_failed), bytes_down=float(record.bytes_down),
        bytes_up=float(record.bytes_up), round_seconds=record.seconds,
    )  # fmt: skip
    return out


def _start_run(
    name: str | None, params: dict[str, Any], partitions: Sequence[Dataset], db: Database | None
) -> Any:
    from lepton.tracking import start_run

    tracked = start_run(name, params=params, tags={"lepton.kind": "federated"}, database=db)
    for i, part in enumerate(partitions[:50]):
        tracked.log_dataset(part, role=f"client-{i}")
    return tracked


def _finish_run(
    tracked: Any, result: FederatedResult, registrar: Callable[..., Any] | None, name: str | None
) -> None:
    final = result.rounds[-1] if result.rounds else None
    if final is not None:
        tracked.log_metrics({f"final_{k}": v for k, v in final.metrics.items()})
    tracked.log_metrics({"wall_seconds": result.seconds})
    if registrar is not None and name is not None:
        version = registrar(result.model, name, metrics=final.metrics if final else None,
                            run=tracked)  # fmt: skip
        result.extra["registered"] = getattr(version, "ref", str(version))
    tracked.end("finished")


def _simulate(
    job: Job, template: nn.Module | None, report: Callable[..., None], quiet: bool
) -> None:
    import os

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    if job.secure_aggregation:
        from lepton.federated._secagg import make_secure_client_app as make_client_app
        from lepton.federated._secagg import make_secure_server_app as make_server_app
    else:
        from lepton.federated._flower import make_client_app, make_server_app

    if quiet:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    cpus = max(1, os.cpu_count() or 1)
    run_simulation(
        server_app=make_server_app(job.folder, template, report),
        client_app=make_client_app(job.folder, template),
        num_supernodes=job.n_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "logging_level": "ERROR", "log_to_driver": not quiet},
        },
    )  # fmt: skip


def _deploy(
    job: Job, report: Callable[..., None], timeout: float, on_start: Callable[[Any], None] | None,
    *, host: str = "127.0.0.1", tls: TlsOption = None, node_auth: bool = False,
) -> None:  # fmt: skip
    from lepton.federated._processes import Federation

    done: set[int] = set()

    def poll() -> None:
        for record in read_rounds(job.folder):
            if record.round not in done:
                done.add(record.round)
                report(record)

    with Federation(job, host=host, tls=tls, node_auth=node_auth) as federation:
        if on_start is not None:
            on_start(federation)  # before the app is submitted: round 1 has not begun
        federation.submit()
        federation.wait(timeout, poll)
