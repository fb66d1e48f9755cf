"""The Flower apps: one ServerApp (a Flower strategy driving the rounds, the global model
tested on the server's data after each) and one ClientApp (Lepton's ``fit`` on the
client's own data, then optional client-side DP).

Built on Flower 1.41's Message API (``flwr.serverapp`` / ``flwr.clientapp``) and its
strategies (FedAvg, FedProx, FedAdam); Flower does the sampling, the transport and the
aggregation. The module-level ``server_app`` and ``client_app`` are what a deployment's
SuperLink and SuperNodes load (the job folder comes from the run config); a simulation
builds the same apps with :func:`make_server_app` / :func:`make_client_app`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx
from torch import nn

from lepton.federated._dp import ledger_key, privatize
from lepton.federated._job import JOB_ENV, Job, RoundRecord
from lepton.train import evaluate, fit

__all__ = [
    "client_app",
    "local_update",
    "make_client_app",
    "make_server_app",
    "round_recorder",
    "server_app",
]

OnRound = Callable[[RoundRecord], None]


def _job_folder(context: Context, fallback: str | None) -> str:
    folder = context.run_config.get("job-dir") or fallback or os.environ.get(JOB_ENV)
    if not folder:
        raise RuntimeError("no job folder: set the run config 'job-dir'")
    return str(folder)


@cache
def _job(folder: str) -> Job:
    return Job.read(folder)


# -- client ---------------------------------------------------------------------------
def _proximal(model: nn.Module, mu: float, task: str | None) -> Callable[..., torch.Tensor]:
    """FedProx's local objective (Li et al. 2020) as a ``fit`` loss hook: the default loss
    plus ``mu / 2 * ||w - w_global||^2``."""
    anchor = [p.detach().clone() for p in model.parameters()]

    def loss(out: torch.Tensor, y: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
        base = F.cross_entropy(out, y) if task == "classification" else F.mse_loss(out, y)
        prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
        return base + (mu / 2) * prox

    return loss


def local_update(
    job: Job,
    client: int,
    global_state: dict[str, torch.Tensor],
    server_round: int,
    mu: float,
    template: nn.Module | None,
) -> tuple[dict[str, torch.Tensor], dict[str, float], int]:
    """One client's round: ``lp.fit`` on its data from the global weights (FedProx's
    proximal term when ``mu > 0``, client DP when the job has it). Returns the new
    weights, the metrics to report and the client's weight in the average."""
    data = job.client_data(client)
    model = job.new_model(template)
    model.load_state_dict(global_state)
    result = fit(
        model, data, epochs=job.local_epochs, batch_size=job.batch_size, lr=job.lr,
        optimizer=job.optimizer, seed=job.seed * 7919 + server_round * 101 + client,
        loss=_proximal(model, mu, data.task) if mu > 0 else None, quiet=True, num_threads=1,
    )  # fmt: skip
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    metrics = {"train-loss": float(result.history[-1].train["loss"])}
    weight = len(data)
    dp = job.client_dp
    if dp is not None:
        state, norm = _private_state(state, global_state, dp, client, server_round)
        metrics["update-norm"] = norm
        weight = 1  # DP-FedAvg averages uniformly: the row count stays on the client
    return state, metrics, weight


