"""Running the platform server: first-start set-up, the login link, uvicorn, the demo."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from rich.console import Console

from lepton._fs import open_private
from lepton.config import get_settings
from lepton.platform._app import Platform, ServerConfig, create_app
from lepton.platform._auth import admin_token_path
from lepton.platform.deployments._specs import DeploymentView
from lepton.serve._http_server import server_config
from lepton.storage import open_database

__all__ = ["login_link", "run_server", "still_running"]

log = logging.getLogger("lepton.platform")
console = Console(highlight=False, soft_wrap=True)


def login_link(platform: Platform) -> str:
    """A fresh one-time dashboard link for the first admin (valid 15 minutes)."""
    secret = platform.auth.login_link_secret(platform.auth.admin_id())
    return f"{platform.config.url}/login?token={secret}"


class _Server(uvicorn.Server):
    """uvicorn, telling us when it listens and when it has stopped (before uvicorn raises
    the signal that stopped it again, which ends the process)."""

    def __init__(
        self, config: uvicorn.Config, on_ready: Callable[[], None], on_stopped: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self._on_ready, self._on_stopped = on_ready, on_stopped

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets)  # type: ignore[arg-type]
        if self.started:
            self._on_ready()

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().shutdown(sockets)  # type: ignore[arg-type]
        self._on_stopped()


def run_server(config: ServerConfig, *, demo: bool = False, demo_epochs: int = 2) -> None:
    """Serve the platform until interrupted (Ctrl-C or SIGTERM).

    Args:
        config: Where and how to serve.
        demo: On an empty home, train the seed ConvNet on MNIST as a job, register it,
            deploy it, and print how to get a prediction.
        demo_epochs: Epochs of the demo's training job.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    home = get_settings().home
    platform = Platform(open_database(), home, config)
    if config.manage:  # a second server on this database stops here, with who holds it
        platform.lease.acquire()
    new_secret = platform.auth.bootstrap(home)
    app = create_app(platform)

    def ready() -> None:
        url = config.url
        console.print(f"[bold]Lepton platform[/] at {url}  (API: {url}/api/v1, docs: {url}/docs)")
        if new_secret:
            console.print(f"created the admin user; its API token is in {admin_token_path(home)}")
        console.print(f"open the dashboard (one-time link, 15 min):\n  {login_link(platform)}")
        if demo:
            threading.Thread(
                target=_demo, args=(platform, demo_epochs), name="lepton-demo", daemon=True
            ).start()

    server = _Server(
        server_config(  # header, body and idle timeouts and a connection limit
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        ),
        ready,
        lambda: _say_what_keeps_running(platform) if config.manage else None,
    )
    try:
        server.run()
    finally:
        platform.lease.release()  # also when uvicorn could not start


def _say_what_keeps_running(platform: Platform) -> None:
    """Deployments outlive the server: say which, where, and how to stop them."""
    note = still_running(platform.deployments.list(0, 10_000)[0])
    if note:
        console.print(note)


def still_running(views: list[DeploymentView]) -> str | None:
    """What a stopping server says about the deployments that keep serving (``None``
    when there are none): which, on which address, who adopts them, how to stop them."""
    running = [v for v in views if v.desired == "running"]
    if not running:
        return None
    lines = [f"{len(running)} deployment(s) keep running after this server stops:"]
    lines += [f"  {v.name} ({v.ref}) on {v.url}, supervisor pid {v.pid}" for v in running]
    lines.append(
        "the next `lepton server` on this home adopts them; stop them with "
        "`lepton deployments stop --all` (or `lepton deployments stop NAME`)"
    )
    return "\n".join(lines)


def _demo(platform: Platform, epochs: int) -> None:
    """Train, register and deploy the seed ConvNet on an empty home; print how to use it."""
    from lepton.platform.deployments._specs import DeploymentRequest
    from lepton.platform.jobs._specs import JobRequest

    try:
        if platform.jobs.list(offset=0, limit=1)[1] or platform.deployments.list(0, 1)[1]:
            console.print("demo: this home has jobs or deployments already; nothing submitted")
            return
        spec = {
            "kind": "train",
            "model": "convnet",
            "data": "mnist",
            "epochs": epochs,
            "batch_size": 64,
            "lr": 2e-3,
            "schedule": "onecycle",
            "config": {"num_filters": [32, 64, 128], "kernel_size": 3, "dropout": 0.5},
            "register": "mnist-convnet",
        }
        # the demo may use the whole machine, or the threads LEPTON_NUM_THREADS allows
        cpus = float(get_settings().num_threads or os.cpu_count() or 1)
        job = platform.jobs.submit(JobRequest.model_validate({"spec": spec, "cpus": cpus}), "demo")
        platform.audit("demo", "POST /jobs", f"/api/v1/jobs/{job.id}", 201, {})
        console.print(
            f"demo: training job {job.id} queued (ConvNet on MNIST, {epochs} epoch(s)); "
            f"follow it on the dashboard's Jobs page"
        )
        while (job := platform.jobs.get(job.id)).state not in (
            "succeeded",
            "failed",
            "cancelled",
            "lost",
        ):
            time.sleep(1.0)
        if job.state != "succeeded":
            console.print(f"[red]demo: job {job.id} ended {job.state}: {job.error}[/]")
            return
        ref = (job.result or {}).get("registered")
        deployment = platform.deployments.create(
            DeploymentRequest(name="mnist", model=str(ref), replicas=1, port=None), "demo"
        )
        platform.audit("demo", "POST /deployments", "/api/v1/deployments/mnist", 201, {})
        digit = _digit_png(platform.home)
        url = platform.config.url
        console.print(
            f"demo: registered {ref} (test accuracy "
            f"{100 * float((job.result or {}).get('metrics', {}).get('accuracy', 0)):.2f}%) and "
            f"deployed it as {deployment.name!r}. Get a prediction:\n"
            f'  curl -H "Authorization: Bearer $(cat {admin_token_path(platform.home)})" '
            f"-H 'Content-Type: image/png' --data-binary @{digit} "
            f"{url}/api/v1/deployments/mnist/predict"
        )
    except Exception as exc:  # the server keeps running; say what failed
        log.exception("demo failed")
        console.print(f"[red]demo failed: {exc}[/]")


def _digit_png(home: Path) -> Path:
    """A real MNIST test digit as a PNG, for the demo's curl line."""
    from PIL import Image

    from lepton import data as lp_data

    test = lp_data.load("mnist", split="test")
    x, y = test[0]
    path = home / "demo" / f"mnist-test-0-label-{int(y)}.png"
    pixels = (x.squeeze(0).clamp(0, 1) * 255).round().byte().numpy()
    with open_private(path, "wb") as out:  # 0600, in a 0700 folder, like all of home
        Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return path
