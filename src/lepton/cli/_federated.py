"""``lepton federated``: train a zoo model federated over a partitioned catalog dataset
with Flower, as a simulation or as real SuperLink / SuperNode processes, with a progress
line per round."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["federated"]

console = Console(highlight=False, soft_wrap=True)


def federated(
    model: str = typer.Option("convnet", "--model", "-m", help="Zoo model."),
    data: str = typer.Option("mnist", "--data", "-d", help="Catalog dataset (split over clients)."),
    clients: int = typer.Option(5, "--clients", "-c", help="Number of clients."),
    partition: str = typer.Option(
        "dirichlet", help="iid, dirichlet (label skew set by --alpha) or shards (2 classes each)."
    ),
    alpha: float = typer.Option(0.5, help="Dirichlet concentration: smaller is more skewed."),
    rounds: int = typer.Option(10, "--rounds", "-r", help="Federated rounds."),
    strategy: str = typer.Option("fedavg", help="fedavg, fedprox or fedadam (Flower's)."),
    fraction_fit: float = typer.Option(1.0, help="Fraction of clients sampled each round."),
    min_fit: int = typer.Option(2, help="Sample at least this many clients per round."),
    min_available: int | None = typer.Option(
        None, help="Clients that must be connected before a round (default: --min-fit)."
    ),
    local_epochs: int = typer.Option(1, help="Epochs each client trains per round."),
    lr: float = typer.Option(1e-3, help="Client learning rate."),
    batch_size: int = typer.Option(32, help="Client batch size."),
    proximal_mu: float = typer.Option(0.01, help="FedProx's proximal weight mu."),
    server_lr: float = typer.Option(1e-2, help="FedAdam's server learning rate."),
    dp_clip: float | None = typer.Option(
        None, help="Client-side DP: clip each update to this L2 norm (and add noise)."
    ),
    dp_noise: float = typer.Option(1.0, help="Client-side DP: noise multiplier."),
    dp_ledger: str | None = typer.Option(
        None, help="Client-side DP: charge ledger keys '<prefix>/client-<i>' each round."
    ),
    secure_aggregation: bool = typer.Option(
        False, help="SecAgg+: the server sees only each round's sum of updates (3+ clients)."
    ),
    mode: str = typer.Option(
        "simulation", help="simulation (Ray, one process) or processes (SuperLink + SuperNodes)."
    ),
    tls: bool = typer.Option(
        False, "--tls", help="--mode processes: TLS to the SuperLink (a throwaway CA by default)."
    ),
    tls_ca: Path | None = typer.Option(None, help="With --tls: your CA certificate (PEM)."),
    tls_cert: Path | None = typer.Option(
        None, help="With --tls: the SuperLink's certificate (PEM, issued by --tls-ca)."
    ),
    tls_key: Path | None = typer.Option(None, help="With --tls: its private key (PEM)."),
    node_auth: bool = typer.Option(
        False, "--node-auth", help="Only SuperNodes whose keys are registered join (needs --tls)."
    ),
    host: str = typer.Option(
        "127.0.0.1", help="--mode processes: the SuperLink's bind address (off loopback: --tls)."
    ),
    round_timeout: float = typer.Option(300.0, help="Seconds to wait for a round's replies."),
    limit: int | None = typer.Option(None, help="Use the first N training rows."),
    test_limit: int | None = typer.Option(None, help="Test on the first N test rows."),
    seed: int = typer.Option(0, help="Seeds the partition, the weights and the clients."),
    register: str | None = typer.Option(None, help="Register the final model under this name."),
    as_json: bool = typer.Option(False, "--json", help="Print the rounds as JSON only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Federated learning on Flower: clients keep their data, only model updates travel.

    The training split is partitioned over --clients (non-IID with --partition dirichlet);
    each round Flower's strategy samples --fraction-fit of the clients, each trains the
    global model for --local-epochs with `lp.fit` on its own rows, and the strategy
    averages the updates (FedProx adds a proximal term, FedAdam an Adam step on the
    server). The global model is tested on the test split after every round; the run is
    tracked (`lepton runs show ID`, dashboard /federated/ID).

    --mode processes starts a real Flower SuperLink and one SuperNode per client as
    separate processes on 127.0.0.1 (stopped when the run ends); a client that dies is
    left out of the round after --round-timeout. --tls serves the SuperLink over TLS (a
    throwaway CA in the run's folder, or --tls-ca/--tls-cert/--tls-key), --node-auth
    registers one key per SuperNode and refuses any other node; a --host off loopback
    is refused without --tls.

    Example: `lepton federated --model convnet --data mnist --clients 5 --partition
    dirichlet --alpha 0.5 --rounds 10 --strategy fedprox --mode processes`.
    """
    from lepton.errors import ConfigError
    from lepton.federated import RoundRecord, TlsFiles
    from lepton.federated.recipe import FederatedConfig
    from lepton.federated.recipe import run as run_recipe
    from lepton.registry import register as registrar

    own = (tls_ca, tls_cert, tls_key)
    if any(own) and not all(own):
        raise ConfigError("give all three of --tls-ca, --tls-cert and --tls-key, or none")
    tls_files = TlsFiles.of(tls_ca, tls_cert, tls_key) if tls_ca and tls_cert and tls_key else None

    config = FederatedConfig.checked(
        model=model, data=data, clients=clients, partition=partition, alpha=alpha,
        rounds=rounds, strategy=strategy, fraction_fit=fraction_fit, min_fit=min_fit,
        min_available=min_available, local_epochs=local_epochs, lr=lr, batch_size=batch_size,
        proximal_mu=proximal_mu, server_lr=server_lr, dp_clip=dp_clip, dp_noise=dp_noise,
        dp_ledger=dp_ledger, secure_aggregation=secure_aggregation, mode=mode, tls=tls,
        node_auth=node_auth,
        round_timeout=round_timeout, limit=limit,
        test_limit=test_limit, seed=seed, register=register,
    )  # fmt: skip
    if quiet or as_json:
        result = run_recipe(config, registrar=registrar, host=host, tls_files=tls_files)
    else:
        columns = (
            TextColumn("[bold]federated[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), TimeElapsedColumn(),
        )  # fmt: skip
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("starting the federation", total=rounds)

            def on_round(r: RoundRecord) -> None:
                line = _line(r)
                if r.round > 0:
                    progress.console.print(line)
                progress.update(task, completed=r.round, description=line)

            result = run_recipe(
                config, registrar=registrar, on_round=on_round, say=console.print, host=host,
                tls_files=tls_files,
            )  # fmt: skip
    if as_json:
        print(json.dumps({"run_id": result.run_id, "seconds": result.seconds,
                          "rounds": [r.to_json() for r in result.rounds]}, indent=2))  # fmt: skip
        return
    table = Table(title=f"{strategy} over {clients} clients ({mode})", title_justify="left")
    for column in ("round", "accuracy", "loss", "clients", "failed", "MB up", "seconds"):
        table.add_column(column, justify="right")
    for r in result.rounds:
        acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
        cells = (str(r.clients_replied), str(r.clients_failed), f"{r.bytes_up / 1e6:.1f}")
        table.add_row(str(r.round), acc, f"{r.loss:.4f}", *cells, f"{r.seconds:.1f}")
    console.print(table)
    console.print(f"{result.seconds:.0f} s in all; run: `lepton runs show {result.run_id}`, "
                  f"dashboard /federated/{result.run_id}")  # fmt: skip
    if "registered" in result.extra:
        console.print(f"registered as {result.extra['registered']}")


def _line(r: object) -> str:
    from lepton.federated import RoundRecord

    assert isinstance(r, RoundRecord)
    acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
    return (f"round {r.round}: accuracy {acc}, loss {r.loss:.4f}, {r.clients_replied} clients"
            f"{f' ({r.clients_failed} failed)' if r.clients_failed else ''}, "
            f"{(r.bytes_up + r.bytes_down) / 1e6:.1f} MB, {r.seconds:.1f} s")  # fmt: skip
