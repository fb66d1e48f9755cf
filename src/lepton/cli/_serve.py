"""``lepton serve``, ``lepton deploy`` and ``lepton predict``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from lepton.errors import ConfigError, RequestError

__all__ = ["deploy", "predict", "serve"]

_HOST = typer.Option("127.0.0.1", help="Bind address. Anything but loopback needs a token.")
_REPLICAS = typer.Option(1, min=1, help="Replica processes (each loads the model once).")
_TOKEN_FILE = typer.Option(
    None, help="File holding the bearer token (else $LEPTON_SERVE_TOKEN; none: no auth)."
)
_MAX_BODY = typer.Option(10.0, help="Largest request body in MB (larger: 413).")
_GRACE = typer.Option(30.0, help="Seconds a stopping replica lets requests in progress finish.")
_THREADS = typer.Option(0, help="Torch threads per replica (0: cores / replicas).")
_ALLOWED_HOST = typer.Option(
    None, "--allowed-host",
    help="Also answer requests for this Host (name or name:port; repeatable). By default "
    "only the bound address is answered (127.0.0.1, localhost, [::1] on loopback).",
)  # fmt: skip
_MAX_CONNECTIONS = typer.Option(
    1024, min=1, help="Open connections per replica beyond which new ones get 503."
)
_HEADER_TIMEOUT = typer.Option(10.0, help="Seconds a client may take to send request headers.")
_BODY_TIMEOUT = typer.Option(30.0, help="Seconds a request body may stall before a 408.")
_IDLE_TIMEOUT = typer.Option(15.0, help="Seconds an idle kept-alive connection stays open.")


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty")
        return token
    return os.environ.get("LEPTON_SERVE_TOKEN") or None


# the options of commands that ask a served model (recommend, graph): a deployment's URL
URL_OPTION = typer.Option(
    None, "--url",
    help="A running deployment instead of --model: `lepton deploy` URL (http://127.0.0.1:8100).",
)  # fmt: skip
TOKEN_FILE_OPTION = typer.Option(
    None, help="With --url: the file holding the bearer token (else $LEPTON_SERVE_TOKEN)."
)
JSON_OPTION = typer.Option(False, "--json", help="Print the JSON answer (the served route's).")


def ask_deployment(
    route: str, body: dict[str, Any], model: str | None, url: str | None,
    token_file: Path | None, what: str,
) -> dict[str, Any] | None:  # fmt: skip
    """``route``'s answer from the deployment at ``url``; ``None`` when the command names a
    registered version instead (``model``), which it then answers itself."""
    if (model is None) == (url is None):
        raise ConfigError(f"name the {what} with exactly one of --model REF or --url URL")
    if url is None:
        return None
    from lepton.serve import Client

    with Client(url, token=_token(token_file)) as client:
        answer: dict[str, Any] = client.request("POST", f"/{route}", json=body)
    return answer


def _limits(max_connections: int, header_timeout: float, body_timeout: float,
            idle_timeout: float) -> Any:  # fmt: skip
    from lepton.serve._connections import ConnectionLimits

    return ConnectionLimits(
        header_timeout_s=header_timeout, body_timeout_s=body_timeout,
        idle_timeout_s=idle_timeout, max_connections=max_connections,
    )  # fmt: skip


def _run(options: Any) -> None:
    from lepton.serve import serve as run_service

    raise typer.Exit(run_service(options))


def serve(
    target: str = typer.Argument(
        ..., help="Your service class: app.py:Classifier or module:Class."
    ),
    host: str = _HOST,
    port: int = typer.Option(8000, help="TCP port (0: any free port)."),
    replicas: int = _REPLICAS,
    token_file: Path | None = _TOKEN_FILE,
    max_body_mb: float = _MAX_BODY,
    grace: float = _GRACE,
    threads: int = _THREADS,
    allowed_host: list[str] | None = _ALLOWED_HOST,
    max_connections: int = _MAX_CONNECTIONS,
    header_timeout: float = _HEADER_TIMEOUT,
    body_timeout: float = _BODY_TIMEOUT,
    idle_timeout: float = _IDLE_TIMEOUT,
) -> None:
    """Serve an lp.Service class over HTTP (OpenAPI at /openapi.json, metrics at /metrics).

    Example: `lepton serve app.py:Classifier --replicas 2 --port 8000`
    """
    from lepton.serve import ServeOptions, load_service_class

    options = ServeOptions(target=target, host=host, port=port, replicas=replicas,
                           token=_token(token_file), max_body_bytes=int(max_body_mb * 2**20),
                           grace_s=grace, threads=threads, allowed_hosts=allowed_host or [],
                           limits=_limits(max_connections, header_timeout, body_timeout,
                                          idle_timeout))  # fmt: skip
    options.validate()
    load_service_class(target).routes()  # fail here, once, not in every replica
    _run(options)


def deploy(
    ref: str = typer.Argument(..., help="A registered version: name@production, name:3, name."),
    host: str = _HOST,
    port: int = typer.Option(8100, help="TCP port (0: any free port)."),
    replicas: int = _REPLICAS,
    token_file: Path | None = _TOKEN_FILE,
    max_body_mb: float = _MAX_BODY,
    grace: float = _GRACE,
    threads: int = _THREADS,
    allowed_host: list[str] | None = _ALLOWED_HOST,
    max_connections: int = _MAX_CONNECTIONS,
    header_timeout: float = _HEADER_TIMEOUT,
    body_timeout: float = _BODY_TIMEOUT,
    idle_timeout: float = _IDLE_TIMEOUT,
) -> None:
    """Serve a registered model (PyTorch or ONNX) with a batched POST /predict.

    The version is pinned when the command starts, so every replica serves the same one.
    Example: `lepton deploy mnist-convnet@production --replicas 2 --port 8100`, then
    `lepton predict http://127.0.0.1:8100 --input digit.png`.
    """
    from lepton.registry import resolve
    from lepton.serve import ServeOptions

    version = resolve(ref)
    options = ServeOptions(model=version.ref, host=host, port=port, replicas=replicas,
                           token=_token(token_file), max_body_bytes=int(max_body_mb * 2**20),
                           grace_s=grace, threads=threads, allowed_hosts=allowed_host or [],
                           limits=_limits(max_connections, header_timeout, body_timeout,
                                          idle_timeout))  # fmt: skip
    options.validate()
    print(f"deploying {version.ref} (resolved from {ref})", file=sys.stderr)
    _run(options)


def _read_input(path: Path) -> dict[str, Any]:
    import base64

    import numpy as np

    if not path.is_file():
        raise RequestError(f"--input {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg"):
        return {"image": base64.b64encode(path.read_bytes()).decode("ascii")}
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise RequestError(f"--input {path} is not valid JSON ({exc})") from None
        return data if isinstance(data, dict) and ("inputs" in data or "image" in data) \
            else {"inputs": data}  # fmt: skip
    if suffix == ".npy":
        return {"inputs": np.load(path, allow_pickle=False).tolist()}
    raise RequestError(f"--input {path}: use a .png/.jpg image, a .json tensor or a .npy array")


def predict(
    target: str = typer.Argument(
        ..., help="A service URL (http://127.0.0.1:8100) or a registered model (name@production)."
    ),
    input_: Path = typer.Option(..., "--input", "-i", help="A .png/.jpg image, .json or .npy."),
    token_file: Path | None = _TOKEN_FILE,
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON answer."),
) -> None:
    """Predict one input, with a running deployment (URL) or a registered model locally.

    Example: `lepton predict mnist-convnet@production --input digit.png`
    """
    body = _read_input(input_)
    if target.startswith(("http://", "https://")):
        from lepton.serve import Client

        with Client(target, token=_token(token_file)) as client:
            answer = client.request("POST", "/predict", json=body)
    else:
        from lepton.serve import ModelInput, ModelService

        service = ModelService(target)
        service.setup()
        result = service.predict([ModelInput.model_validate(body)])[0]
        if isinstance(result, Exception):
            raise result
        answer = result.model_dump(exclude_none=True)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    answer = {k: v for k, v in answer.items() if v is not None}
    if "label" in answer:
        print(f"label {answer['label']}  score {answer.get('score', float('nan')):.4f}")
    else:
        print(json.dumps(answer))
