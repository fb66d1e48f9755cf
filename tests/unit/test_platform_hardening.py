"""The platform server against what an outside attack tried: nothing of a request is read
before its caller is known, on every route; refused anonymous requests cannot fill the
audit log; /docs loads nothing from another origin; the error page's "back" link stays on
this server; token ids do not tell whose tokens exist; errors show no server paths; a
deactivated user's tokens and sessions are gone for good. (An in-process app on a real
SQLite database, called through ASGI and Starlette's test client; no scheduler threads.)"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from lepton.config import get_settings
from lepton.errors import ChecksumError
from lepton.platform._app import Platform, create_app
from lepton.platform._guards import RefusalCounter
from lepton.platform._http import PUBLIC, iter_routes, public, rule_of
from lepton.platform.web._render import SECURITY_HEADERS, local_path
from lepton.storage.schema import AuditRow

BASE = "http://127.0.0.1:8000"
# Bodies no route could parse, in every encoding a route might read.
MALFORMED = {
    "application/json": b"{bad",
    "application/x-www-form-urlencoded": b"%zz=%",
    "multipart/form-data; boundary=xyz": b"--nope\r\n\r\ngarbage",
    "application/octet-stream": b"\x80\x04garbage",
}


@pytest.fixture
def admin(platform: Platform) -> str:
    secret = platform.auth.bootstrap(get_settings().home)
    assert secret is not None
    return secret


def _client(app: Any, token: str | None = None, **kwargs: Any) -> TestClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(app, base_url=BASE, headers=headers, raise_server_exceptions=False, **kwargs)


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "1" if "id" in m.group(0) else "x", path)


class _Call:
    """One request sent straight to the ASGI app, with a receive that records whether the
    app ever asked for the body."""

    def __init__(
        self, app: Any, method: str, path: str, headers: dict[str, str], body: bytes = b"{bad"
    ) -> None:
        self.body_read, self._body = False, body
        self.messages: list[dict[str, Any]] = []
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        anyio.run(app, scope, self._receive, self._send)

    async def _receive(self) -> dict[str, Any]:
        self.body_read = True
        return {"type": "http.request", "body": self._body, "more_body": False}

    async def _send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


def _refused_routes(app: Any, allowed: str | None) -> Iterator[tuple[str, str]]:
    """Every (method, path) whose rule does not admit a caller of role ``allowed``."""
    from lepton.platform._auth import allows

    for method, path, endpoint in iter_routes(app.routes):
        rule = rule_of(endpoint)
        if rule == PUBLIC or (allowed is not None and allows(allowed, rule or "admin")):
            continue
        yield method, _fill(path)


def _expect_refused(call: _Call, path: str, status: int, what: str) -> None:
    assert not call.body_read, f"{what}: the body was read before the refusal"
    if path.startswith("/api/"):
        assert call.status == status, (what, call.status, call.body)
        assert b'"code"' in call.body, (what, call.body)
    elif status == 401:  # a page: the browser is sent to sign in
        assert call.status == 303, (what, call.status, call.body)
        assert call.headers["location"] == "/login-help", what
    else:
        assert call.status == status, (what, call.status, call.body)


def test_no_route_reads_a_body_before_its_caller_is_known(app: Any, admin: str) -> None:
    checked = 0
    for method, path in _refused_routes(app, None):
        for content_type, body in MALFORMED.items():
            headers = {
                "host": "127.0.0.1:8000",
                "content-type": content_type,
                "content-length": str(10**12),  # huge, and never sent: 401 comes first
            }
            call = _Call(app, method, path, headers, body)
            _expect_refused(call, path, 401, f"{method} {path} {content_type}")
            if path.startswith("/api/"):
                assert call.headers["www-authenticate"] == "Bearer"
                assert b"unauthorized" in call.body
            assert call.headers.get("connection") == "close"  # the unread body is not waited for
            checked += 1
    assert checked >= 4 * 50


def test_a_bad_token_is_no_caller_and_a_low_role_is_refused_before_the_body(
    app: Any, platform: Platform, admin: str
) -> None:
    viewer = platform.auth.create_user("vera", "viewer")
    secret = platform.auth.create_token(viewer.id, "t")[1]
    for method, path in _refused_routes(app, None):
        call = _Call(
            app,
            method,
            path,
            {
                "host": "127.0.0.1:8000",
                "authorization": "Bearer lp_not-a-real-token",
                "content-type": "application/json",
            },
        )
        _expect_refused(call, path, 401, f"bad token: {method} {path}")
    refused = 0
    for method, path in _refused_routes(app, "viewer"):
        call = _Call(
            app,
            method,
            path,
            {
                "host": "127.0.0.1:8000",
                "authorization": f"Bearer {secret}",
                "content-type": "application/json",
            },
        )
        _expect_refused(call, path, 403, f"viewer: {method} {path}")
        refused += 1
    assert refused >= 15


def test_over_http_a_malformed_body_without_a_token_gets_401_not_422(app: Any) -> None:
    with _client(app) as client:
        for method, path in _refused_routes(app, None):
            if not path.startswith("/api/"):
                continue
            answer = client.request(
                method, path, content=b"{bad", headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "unauthorized"


def test_the_caller_is_looked_up_once_and_off_the_event_loop(
    app: Any, platform: Platform, admin: str
) -> None:
    calls: list[bool] = []
    original = platform.auth.authenticate

    def counting(secret: str, kind: Any = "api") -> Any:
        try:
            asyncio.get_running_loop()
            calls.append(True)  # on the event loop: every other request would wait
        except RuntimeError:
            calls.append(False)
        return original(secret, kind)

    platform.auth.authenticate = counting  # type: ignore[method-assign]
    with _client(app, admin) as client:
        assert client.get("/api/v1/me").status_code == 200
        assert client.post("/api/v1/users", json={"name": "olga"}).status_code == 201
    assert calls == [False, False]


def test_public_routes_take_only_a_small_body_from_a_stranger(app: Any, admin: str) -> None:
    body = b"x" * (65 * 1024)
    with _client(app) as client:
        refused = client.request("GET", "/api/v1/health", content=body)
        assert refused.status_code == 413, refused.text
        assert "without a token" in refused.json()["error"]["message"]
        assert client.request("GET", "/api/v1/health", content=b"x" * 1024).status_code == 200
    with _client(app, admin) as client:
        assert client.request("GET", "/api/v1/health", content=body).status_code == 200


def test_refused_anonymous_requests_are_counted_in_few_audit_entries(
    app: Any, platform: Platform, admin: str
) -> None:
    for address in ("10.0.0.1", "10.0.0.2"):
        with _client(app, client=(address, 4000)) as client:
            for i in range(100):
                path = "/api/v1/users" if i % 2 else "/api/v1/jobs"
                assert client.post(path, content=b"{bad").status_code == 401
    viewer = platform.auth.create_user("vic", "viewer")
    secret = platform.auth.create_token(viewer.id, "t")[1]
    with _client(app, secret) as client:
        for _ in range(5):  # a known caller: one entry per request, refused or not
            assert client.post("/api/v1/users", json={"name": "x"}).status_code == 403
    with platform.db.session() as s:
        rows = [(r.actor, r.action, r.status, dict(r.detail)) for r in s.query(AuditRow)]
    anonymous = [r for r in rows if r[0] == "anonymous"]
    assert len(anonymous) == 4  # one per client address and action
    assert sum(d["count"] for *_, d in anonymous) == 200
    assert {d["client"] for *_, d in anonymous} == {"10.0.0.1", "10.0.0.2"}
    assert all(d["count"] == 50 and status == 401 for _, _, status, d in anonymous)
    assert [r[:3] for r in rows if r[0] == "vic"] == [("vic", "POST /api/v1/users", 403)] * 5


def test_the_refusal_count_opens_an_entry_a_window_and_caps_its_keys(
    platform: Platform,
) -> None:
    each_request = RefusalCounter(window_s=0.0)
    for _ in range(3):
        anyio.run(each_request.count, platform, "10.0.0.9", "POST /a", "/a", 401)
    capped = RefusalCounter(max_keys=2)
    for i in range(5):
        anyio.run(capped.count, platform, f"10.1.0.{i}", "POST /b", "/b", 401)
    with platform.db.session() as s:
        rows = [(r.action, dict(r.detail)) for r in s.query(AuditRow).order_by(AuditRow.id)]
    assert [d["count"] for a, d in rows if a == "POST /a"] == [1, 1, 1]
    clients = {d["client"]: d["count"] for a, d in rows if a == "POST /b"}
    assert clients == {"10.1.0.0": 1, "10.1.0.1": 1, "*": 3}


def test_docs_is_our_own_page_with_the_dashboard_policy(app: Any) -> None:
    with _client(app) as client:
        page = client.get("/docs")
        spec = client.get("/openapi.json")
    assert page.status_code == 200
    assert spec.status_code == 200
    assert page.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "http://" not in page.text
    assert "https://" not in page.text
    for link in re.findall(r'(?:src|href|action)="([^"]*)"', page.text):
        assert local_path(link) == link, link
    assert 'href="/openapi.json"' in page.text
    for method, path, _ in iter_routes(app.routes):
        if path.startswith("/api/"):
            assert path in page.text, (method, path)


@pytest.mark.parametrize(
    "referer",
    [
        f"{BASE}//evil.test/x",
        f"{BASE}/\\evil.test/x",
        f"{BASE}/\\\\evil.test",
        f"{BASE}/\t/evil.test",
        "https://evil.test/runs",
        "//evil.test/runs",
        "javascript:alert(1)",
        "http://127.0.0.1:8000@evil.test/x",
        "http://evil.test:8000/x",
        "file:///etc/passwd",
    ],
)
def test_the_error_pages_back_link_never_leaves_this_server(app: Any, referer: str) -> None:
    with _client(app) as client:
        page = client.get("/no-such-page", headers={"Accept": "text/html", "Referer": referer})
    assert page.status_code == 404
    assert "← back" not in page.text
    assert "evil" not in page.text


def test_the_error_pages_back_link_goes_back_on_this_server(app: Any) -> None:
    with _client(app) as client:
        page = client.get(
            "/no-such-page", headers={"Accept": "text/html", "Referer": f"{BASE}/runs?offset=50"}
        )
    assert page.status_code == 404
    assert '<a href="/runs?offset=50">← back</a>' in page.text


def test_only_paths_on_this_server_make_links() -> None:
    assert local_path("/runs/3?x=//y") == "/runs/3?x=//y"
    for hostile in ("//evil", "/\\evil", "\\\\evil", "/\t/evil", "/x\ny", "http://e/", "", "x"):
        assert local_path(hostile) == "", hostile


def _session(app: Any, platform: Platform, user_id: int) -> TestClient:
    client = _client(app)
    link = platform.auth.login_link_secret(user_id)
    assert client.get(f"/login?token={link}", follow_redirects=False).status_code == 303
    return client


def test_token_ids_tell_nobody_whose_tokens_exist(app: Any, platform: Platform, admin: str) -> None:
    alice = platform.auth.create_user("alice", "editor")
    alices, _ = platform.auth.create_token(alice.id, "laptop")
    bob = platform.auth.create_user("bob", "viewer")
    bobs = platform.auth.create_token(bob.id, "t")[1]
    missing = 99_999
    with _client(app, bobs) as client:
        theirs = client.delete(f"/api/v1/tokens/{alices.id}")
        nobodys = client.delete(f"/api/v1/tokens/{missing}")
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json() == {
            "error": {**nobodys.json()["error"], "message": _swap(nobodys, missing, alices.id)}
        }
        # a user's token list: the same refusal whether the user exists or not
        listed = client.get(f"/api/v1/users/{alice.id}/tokens")
        unknown = client.get(f"/api/v1/users/{missing}/tokens")
        assert listed.status_code == unknown.status_code == 403
        assert listed.json() == unknown.json()
        made = client.post(f"/api/v1/users/{alice.id}/tokens", json={"name": "x"})
        made_unknown = client.post(f"/api/v1/users/{missing}/tokens", json={"name": "x"})
        assert made.status_code == made_unknown.status_code == 403
        assert made.json() == made_unknown.json()
    with _session(app, platform, bob.id) as browser:
        origin = {"Origin": BASE}
        page = browser.post(f"/tokens/{alices.id}/revoke", headers=origin)
        page_missing = browser.post(f"/tokens/{missing}/revoke", headers=origin)
        assert page.status_code == page_missing.status_code == 404
        assert page.text.replace(str(alices.id), "ID") == page_missing.text.replace(
            str(missing), "ID"
        )
    assert platform.auth.get_token(alices.id).revoked_at is None
    with _client(app, admin) as client:  # an admin sees and revokes anyone's
        assert client.delete(f"/api/v1/tokens/{alices.id}").status_code == 200


def _swap(answer: Any, old: int, new: int) -> str:
    message: str = answer.json()["error"]["message"]
    return message.replace(str(old), str(new))


def test_deactivating_revokes_every_token_and_session_for_good(
    app: Any, platform: Platform, admin: str
) -> None:
    carol = platform.auth.create_user("carol", "editor")
    api_token = platform.auth.create_token(carol.id, "ci")[1]
    browser = _session(app, platform, carol.id)
    unused_link = platform.auth.login_link_secret(carol.id)
    with browser, _client(app, admin) as client:
        assert browser.get("/api/v1/me").json()["name"] == "carol"
        off = client.patch(f"/api/v1/users/{carol.id}", json={"active": False})
        assert off.status_code == 200, off.text
        assert off.json()["tokens_revoked"] == 3  # the API token, the session, the link
        on = client.patch(f"/api/v1/users/{carol.id}", json={"active": True})
        assert on.json()["active"] is True
        assert on.json()["tokens_revoked"] == 0
        assert browser.get("/api/v1/me").status_code == 401
        assert browser.get("/", follow_redirects=False).headers["location"] == "/login-help"
        listed = client.get(f"/api/v1/users/{carol.id}/tokens").json()["items"]
        assert [t["revoked_at"] is not None for t in listed] == [True]
    with _client(app, api_token) as client:
        assert client.get("/api/v1/me").status_code == 401
    with _client(app) as client:
        assert client.get(f"/login?token={unused_link}", follow_redirects=False).status_code == 401
    schema = app.openapi()["paths"]["/api/v1/users/{user_id}"]["patch"]["description"]
    assert "revokes every API token" in schema


def test_server_faults_never_show_their_text(platform: Platform, admin: str) -> None:
    secret_path = f"{tempfile.gettempdir()}/lepton-secret-dir/file.bin"
    app = create_app(platform)

    @app.get("/api/v1/crash")
    @public
    def crash() -> None:
        raise RuntimeError(f"cannot open {secret_path}")

    @app.get("/api/v1/damaged")
    @public
    def damaged() -> None:
        raise ChecksumError(f"{secret_path} does not match its recorded hash")

    with _client(app) as client:
        for path, code in (
            ("/api/v1/crash", "internal_error"),
            ("/api/v1/damaged", "checksum_mismatch"),
        ):
            answer = client.get(path)
            assert answer.status_code == 500
            assert answer.json()["error"]["code"] == code
            assert "lepton-secret-dir" not in answer.text
            assert "Traceback" not in answer.text


def test_upload_errors_name_no_server_path(app: Any, admin: str) -> None:
    import pickle

    with _client(app, admin) as client:
        for payload in (pickle.dumps({"evil": 1}), b"not an onnx model"):
            answer = client.post(
                "/api/v1/models/up/versions/onnx",
                content=payload,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert answer.status_code in (400, 415), answer.text
            message = answer.json()["error"]["message"]
            assert tempfile.gettempdir() not in message, message
            assert "upload.onnx" not in message, message
