"""The federated recipe: "train a zoo model federated over a partitioned catalog dataset".

``lepton federated`` and a platform ``federated`` job run this recipe with a
:class:`FederatedConfig`, whose defaults are defined here once: the catalog's training
split (its first ``limit`` rows) -> :func:`~lepton.federated.partition` -> the zoo model ->
:func:`~lepton.federated.run` tested on the test split each round -> registered when asked.

Example:
    >>> config = FederatedConfig.checked(model="mlp", data="digits", clients=3, rounds=2)
    >>> result = run(config)  # doctest: +SKIP
    >>> [round(r.accuracy, 2) for r in result.rounds]  # doctest: +SKIP
    [0.1, 0.83, 0.91]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from lepton import data as lp_data
from lepton import models as lp_models
from lepton.errors import ConfigError
from lepton.federated._dp import ClientDP
from lepton.federated._job import RoundRecord
from lepton.federated._partition import partition
from lepton.federated._run import FederatedResult
from lepton.federated._run import run as run_federated
from lepton.federated._tls import TlsFiles, check_transport
from lepton.storage import Database
from lepton.train.recipe import RecipeConfig, build_model, catalog_name, load_data

__all__ = ["FederatedConfig", "run"]


class FederatedConfig(RecipeConfig):
    """What to train federated: a zoo model, a catalog dataset split over ``clients``,
    the strategy and each client's local training. Checked strictly and frozen; a
    platform ``FederatedJob`` is this class plus its ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    model: str = Field("convnet", description="Zoo model (`lepton models zoo`).")
    data: str = Field("mnist", description="Catalog dataset (`lepton data list`).")
    limit: int | None = Field(None, ge=1, le=100_000_000, description="Use N training rows.")
    test_limit: int | None = Field(None, ge=1, le=100_000_000, description="Test on N rows.")
    clients: int = Field(5, ge=2, le=1000, description="Number of clients (partitions).")
    partition: Literal["iid", "dirichlet", "shards"] = Field(
        "dirichlet", description="How the rows are split over the clients."
    )
    alpha: float = Field(0.5, gt=0, le=1e6, description="Dirichlet concentration (skew).")
    rounds: int = Field(10, ge=1, le=10_000, description="Federated rounds.")
    strategy: Literal["fedavg", "fedprox", "fedadam"] = Field(
        "fedavg", description="Flower strategy."
    )
    fraction_fit: float = Field(1.0, gt=0, le=1, description="Clients sampled per round.")
    min_fit: int = Field(2, ge=1, le=1000, description="At least this many per round.")
    min_available: int | None = Field(
        None, ge=1, le=1000, description="Clients connected before a round starts."
    )
    local_epochs: int = Field(1, ge=1, le=1000, description="Epochs of lp.fit per round.")
    lr: float = Field(1e-3, gt=0, le=10, description="Client learning rate.")
    batch_size: int = Field(32, ge=1, le=65536, description="Client batch size.")
    optimizer: Literal["adamw", "adam", "sgd", "adagrad", "rmsprop"] = "adamw"
    proximal_mu: float = Field(0.01, ge=0, le=100, description="FedProx's mu.")
    server_lr: float = Field(1e-2, gt=0, le=10, description="FedAdam's server step.")
    dp_clip: float | None = Field(None, gt=0, le=1e6, description="Client DP: clip norm.")
    dp_noise: float = Field(1.0, ge=0, le=1e3, description="Client DP: noise multiplier.")
    dp_ledger: str | None = Field(None, description="Client DP: ledger key prefix.")
    secure_aggregation: bool = Field(
        False, description="SecAgg+: the server sees only the sum of each round's updates."
    )
    mode: Literal["simulation", "processes"] = Field(
        "simulation", description="Ray simulation or SuperLink + SuperNode processes."
    )
    tls: bool = Field(
        False, description="processes mode: TLS between SuperLink and SuperNodes (throwaway CA)."
    )
    node_auth: bool = Field(
        False, description="processes mode: only SuperNodes with registered keys join (TLS)."
    )
    round_timeout: float = Field(300.0, gt=0, le=86400, description="Seconds per round.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    register_as: str | None = Field(
        None, alias="register", description="Register the final model under this name."
    )

    @field_validator("data")
    @classmethod
    def _known_data(cls, value: str) -> str:
        return catalog_name(value)

    @model_validator(mode="after")
    def _transport(self) -> Self:
        if (self.tls or self.node_auth) and self.mode != "processes":
            raise ValueError(
                "tls and node_auth need mode 'processes' (a simulation has no network)"
            )
        if self.node_auth and not self.tls:
            raise ValueError("node_auth needs tls (Flower signs SuperNode requests over TLS only)")
        return self

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in lp_models.available_models():
            raise ValueError(
                f"unknown model {value!r}; use one of {', '.join(lp_models.available_models())}"
            )
        return value


def run(
    config: FederatedConfig,
    *,
    registrar: Callable[..., Any] | None = None,
    database: Database | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    say: Callable[[str], None] | None = None,
    run_name: str | None = None,
    host: str = "127.0.0.1",
    tls_files: TlsFiles | None = None,
) -> FederatedResult:
    """Run the federation ``config`` describes, tracked as one run.

    Args:
        config: What to train.
        registrar: Registers the final model when ``config.register_as`` is set, e.g.
            :func:`lepton.registry.register`.
        database: The metadata database for the tracking run.
        on_round: Called after every round.
        say: Receives one line at each step, e.g. ``print``.
        run_name: The tracking run's name.
        host: processes mode: the SuperLink's bind address; off loopback it needs
            ``config.tls`` (paths and addresses are arguments here, not config fields, so
            a platform job cannot name them).
        tls_files: processes mode with ``config.tls``: your own CA, server certificate
            and key instead of a throwaway CA.
    """
    tell = say or (lambda _: None)
    tls: bool | TlsFiles = tls_files if (config.tls and tls_files is not None) else config.tls
    if tls_files is not None and not config.tls:
        raise ConfigError("tls_files given but tls is off: set tls=True (`--tls`) to use them")
    if config.mode == "processes":
        check_transport(host, tls, config.node_auth)  # before the data is loaded
    train = load_data(config.data, "train", config.limit)
    test = lp_data.load(config.data, split="test")
    if config.test_limit is not None and config.test_limit < len(test):
        test = test.subset(slice(0, config.test_limit))
    parts = partition(
        train, config.clients, scheme=config.partition, alpha=config.alpha, seed=config.seed
    )
    tell(
        f"federated {config.model} on {config.data}: {len(train)} rows over {config.clients} "
        f"clients ({config.partition}), {config.rounds} rounds of {config.strategy}, "
        f"{config.mode} mode"
    )
    model = build_model(config.model, train, {})
    dp = None
    if config.dp_clip is not None:
        dp = ClientDP(clip=config.dp_clip, noise_multiplier=config.dp_noise,
                      ledger=config.dp_ledger)  # fmt: skip
    return run_federated(
        model, parts, test=test, rounds=config.rounds, strategy=config.strategy,
        fraction_fit=config.fraction_fit, min_fit=config.min_fit,
        min_available=config.min_available, local_epochs=config.local_epochs, lr=config.lr,
        batch_size=config.batch_size, optimizer=config.optimizer,
        proximal_mu=config.proximal_mu, server_lr=config.server_lr, dp=dp, mode=config.mode,
        secure_aggregation=config.secure_aggregation,
        round_timeout=config.round_timeout, seed=config.seed, run_name=run_name,
        registrar=registrar, register_as=config.register_as, on_round=on_round,
        database=database, host=host, tls=tls, node_auth=config.node_auth,
    )  # fmt: skip
