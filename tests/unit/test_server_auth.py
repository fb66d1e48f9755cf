"""The platform's authorization: every route has a rule, and every role gets exactly what
its rule says (an in-process app on a real SQLite database; no scheduler threads)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from lepton.config import get_settings
from lepton.platform._app import Platform, create_app
from lepton.platform._auth import ROLES, admin_token_path, allows, hash_secret
from lepton.platform._http import PUBLIC, iter_routes, rule_of
from lepton.storage.schema import ApiTokenRow, AuditRow

BASE = "http://127.0.0.1:8000"

# The rule every route must have. A new route fails this test until it is listed here,
# so a route can never be added without someone deciding who may call it.
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/health"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("POST", "/logout"): "viewer",
    ("GET", "/api/v1/me"): "viewer",
    ("GET", "/api/v1/datasets"): "viewer",
    ("GET", "/api/v1/datasets/{name}"): "viewer",
    ("POST", "/api/v1/datasets"): "editor",
    ("GET", "/api/v1/datasets/{name}/versions"): "viewer",
    ("GET", "/api/v1/datasets/{name}/versions/{version}"): "viewer",
    ("GET", "/api/v1/datasets/{name}/diff"): "viewer",
    ("GET", "/api/v1/privacy/budgets"): "viewer",
    ("GET", "/api/v1/privacy/budgets/{dataset}"): "viewer",
    ("GET", "/api/v1/runs"): "viewer",
    ("GET", "/api/v1/studies"): "viewer",
    ("GET", "/api/v1/studies/{name}"): "viewer",
    ("GET", "/api/v1/runs/{run_id}"): "viewer",
    ("GET", "/api/v1/runs/{run_id}/metrics"): "viewer",
    ("GET", "/api/v1/models"): "viewer",
    ("GET", "/api/v1/models/{name}/versions"): "viewer",
    ("GET", "/api/v1/models/{name}/versions/{version}"): "viewer",
    ("GET", "/api/v1/models/{name}/versions/{version}/card"): "viewer",
    ("GET", "/api/v1/models/{name}/versions/{version}/figures"): "viewer",
    ("POST", "/api/v1/models/{name}/versions"): "editor",
    ("POST", "/api/v1/models/{name}/versions/onnx"): "editor",
    ("PUT", "/api/v1/models/{name}/versions/{version}/stage"): "editor",
    ("PUT", "/api/v1/models/{name}/aliases/{alias}"): "editor",
    ("DELETE", "/api/v1/models/{name}/versions/{version}"): "admin",
    ("POST", "/api/v1/jobs"): "editor",
    ("GET", "/api/v1/jobs"): "viewer",
    ("GET", "/api/v1/jobs/{job_id}"): "viewer",
    ("POST", "/api/v1/jobs/{job_id}/cancel"): "editor",
    ("GET", "/api/v1/jobs/{job_id}/logs"): "viewer",
    ("POST", "/api/v1/deployments"): "editor",
    ("GET", "/api/v1/deployments"): "viewer",
    ("GET", "/api/v1/deployments/{name}"): "viewer",
    ("PATCH", "/api/v1/deployments/{name}"): "editor",
    ("POST", "/api/v1/deployments/{name}/stop"): "editor",
    ("POST", "/api/v1/deployments/{name}/start"): "editor",
    ("DELETE", "/api/v1/deployments/{name}"): "editor",
    ("GET", "/api/v1/deployments/{name}/metrics"): "viewer",
    ("GET", "/api/v1/deployments/{name}/autoscale"): "viewer",
    ("PUT", "/api/v1/deployments/{name}/autoscale"): "editor",
    ("DELETE", "/api/v1/deployments/{name}/autoscale"): "editor",
    ("POST", "/api/v1/deployments/{name}/release"): "editor",
    ("POST", "/api/v1/deployments/{name}/canary"): "editor",
    ("GET", "/api/v1/deployments/{name}/canary"): "viewer",
    ("POST", "/api/v1/deployments/{name}/canary/promote"): "editor",
    ("DELETE", "/api/v1/deployments/{name}/canary"): "editor",
    ("POST", "/api/v1/deployments/{name}/predict"): "viewer",
    ("POST", "/api/v1/deployments/{name}/explain"): "viewer",
    ("POST", "/api/v1/deployments/{name}/recommend"): "viewer",
    ("POST", "/api/v1/deployments/{name}/similar"): "viewer",
    ("POST", "/api/v1/deployments/{name}/predict_link"): "viewer",
    ("POST", "/api/v1/deployments/{name}/query"): "viewer",
    ("POST", "/api/v1/deployments/{name}/search"): "viewer",
    ("POST", "/api/v1/deployments/{name}/chat"): "viewer",
    ("POST", "/api/v1/deployments/{name}/generate"): "viewer",
    ("POST", "/api/v1/deployments/{name}/detect"): "viewer",
    ("POST", "/api/v1/deployments/{name}/sample"): "viewer",
    ("GET", "/api/v1/alerts/rules"): "viewer",
    ("POST", "/api/v1/alerts/rules"): "editor",
    ("DELETE", "/api/v1/alerts/rules/{name}"): "editor",
    ("GET", "/api/v1/alerts"): "viewer",
    ("GET", "/api/v1/deployments/{name}/predictions"): "viewer",
    ("GET", "/api/v1/deployments/{name}/drift"): "viewer",
    ("GET", "/api/v1/deployments/{name}/drift/history"): "viewer",
    ("GET", "/api/v1/deployments/{name}/anomalies"): "viewer",
    ("GET", "/metrics"): "viewer",
    ("GET", "/api/v1/graphs"): "viewer",
    ("GET", "/api/v1/graphs/{name}"): "viewer",
    ("POST", "/api/v1/graphs/{name}/query"): "viewer",
    ("POST", "/api/v1/graphs/{name}/update"): "editor",
    ("GET", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users"): "admin",
    ("GET", "/api/v1/users/{user_id}"): "admin",
    ("PATCH", "/api/v1/users/{user_id}"): "admin",
    # own tokens for everyone, anyone's for an admin (checked in the handler, tested below)
    ("GET", "/api/v1/users/{user_id}/tokens"): "viewer",
    ("POST", "/api/v1/users/{user_id}/tokens"): "viewer",
    ("DELETE", "/api/v1/tokens/{token_id}"): "viewer",
    ("GET", "/api/v1/audit"): "admin",
}


def _routes(app: Any) -> Iterator[tuple[str, str, Any]]:
    return iter_routes(app.routes)


def _dashboard(path: str) -> bool:
    """Dashboard pages are checked for having a rule; their rules live with the pages."""
    return not path.startswith("/api/") and path not in {p for _, p in EXPECTED}


def test_every_route_has_exactly_the_rule_we_decided(app: Any) -> None:
    found = {(m, p): rule_of(e) for m, p, e in _routes(app) if not _dashboard(p)}
    assert None not in found.values(), [k for k, v in found.items() if v is None]
    assert found == EXPECTED


def test_every_dashboard_page_has_a_rule(app: Any) -> None:
    pages = [(m, p, rule_of(e)) for m, p, e in _routes(app) if _dashboard(p)]
    assert all(rule in (PUBLIC, *ROLES) for _, _, rule in pages), pages


def test_a_route_without_a_rule_is_closed(app: FastAPI, platform: Platform) -> None:
    @app.get("/api/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {"secret": "data"}

    admin = platform.auth.bootstrap(get_settings().home)
    with _client(app, admin) as client:
        answer = client.get("/api/v1/forgotten")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


def _client(app: Any, token: str | None = None, **headers: str) -> TestClient:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return TestClient(app, base_url=BASE, headers=headers, raise_server_exceptions=False)


def _fill(path: str, user_id: int) -> str:
    """Path parameters: the caller's own id for {user_id} (own tokens are allowed), 1 for
    other ids, "x" for names."""
    path = path.replace("{user_id}", str(user_id))
    return re.sub(r"\{[^}]+\}", lambda m: "1" if "id" in m.group(0) else "x", path)


def test_authorization_matrix_over_every_route_and_role(app: Any, platform: Platform) -> None:
    home = get_settings().home
    admin = platform.auth.bootstrap(home)
    assert admin is not None
    tokens: dict[str, str | None] = {"anonymous": None, "admin": admin}
    ids = {"anonymous": 1, "admin": 1}
    for role in ("viewer", "editor"):
        user = platform.auth.create_user(f"{role}-user", role)  # type: ignore[arg-type]
        tokens[role] = platform.auth.create_token(user.id, "t")[1]
        ids[role] = user.id
    checked = 0
    for method, path, endpoint in _routes(app):
        rule = rule_of(endpoint)
        if rule == PUBLIC or not path.startswith("/api/") or path == "/api/v1/tokens/{token_id}":
            continue  # revoking token 1 would log the admin out for the rest of the test
        assert rule is not None, (method, path)
        for who, token in tokens.items():
            with _client(app, token) as client:
                answer = client.request(method, _fill(path, ids[who]), json={})
            status = answer.status_code
            if who == "anonymous":
                assert status == 401, (method, path, status, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"
            elif not allows(who, rule):
                assert status == 403, (who, method, path, status, answer.text)
            else:
                assert status not in (401, 403), (who, method, path, status, answer.text)
            if status >= 400:
                assert answer.json()["error"]["code"], answer.text
            checked += 1
    assert checked >= 3 * 35


def test_tokens_are_stored_hashed_shown_once_and_revocable(app: Any, platform: Platform) -> None:
    home = get_settings().home
    admin = platform.auth.bootstrap(home)
    assert admin is not None
    assert (admin_token_path(home).stat().st_mode & 0o777) == 0o600
    assert admin_token_path(home).read_text().strip() == admin
    assert platform.auth.bootstrap(home) is None  # only at the first start
    with _client(app, admin) as client:
        alice = client.post("/api/v1/users", json={"name": "alice", "role": "editor"}).json()
        created = client.post(f"/api/v1/users/{alice['id']}/tokens", json={"name": "ci"}).json()
        secret = created["secret"]
        listed = client.get(f"/api/v1/users/{alice['id']}/tokens").json()
    assert listed["total"] == 1
    assert secret not in str(listed)
    with platform.db.session() as s:
        stored = [t.sha256 for t in s.query(ApiTokenRow).all()]
    assert hash_secret(secret) in stored
    assert secret not in stored
    with _client(app, secret) as client:
        assert client.get("/api/v1/me").json() == {
            "id": alice["id"],
            "name": "alice",
            "role": "editor",
            "via": "bearer",
        }
        # an editor manages its own tokens, not another user's
        assert client.get("/api/v1/users/1/tokens").status_code == 403
        assert client.delete(f"/api/v1/tokens/{created['token']['id']}").status_code == 200
        assert client.get("/api/v1/me").status_code == 401


def test_deactivated_users_and_expired_login_links_stop_working(
    app: Any, platform: Platform
) -> None:
    admin = platform.auth.bootstrap(get_settings().home)
    bob = platform.auth.create_user("bob", "viewer")
    _, secret = platform.auth.create_token(bob.id, "t")
    with _client(app, admin) as client:
        assert client.patch(f"/api/v1/users/{bob.id}", json={"active": False}).status_code == 200
        # an admin cannot lock itself out
        assert client.patch("/api/v1/users/1", json={"role": "viewer"}).status_code == 409
    with _client(app, secret) as client:
        assert client.get("/api/v1/me").status_code == 401
    link = platform.auth.login_link_secret(platform.auth.admin_id())
    with _client(app) as client:
        first = client.get(f"/login?token={link}", follow_redirects=False)
        assert first.status_code == 303
        assert "httponly" in first.headers["set-cookie"].lower()
        assert "samesite=strict" in first.headers["set-cookie"].lower()
        again = client.get(f"/login?token={link}", follow_redirects=False)
        assert again.status_code == 401  # one use only


def test_cookie_requests_that_change_state_need_our_origin(app: Any, platform: Platform) -> None:
    platform.auth.bootstrap(get_settings().home)
    link = platform.auth.login_link_secret(platform.auth.admin_id())
    with _client(app) as client:
        client.get(f"/login?token={link}", follow_redirects=False)
        assert client.get("/api/v1/me").json()["via"] == "cookie"
        body = {"name": "mallory", "role": "admin"}
        forged = client.post("/api/v1/users", json=body, headers={"Origin": "https://evil.test"})
        assert forged.status_code == 403
        assert "cross-site" in forged.json()["error"]["message"]
        assert client.post("/api/v1/users", json=body).status_code == 403  # no Origin at all
        ours = client.post("/api/v1/users", json=body, headers={"Origin": BASE})
        assert ours.status_code == 201


def test_foreign_host_headers_and_oversized_bodies_are_refused(platform: Platform) -> None:
    platform.config.max_body_bytes = 1024
    app = create_app(platform)
    admin = platform.auth.bootstrap(get_settings().home)
    with _client(app, admin, Host="evil.test") as client:
        answer = client.get("/api/v1/me")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_host"
    with _client(app, admin) as client:
        big = client.post("/api/v1/users", content=b"x" * 4096)
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            for _ in range(8):
                yield b"y" * 512

        streamed = client.post("/api/v1/users", content=chunks())
        assert streamed.status_code == 413


def test_errors_are_json_with_a_code_never_a_traceback(app: Any, platform: Platform) -> None:
    admin = platform.auth.bootstrap(get_settings().home)
    with _client(app, admin) as client:
        cases = {
            client.get("/api/v1/nope"): (404, "not_found"),
            client.get("/api/v1/runs/12345"): (404, "run_not_found"),
            client.get("/api/v1/models/ghost/versions"): (404, "model_not_found"),
            client.get("/api/v1/datasets/ghost"): (404, "dataset_not_found"),
            client.get("/api/v1/jobs?limit=0"): (422, "invalid_request"),
            client.post("/api/v1/users", json={"name": "Bad Name!"}): (422, "invalid_request"),
            client.post("/api/v1/users", content=b"{not json"): (422, "invalid_request"),
            client.delete("/api/v1/me"): (405, "method_not_allowed"),
        }
    for answer, (status, code) in cases.items():
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code
        assert "Traceback" not in answer.text


def test_pickles_uploaded_as_models_are_refused(app: Any, platform: Platform) -> None:
    import io
    import pickle

    import torch

    admin = platform.auth.bootstrap(get_settings().home)
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    with _client(app, admin) as client:
        for payload in (pickle.dumps({"evil": 1}), buffer.getvalue()):
            answer = client.post(
                "/api/v1/models/evil/versions/onnx",
                content=payload,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert answer.status_code == 415, answer.text
            assert answer.json()["error"]["code"] == "unsafe_format"
        assert client.get("/api/v1/models").json()["total"] == 0


def test_every_change_is_audited_with_who_and_what(app: Any, platform: Platform) -> None:
    admin = platform.auth.bootstrap(get_settings().home)
    with _client(app, admin) as client:
        client.post("/api/v1/users", json={"name": "carol", "role": "viewer"})
        client.post("/api/v1/users", json={"name": "carol", "role": "viewer"})  # 409
        client.get("/api/v1/users")  # a read: not audited
    with _client(app) as client:
        client.post("/api/v1/users", json={"name": "eve"})  # 401, audited as anonymous
    with _client(app, admin) as client:
        entries = client.get("/api/v1/audit").json()["items"]
        refused = client.get("/api/v1/audit?refused=true").json()
        by_admin = client.get("/api/v1/audit?actor=admin").json()
    assert [(e["actor"], e["action"], e["status"]) for e in entries] == [
        ("anonymous", "POST /api/v1/users", 401),
        ("admin", "POST /api/v1/users", 409),
        ("admin", "POST /api/v1/users", 201),
    ]
    assert [e["status"] for e in refused["items"]] == [401, 409]
    assert [e["status"] for e in by_admin["items"]] == [409, 201]
    with platform.db.session() as s:
        assert s.query(AuditRow).count() == 3


def test_lists_are_paginated(app: Any, platform: Platform) -> None:
    admin = platform.auth.bootstrap(get_settings().home)
    for i in range(7):
        platform.auth.create_user(f"user{i}", "viewer")
    with _client(app, admin) as client:
        page = client.get("/api/v1/users?offset=2&limit=3").json()
    assert page["total"] == 8
    assert page["offset"] == 2
    assert page["limit"] == 3
    assert [u["name"] for u in page["items"]] == ["user1", "user2", "user3"]
