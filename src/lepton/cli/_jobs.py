"""``lepton jobs``: submit and follow jobs on a running ``lepton server``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.errors import ConfigError
from lepton.platform.jobs._specs import JobRequest
from lepton.train.recipe import TrainConfig

__all__ = ["jobs_app"]

console = Console(highlight=False, soft_wrap=True)
TRAIN = TrainConfig.model_construct()  # the recipe's defaults, defined once
SLOTS = {name: field.default for name, field in JobRequest.model_fields.items()}
jobs_app = typer.Typer(
    help="Jobs on the platform server (LEPTON_SERVER_URL, default http://127.0.0.1:8000; "
    "token from LEPTON_TOKEN or LEPTON_HOME/admin-token).",
    no_args_is_help=True,
)


def _client() -> Any:
    from lepton.platform import PlatformClient

    return PlatformClient()


_PRIORITY = typer.Option(SLOTS["priority"], help="Higher runs first (-100..100).")
_CPUS = typer.Option(SLOTS["cpus"], help="CPU slots (also the worker's torch threads).")
_MEMORY = typer.Option(
    SLOTS["memory_mb"], help="MiB reserved; a worker that uses more is stopped and the job fails."
)
_RETRIES = typer.Option(SLOTS["max_retries"], help="Retries after a crash (0..10).")
_FOLLOW = typer.Option(
    False, "--follow", "-f", help="Stream the log until it ends; exit 1 unless it succeeded."
)


def _submit(spec: dict[str, Any], follow: bool, **slots: Any) -> None:
    with _client() as client:
        job = client.submit_job(spec, **slots)
        console.print(f"job {job['id']} {job['state']}")
        if follow:
            _follow(client, job["id"])


@jobs_app.command("train")
def submit_train(
    model: str = typer.Option(TRAIN.model, "--model", "-m", help="Zoo model (mlp, convnet, ...)."),
    data: str = typer.Option(TRAIN.data, "--data", "-d", help="Catalog dataset."),
    epochs: int = typer.Option(TRAIN.epochs, help="Passes over the training data."),
    batch_size: int = typer.Option(TRAIN.batch_size, help="Samples per optimizer step."),
    lr: float = typer.Option(TRAIN.lr, help="Learning rate."),
    limit: int | None = typer.Option(None, help="Train on the first N samples only."),
    register: str | None = typer.Option(None, help="Register the result under this name."),
    priority: int = _PRIORITY,
    cpus: float = _CPUS,
    memory_mb: int = _MEMORY,
    max_retries: int = _RETRIES,
    follow: bool = _FOLLOW,
) -> None:
    """Submit a training job (a typed spec: the server never runs a command string)."""
    spec: dict[str, Any] = {
        "kind": "train",
        "model": model,
        "data": data,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "limit": limit,
        "register": register,
    }
    _submit(spec, follow, priority=priority, cpus=cpus, memory_mb=memory_mb,
            max_retries=max_retries)  # fmt: skip


@jobs_app.command("submit")
def submit_spec(
    spec: str = typer.Argument(
        ...,
        help="The job spec as JSON: a file, '-' for standard input, or the JSON itself.",
    ),
    priority: int = _PRIORITY,
    cpus: float = _CPUS,
    memory_mb: int = _MEMORY,
    max_retries: int = _RETRIES,
    follow: bool = _FOLLOW,
) -> None:
    """Submit a job of any kind from its JSON spec; the server checks it against the
    typed spec of its kind and answers what is wrong.

    Examples: `lepton jobs submit '{"kind": "compress", "model": "mnist-convnet@production",
    "quantize": "static"}'`, `lepton jobs submit tune.json --cpus 4` (a tune spec with
    "workers": 4), `cat spec.json | lepton jobs submit -`. The kinds and their fields:
    the server's API page (/docs), schema JobRequest.
    """
    text = sys.stdin.read() if spec == "-" else spec
    if spec != "-" and not spec.lstrip().startswith("{"):
        try:
            text = Path(spec).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the spec file {spec!r}: {exc.strerror}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the spec is not JSON: {exc}") from None
    if not isinstance(body, dict) or "kind" not in body:
        raise ConfigError('the spec must be a JSON object with a "kind" (train, tune, ...)')
    _submit(body, follow, priority=priority, cpus=cpus, memory_mb=memory_mb,
            max_retries=max_retries)  # fmt: skip


@jobs_app.command("list")
def jobs_list(
    state: str | None = typer.Option(None, help="Only jobs in this state."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List jobs, newest first."""
    params = {"limit": 100, **({"state": state} if state else {})}
    with _client() as client:
        page = client.request("GET", "jobs", params=params)
    if as_json:
        print(json.dumps(page["items"], indent=2))
        return
    table = Table("id", "kind", "state", "attempts", "by", "error")
    for job in page["items"]:
        table.add_row(
            str(job["id"]),
            job["kind"],
            job["state"],
            str(job["attempts"]),
            job["created_by"],
            (job.get("error") or "")[:60],
        )
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: int = typer.Argument(..., help="Job id.")) -> None:
    """Print one job as JSON."""
    with _client() as client:
        print(json.dumps(client.request("GET", f"jobs/{job_id}"), indent=2))


@jobs_app.command("logs")
def jobs_logs(
    job_id: int = typer.Argument(..., help="Job id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until it ends."),
) -> None:
    """Print a job's log."""
    with _client() as client:
        _follow(client, job_id, once=not follow)


@jobs_app.command("cancel")
def jobs_cancel(job_id: int = typer.Argument(..., help="Job id.")) -> None:
    """Cancel a job (graceful first, then forced)."""
    with _client() as client:
        job = client.request("POST", f"jobs/{job_id}/cancel")
    console.print(f"job {job['id']} {job['state']}")


def _follow(client: Any, job_id: int, *, once: bool = False) -> None:
    offset = 0
    while True:
        chunk = client.request("GET", f"jobs/{job_id}/logs", params={"offset": offset})
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()
        offset = chunk["next_offset"]
        if once or (chunk["finished"] and not chunk["text"]):
            break
        if not chunk["text"]:
            time.sleep(0.5)
    if not once:
        job = client.request("GET", f"jobs/{job_id}")
        console.print(
            f"job {job_id} {job['state']}" + (f": {job['error']}" if job["error"] else "")
        )
        if job["state"] != "succeeded":  # so that a script that follows a job sees it fail
            raise typer.Exit(1)
