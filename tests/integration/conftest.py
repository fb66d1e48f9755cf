"""Fixtures shared by the integration tests that deploy a real model.

``mnist_model`` trains one small ConvNet on 2,000 real MNIST images for the whole session
and registers it (``mnist-small:1``, promoted to production) in a home of its own:
``lepton deploy``, ``/explain`` serving and the compressed-deployment tests all start
from it, instead of each training its own copy.

``platform`` and ``browser`` (a real ``lepton server`` and Chromium, per module) serve the
real-browser tests (``browser.py`` holds what else they share).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image


class Trained(NamedTuple):
    """A registered model: its home (``LEPTON_HOME``), the module, and its reference."""

    home: Path
    model: torch.nn.Module
    ref: str


def png_of(pixels: torch.Tensor) -> bytes:
    """A ``(1, H, W)`` image in ``[0, 1]`` as grayscale PNG bytes."""
    array = (pixels.squeeze(0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def mnist_model(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A small ConvNet fit on 2,000 real MNIST images, registered as ``mnist-small:1`` and
    promoted to production. Tests point ``LEPTON_HOME`` at ``.home`` (see ``mnist_home``)
    and register anything else under other names, so that they do not depend on order."""
    import lepton as lp
    from lepton import registry

    home = tmp_path_factory.mktemp("mnist-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        torch.manual_seed(0)
        train = lp.data.load("mnist", split="train").subset(range(2000))
        model = lp.models.ConvNet(num_classes=10, num_filters=[8, 16], dropout=0.0)
        lp.fit(model, train, epochs=1, batch_size=64, quiet=True, seed=0)
        lp.register(model, "mnist-small", dataset=train)
        registry.set_stage("mnist-small:1", "production")
    return Trained(home, model.eval(), "mnist-small:1")


@pytest.fixture
def mnist_home(mnist_model: Trained, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``LEPTON_HOME`` of :func:`mnist_model` for this test (children inherit it)."""
    monkeypatch.setenv("LEPTON_HOME", str(mnist_model.home))
    return mnist_model.home


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ``lepton server`` on 127.0.0.1 with its own home, for a module's browser
    tests (a ``browser.Platform``)."""
    from browser import Platform
    from servers import start_platform, stop_platform

    home = tmp_path_factory.mktemp("dashboard-home")
    env = {**os.environ, "LEPTON_HOME": str(home)}
    env.pop("LEPTON_DATA_DIR", None)
    server = start_platform(home, home)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        yield Platform(server.url, port, home, env, server.log_path)
    finally:
        stop_platform(server, home)  # deployments outlive their server: stopped here too


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright, for a module's tests."""
    from browser import CHROMIUM, skip_without_chromium

    sync_api = skip_without_chromium()
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def to_png() -> Callable[[torch.Tensor], bytes]:
    """:func:`png_of`, for tests (a conftest cannot be imported by name)."""
    return png_of