def _train(msg: Message, context: Context, folder: str, template: nn.Module | None) -> Message:
    config = msg.content.config_records["config"]
    state, values, weight = local_update(
        _job(folder), int(context.node_config["partition-id"]),
        msg.content.array_records["arrays"].to_torch_state_dict(),
        int(config.get("server-round", 0)),  # type: ignore[arg-type]
        float(config.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
        template,
    )  # fmt: skip
    metrics: dict[str, int | float | list[int] | list[float]] = dict(values)
    metrics["num-examples"] = weight
    content = RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


def _private_state(
    state: dict[str, torch.Tensor],
    global_state: dict[str, torch.Tensor],
    dp: Any,
    client: int,
    rnd: int,
) -> tuple[dict[str, torch.Tensor], float]:
    keys = [k for k, v in state.items() if v.is_floating_point()]
    noisy, norm = privatize(
        [state[k].numpy() for k in keys], [global_state[k].numpy() for k in keys], dp,
        salt=rnd * 10_000 + client,
    )  # fmt: skip
    key = ledger_key(dp, client)
    if key is not None:  # charge before anything leaves the client
        from dp_accounting import GaussianDpEvent

        from lepton.privacy import charge

        charge(key, GaussianDpEvent(dp.event_sigma), what=f"federated update round {rnd}",
               database=dp.database)  # fmt: skip
    out = dict(state)
    out.update({k: torch.from_numpy(a) for k, a in zip(keys, noisy, strict=True)})
    return out, norm


def make_client_app(folder: str | None = None, template: nn.Module | None = None) -> ClientApp:
    """The ClientApp; ``folder`` and ``template`` are given in a simulation."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _train(msg, context, _job_folder(context, folder), template)

    return app


# -- server ---------------------------------------------------------------------------
def _nbytes(content: RecordDict) -> int:
    """Payload bytes: the arrays, and the configs (where SecAgg+ sends masked vectors)."""
    arrays = sum(r.count_bytes() for r in content.array_records.values())
    return arrays + sum(_config_bytes(r) for r in content.config_records.values())


def _config_bytes(record: ConfigRecord) -> int:
    """``ConfigRecord.count_bytes`` as Flower counts (8 bytes a number), which Flower
    1.41's own fails at on an empty list."""

    def size(value: Any) -> int:
        if isinstance(value, list):
            return sum(size(v) for v in value)
        return len(value) if isinstance(value, str | bytes) else 1 if isinstance(value, bool) else 8

    return sum(len(k) + size(v) for k, v in record.items())


class _CountingGrid:
    """Flower's Grid, counting what goes through it (payload bytes, clients per round)."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.reset()

    def reset(self) -> None:
        self.down = self.up = 0
        self.calls: list[tuple[int, int]] = []  # (messages sent, good replies) per exchange

    def clients(self) -> tuple[int, int, int]:
        """Clients sampled, replied and failed this round. A round is one exchange, or
        several (SecAgg+'s four stages): a client counts as replied only if it answered
        every one."""
        calls = [(sent, ok) for sent, ok in self.calls if sent]
        sampled = max((sent for sent, _ in calls), default=0)
        replied = min((ok for _, ok in calls), default=0)
        return sampled, replied, sampled - replied

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self.down += sum(_nbytes(m.content) for m in messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        ok = [r for r in replies if not r.has_error()]
        self.calls.append((len(messages), len(ok)))
        self.up += sum(_nbytes(r.content) for r in ok)
        return replies


def make_strategy(job: Job) -> FedAvg:
    """The Flower strategy the job names (clients evaluate nothing: the server tests)."""
    common: dict[str, Any] = {
        "fraction_train": job.fraction_fit,
        "fraction_evaluate": 0.0,
        "min_train_nodes": job.min_fit,
        "min_available_nodes": job.min_available,
    }
    if job.strategy == "fedprox":
        return FedProx(**common, proximal_mu=job.proximal_mu)
    if job.strategy == "fedadam":
        return FedAdam(**common, eta=job.server_lr, eta_l=job.lr)
    return FedAvg(**common)


def round_recorder(
    job: Job, model: nn.Module, counting: _CountingGrid, on_round: OnRound | None
) -> Callable[[int, dict[str, torch.Tensor]], dict[str, float]]:
    """The server's after-round step: test the global weights on the server's data, write
    the round's record (clients, bytes, time) and report it; returns the metrics."""
    test = job.test_data()
    clock = [time.perf_counter()]

    def record(rnd: int, state: dict[str, torch.Tensor]) -> dict[str, float]:
        model.load_state_dict(state)
        metrics = {k: float(v) for k, v in evaluate(model, test).items()}
        now = time.perf_counter()
        sampled, replied, failed = counting.clients()
        done = RoundRecord(
            round=rnd, accuracy=metrics.get("accuracy"), loss=metrics["loss"],
            clients_sampled=sampled, clients_replied=replied, clients_failed=failed,
            bytes_down=counting.down, bytes_up=counting.up, seconds=now - clock[0],
            metrics=metrics,
        )  # fmt: skip
        counting.reset()
        clock[0] = now
        job.append_round(done)
        if on_round is not None:
            on_round(done)
        return metrics

    return record


def _serve(grid: Grid, folder: str, template: nn.Module | None, on_round: OnRound | None) -> None:
    job = _job(folder)
    torch.manual_seed(job.seed)
    model = job.new_model(template)
    counting = _CountingGrid(grid)
    record = round_recorder(job, model, counting, on_round)

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        return MetricRecord(dict(record(rnd, arrays.to_torch_state_dict())))

    initial = ArrayRecord(model.state_dict())
    try:
        result = make_strategy(job).start(
            grid=counting,  # type: ignore[arg-type]
            initial_arrays=initial, num_rounds=job.rounds, timeout=job.round_timeout,
            train_config=ConfigRecord({"local-epochs": job.local_epochs}),
            evaluate_fn=evaluate_fn,
        )  # fmt: skip
    except Exception as exc:
        job.finish({}, error=f"{type(exc).__name__}: {exc}")
        raise
    final = result.arrays if len(result.arrays) else initial
    job.finish(final.to_torch_state_dict())


def make_server_app(
    folder: str | None = None,
    template: nn.Module | None = None,
    on_round: OnRound | None = None,
) -> ServerApp:
    """The ServerApp; a simulation gives ``folder``, ``template`` and ``on_round``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        _serve(grid, _job_folder(context, folder), template, on_round)

    return app


server_app = make_server_app()
client_app = make_client_app()
