"""Fixtures of the unit tier: a platform over this test's own LEPTON_HOME, not managing
jobs or deployments, its app (driven in-process with Starlette's TestClient), and a
client of it signed in as the admin."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from lepton.config import get_settings
from lepton.platform._app import Platform, ServerConfig, create_app
from lepton.storage import open_database


@pytest.fixture
def platform() -> Platform:
    return Platform(open_database(), get_settings().home, ServerConfig(manage=False))


@pytest.fixture
def app(platform: Platform) -> Any:
    return create_app(platform)


@pytest.fixture
def client(platform: Platform) -> Any:
    """Signed in as the admin twice over: a bearer token for the API, a cookie for pages."""
    admin = platform.auth.bootstrap(get_settings().home)
    client = TestClient(
        create_app(platform),
        base_url="http://127.0.0.1:8000",
        headers={"Authorization": f"Bearer {admin}"},
    )
    link = platform.auth.login_link_secret(platform.auth.admin_id())
    assert client.get(f"/login?token={link}", follow_redirects=False).status_code == 303
    return client
