"""Fixtures of the unit tier: a platform over this test's own LEPTON_HOME, not managing
jobs or deployments, and its app (driven in-process with Starlette's TestClient)."""

from __future__ import annotations

from typing import Any

import pytest

from lepton.config import get_settings
from lepton.platform._app import Platform, ServerConfig, create_app
from lepton.storage import open_database


@pytest.fixture
def platform() -> Platform:
    return Platform(open_database(), get_settings().home, ServerConfig(manage=False))


@pytest.fixture
def app(platform: Platform) -> Any:
    return create_app(platform)
