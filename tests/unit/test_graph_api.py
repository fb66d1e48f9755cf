"""``/api/v1/graphs``: SPARQL over the graphs persisted under the server's home, in-process
on a real SQLite database and real pyoxigraph stores: viewers query, editors update,
nothing reaches another host, and the limits hold."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

import lepton as lp
from lepton.platform._app import Platform, create_app
from lepton.platform.api import _graphs

BASE = "http://127.0.0.1:8000"
KNOWS = "SELECT ?o WHERE { <e/alice> <r/knows> ?o } ORDER BY ?o"
ADD_DAN = {"update": "INSERT DATA { <e/alice> <r/knows> <e/dan> }"}


def _as(platform: Platform, name: str, role: Any) -> TestClient:
    user = platform.auth.create_user(name, role)
    _, secret = platform.auth.create_token(user.id, "t")
    return TestClient(create_app(platform), base_url=BASE,
                      headers={"Authorization": f"Bearer {secret}"})  # fmt: skip


@pytest.fixture
def people(platform: Platform) -> Any:
    graph = lp.graph.create("people")
    graph.load_rows([("alice", "knows", "bob"), ("bob", "knows", "carol")])
    graph.close()  # this test's handle goes, as a notebook's would
    del graph
    return platform


def _objects(answer: Any) -> list[str]:
    return [row["o"].rsplit("/", 1)[1] for row in answer.json()["rows"]]


def test_a_viewer_lists_and_queries_but_cannot_update(people: Platform) -> None:
    viewer = _as(people, "vic", "viewer")
    listed = viewer.get("/api/v1/graphs").json()
    assert [(g["name"], g["triples"], g["inferred"]) for g in listed] == [("people", 2, 0)]
    assert listed[0]["sources"][0]["triples"] == 2
    answer = viewer.post("/api/v1/graphs/people/query", json={"query": KNOWS})
    assert answer.status_code == 200, answer.text
    assert _objects(answer) == ["bob"]
    assert answer.json()["form"] == "SELECT"
    refused = viewer.post("/api/v1/graphs/people/update", json=ADD_DAN)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    # an update sent to the read-only route is refused too, and changes nothing
    sneaky = viewer.post("/api/v1/graphs/people/query", json={"query": ADD_DAN["update"]})
    assert sneaky.status_code == 400
    assert sneaky.json()["error"]["code"] == "sparql_error"
    assert viewer.get("/api/v1/graphs/people").json()["triples"] == 2


def test_an_editor_updates_atomically_and_is_audited(people: Platform) -> None:
    editor = _as(people, "eve", "editor")
    done = editor.post("/api/v1/graphs/people/update", json=ADD_DAN)
    assert done.status_code == 200, done.text
    assert done.json() == {"graph": "people", "triples_before": 2, "triples_after": 3}
    assert _objects(editor.post("/api/v1/graphs/people/query", json={"query": KNOWS})) == [
        "bob", "dan",
    ]  # fmt: skip
    half = "INSERT DATA { <e/x> <r/y> <e/z> } ; DELETE WHERE { oops"
    bad = editor.post("/api/v1/graphs/people/update", json={"update": half})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "sparql_error"
    assert editor.get("/api/v1/graphs/people").json()["triples"] == 3  # nothing half-applied
    load = editor.post("/api/v1/graphs/people/update",
                       json={"update": "LOAD <http://example.org/data.ttl>"})  # fmt: skip
    assert load.status_code == 400
    assert "LOAD is refused" in load.json()["error"]["message"]
    # the graph is closed between requests: the SDK opens it and sees the update
    assert lp.graph.open("people").count() == 3
    entries = people.db  # the guards wrote the update to the audit log
    from sqlalchemy import select

    from lepton.storage.schema import AuditRow

    with entries.session() as s:
        targets = s.scalars(select(AuditRow.target).where(AuditRow.actor == "eve")).all()
    assert "/api/v1/graphs/people/update" in targets


def test_no_federation_no_unknown_graph_and_limits(people: Platform, monkeypatch: Any) -> None:
    viewer = _as(people, "vic", "viewer")
    service = viewer.post(
        "/api/v1/graphs/people/query",
        json={"query": "SELECT * WHERE { SERVICE <http://evil.example/sparql> { ?s ?p ?o } }"},
    )
    assert service.status_code == 400
    assert "SERVICE" in service.json()["error"]["message"]
    missing = viewer.post("/api/v1/graphs/nobody/query", json={"query": KNOWS})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "graph_not_found"
    bad_name = viewer.post("/api/v1/graphs/..%2Fetc/query", json={"query": KNOWS})
    assert bad_name.status_code in (404, 422)
    too_long = viewer.post("/api/v1/graphs/people/query", json={"query": KNOWS, "timeout_s": 60})
    assert too_long.status_code == 422
    rows = viewer.post("/api/v1/graphs/people/query",
                       json={"query": "SELECT * WHERE { ?s ?p ?o }", "max_rows": 1})  # fmt: skip
    assert rows.status_code == 422
    assert rows.json()["error"]["code"] == "query_limit"
    # while MAX_RUNNING_QUERIES evaluations run, another query is answered 503
    release = threading.Event()
    busy = [
        threading.Thread(target=release.wait, name=f"{_graphs._THREAD}people", daemon=True)
        for _ in range(_graphs.MAX_RUNNING_QUERIES)
    ]
    for t in busy:
        t.start()
    try:
        crowded = viewer.post("/api/v1/graphs/people/query", json={"query": KNOWS})
        assert crowded.status_code == 503
        assert crowded.json()["error"]["code"] == "overloaded"
    finally:
        release.set()
        for t in busy:
            t.join()
    assert viewer.post("/api/v1/graphs/people/query", json={"query": KNOWS}).status_code == 200


def test_a_graph_held_by_another_process_is_a_conflict(people: Platform, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, lepton as lp; g = lp.graph.open('people'); print('open', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        viewer = _as(people, "vic", "viewer")
        held = viewer.post("/api/v1/graphs/people/query", json={"query": KNOWS})
        assert held.status_code == 409, held.text
        assert "open in another process" in held.json()["error"]["message"]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert viewer.post("/api/v1/graphs/people/query", json={"query": KNOWS}).status_code == 200
