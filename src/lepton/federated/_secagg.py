"""Secure aggregation: SecAgg+ (Bell et al. 2020) through Flower's ``SecAggPlusWorkflow``
on the server and ``secaggplus_mod`` on the clients.

Each client masks its (weighted) update with pairwise masks agreed by key exchange and
secret-shares its mask seeds among the others, so the server learns only the *sum* of the
round's updates, never one client's update; clients that drop out mid-round are recovered
from the shares as long as ``reconstruction_threshold`` of them remain. Updates are
clipped to ``[-CLIP, CLIP]`` and quantized to integers for the masking (the quantization
error is ``2 * CLIP / QUANTIZATION`` per value, far below a model's training noise).

Flower 1.41 runs SecAgg+ only in its legacy workflow (``LegacyContext`` + a
``flwr.server.strategy`` strategy + a ``NumPyClient``), so this module is that path; the
client's work is the same :func:`~lepton.federated._flower.local_update` as the default
path, and the server tests and records every round with the same
:func:`~lepton.federated._flower.round_recorder`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAdam, FedAvg, FedProx
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from torch import nn

from lepton.federated._flower import (
    OnRound,
    _CountingGrid,
    _job,
    _job_folder,
    local_update,
    round_recorder,
)
from lepton.federated._job import Job

__all__ = [
    "make_secure_client_app",
    "make_secure_server_app",
    "secure_client_app",
    "secure_server_app",
]

CLIP = 64.0  # updates are clipped to [-CLIP, CLIP] before quantization
QUANTIZATION = 2**24  # levels over [-CLIP, CLIP]: a step of 7.6e-6
MODULUS = 2**32  # room for the sum of 2**8 clients' quantized values


def _float_keys(model: nn.Module) -> list[str]:
    """The state entries that are averaged (integer buffers, e.g. BatchNorm's step count,
    stay as the initial model has them)."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point()]


def _state(model: nn.Module, arrays: list[np.ndarray[Any, Any]]) -> dict[str, torch.Tensor]:
    state = dict(model.state_dict())
    for key, array in zip(_float_keys(model), arrays, strict=True):
        state[key] = torch.from_numpy(np.asarray(array))
    return state


class _Client(NumPyClient):  # type: ignore[misc]
    def __init__(self, job: Job, client: int, template: nn.Module | None) -> None:
        self.job, self.client, self.template = job, client, template

    def fit(
        self, parameters: list[np.ndarray[Any, Any]], config: dict[str, Any]
    ) -> tuple[list[np.ndarray[Any, Any]], int, dict[str, Any]]:
        model = self.job.new_model(self.template)
        state, metrics, weight = local_update(
            self.job, self.client, _state(model, parameters), int(config.get("server-round", 0)),
            float(config.get("proximal_mu", 0.0)), self.template,
        )  # fmt: skip
        return [state[k].numpy() for k in _float_keys(model)], weight, metrics


def make_secure_client_app(
    folder: str | None = None, template: nn.Module | None = None
) -> ClientApp:
    """The ClientApp of a SecAgg+ federation (``secaggplus_mod`` masks each update)."""

    def client_fn(context: Context) -> Any:
        job = _job(_job_folder(context, folder))
        return _Client(job, int(context.node_config["partition-id"]), template).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def _strategy(job: Job, initial: list[np.ndarray[Any, Any]], evaluate_fn: Any) -> FedAvg:
    common: dict[str, Any] = {
        "fraction_fit": job.fraction_fit,
        "fraction_evaluate": 0.0,
        "min_fit_clients": job.min_fit,
        "min_evaluate_clients": 0,
        "min_available_clients": job.min_available,
        "evaluate_fn": evaluate_fn,
        "on_fit_config_fn": lambda rnd: {"server-round": rnd},
        "initial_parameters": ndarrays_to_parameters(initial),
        "accept_failures": True,
    }
    if job.strategy == "fedprox":
        return FedProx(**common, proximal_mu=job.proximal_mu)
    if job.strategy == "fedadam":
        return FedAdam(**common, eta=job.server_lr, eta_l=job.lr)
    return FedAvg(**common)


def _serve(grid: Grid, context: Context, folder: str, template: nn.Module | None,
           on_round: OnRound | None) -> None:  # fmt: skip
    job = _job(folder)
    torch.manual_seed(job.seed)
    model = job.new_model(template)
    counting = _CountingGrid(grid)
    record = round_recorder(job, model, counting, on_round)
    final: list[dict[str, torch.Tensor]] = []

    def evaluate_fn(rnd: int, arrays: list[np.ndarray[Any, Any]], _config: Any) -> Any:
        state = _state(job.new_model(template), arrays)
        metrics = record(rnd, state)
        final[:] = [state]
        return metrics["loss"], metrics

    keys = _float_keys(model)
    initial = [model.state_dict()[k].numpy() for k in keys]
    largest = max(len(job.client_data(i)) for i in range(job.n_clients))
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=job.rounds, round_timeout=job.round_timeout),
        strategy=_strategy(job, initial, evaluate_fn),
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=job.secagg_shares,
            reconstruction_threshold=job.secagg_threshold,
            max_weight=float(max(largest, 1)),
            clipping_range=CLIP,
            quantization_range=QUANTIZATION,
            modulus_range=MODULUS,
            timeout=job.round_timeout,
        )
    )
    try:
        workflow(counting, legacy)  # type: ignore[arg-type]
    except Exception as exc:
        job.finish({}, error=f"{type(exc).__name__}: {exc}")
        raise
    job.finish(final[0] if final else model.state_dict())


def make_secure_server_app(
    folder: str | None = None, template: nn.Module | None = None, on_round: OnRound | None = None
) -> ServerApp:
    """The ServerApp of a SecAgg+ federation."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        _serve(grid, context, _job_folder(context, folder), template, on_round)

    return app


secure_server_app = make_secure_server_app()
secure_client_app = make_secure_client_app()
