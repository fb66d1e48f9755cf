"""What the real-browser tests share (``test_dashboard.py``, ``test_dashboard_solutions.py``):
Debian's Chromium, a running ``lepton server`` with its own home (:class:`Platform`), a
tab that screenshots every page and collects script errors (:class:`Pages`), and
:func:`until`. The fixtures ``platform`` and ``browser`` are in ``conftest.py``.

Screenshots are kept in ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import LEPTON

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


def skip_without_chromium() -> Any:
    """Skip the calling test module unless Chromium and Playwright are here; answers
    ``playwright.sync_api``."""
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium is not installed at /usr/bin/chromium (sudo apt-get install "
            "chromium)",
            allow_module_level=True,
        )
    return pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@dataclass
class Platform:
    url: str
    port: int
    home: Path
    env: dict[str, str]
    log_path: Path

    def login_link(self) -> str:
        out = subprocess.run(
            [LEPTON, "server", "--login-link", "--port", str(self.port)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    @property
    def admin_token(self) -> str:
        return (self.home / "admin-token").read_text().strip()


class Pages:
    """A signed-in browser tab that screenshots every page and collects script errors."""

    def __init__(self, page: Any, prefix: str) -> None:
        self.page, self.prefix = page, prefix
        self.errors: list[str] = []
        self.shots = 0
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.on(
            "response",
            lambda r: self.errors.append(f"{r.status} {r.url}") if r.status == 404 else None,
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{prefix}-*.png"):  # a previous run's, numbered otherwise
            old.unlink()

    @classmethod
    def signed_in(cls, browser: Any, platform: Platform, prefix: str) -> Pages:
        """A new 1280x900 browser context whose tab has followed the admin's login link
        (close it with ``tab.page.context.close()``)."""
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = cls(context.new_page(), prefix)
        tab.page.goto(platform.login_link())
        return tab

    def shot(self, name: str) -> None:
        self.shots += 1
        self.page.screenshot(
            path=str(ARTIFACTS / f"{self.prefix}-{self.shots:02d}-{name}.png"), full_page=True
        )


def until(check: Any, timeout_s: float, message: str) -> None:
    """Poll ``check()`` (our pages' CSP forbids Playwright's string-evaluating waits)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.25)
