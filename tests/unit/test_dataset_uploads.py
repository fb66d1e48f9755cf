"""Dataset uploads and versions through the platform: ``POST /api/v1/datasets`` (checked row
by row, size-limited, nothing half-written), the versions, one version, the diff, and the
dashboard's dataset pages (in-process app over a real SQLite database and artifact
store)."""

from __future__ import annotations

import io
import socket
import threading
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi.testclient import TestClient

import lepton as lp
from helpers import wait_until
from lepton.config import get_settings
from lepton.platform._app import Platform, ServerConfig, create_app
from lepton.storage import artifact_store, open_database

OURS = {"origin": "http://127.0.0.1:8000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iris_csv(rows: slice = slice(None), *, bump: int | None = None) -> bytes:
    iris = lp.data.load("iris", split="all")
    names = iris.feature_names or []
    x = iris.features.numpy()[rows].copy()
    y = iris.targets.numpy()[rows]  # type: ignore[union-attr]
    if bump is not None:
        x[bump, 0] += 1.0
    lines = [",".join([*names, "species"])]
    lines += [",".join([*(repr(float(v)) for v in r), iris.classes[t]])  # type: ignore[index]
              for r, t in zip(x, y, strict=True)]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def _upload(client: Any, content: bytes, name: str = "iris-up", **form: str) -> Any:
    return client.post(
        "/api/v1/datasets",
        files={"file": (form.pop("filename", "iris.csv"), content, "text/csv")},
        data={"name": name, **form},
    )


def _nothing_stored(client: Any, name: str) -> None:
    assert client.get(f"/api/v1/datasets/{name}/versions").status_code == 404
    assert artifact_store().list("datasets/") == []


def test_upload_versions_one_version_and_the_diff(client: Any) -> None:
    first = _upload(client, _iris_csv(), target="species")
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["ref"], body["rows"], body["format"]) == ("iris-up@1", 150, "parquet")
    assert body["schema"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert body["stats"]["class_counts"]["setosa"] == 50
    again = _upload(client, _iris_csv())  # the last column is the target by default
    assert (again.status_code, again.json()["ref"]) == (200, "iris-up@1")
    second = _upload(client, _iris_csv(bump=4), derived_from="iris-up@1")
    assert (second.status_code, second.json()["derived_from"]) == (201, "iris-up@1")
    listed = client.get("/api/v1/datasets/iris-up/versions").json()
    assert [v["version"] for v in listed["items"]] == [2, 1]
    one = client.get("/api/v1/datasets/iris-up/versions/1").json()
    assert one["fingerprint"] == body["fingerprint"]
    assert one["used_by"] == []
    diff = client.get("/api/v1/datasets/iris-up/diff?a=1&b=2").json()
    assert (diff["rows"]["added"], diff["rows"]["removed"]) == (1, 1)
    assert diff["rows"]["added_rows"] == [4]
    assert diff["schema_changes"] == []
    assert diff["identical"] is False
    assert len(diff["distribution"]["features"]) == 4
    assert client.get("/api/v1/datasets/iris-up/versions/7").status_code == 404
    listed_all = {d["name"]: d for d in client.get("/api/v1/datasets?limit=500").json()["items"]}
    assert listed_all["iris-up"]["versions"] == 2
    assert listed_all["iris"]["versions"] == 0
    assert client.get("/api/v1/datasets/iris-up").json() == listed_all["iris-up"]
    back = lp.data.load_version("iris-up@2", store=lp.storage.DatasetVersionStore(open_database()))
    assert back.fingerprint() == second.json()["fingerprint"]


def test_parquet_uploads_are_read_like_csv(client: Any) -> None:
    iris = lp.data.load("iris", split="all")
    table = pa.table({"a": iris.features.numpy()[:, 0], "label": iris.targets.numpy()})  # type: ignore[union-attr]
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    answer = _upload(client, buffer.getvalue(), "iris-pq", filename="iris.parquet")
    assert answer.status_code == 201, answer.text
    assert [c["name"] for c in answer.json()["schema"]["columns"]] == ["a"]


def test_a_bad_csv_reports_each_bad_row_and_stores_nothing(client: Any) -> None:
    bad = b"a,b,label\n1,2,x\n3,oops,y\n5,6\n7,8,x\n9,,y\n"
    answer = _upload(client, bad, "bad-rows")
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_rows"
    assert [(r["line"], r["column"]) for r in error["bad_rows"]] == [(3, "b"), (4, None)]
    assert "line 3: column 'b': 'oops' is not a number" in error["message"]
    _nothing_stored(client, "bad-rows")
    not_table = _upload(client, b"\x89PNG...", "pic", filename="pic.png")
    assert not_table.status_code == 422
    assert "upload a table" in not_table.json()["error"]["message"]
    _nothing_stored(client, "pic")


def test_an_upload_over_the_limit_is_refused_and_stores_nothing() -> None:
    platform = Platform(
        open_database(), get_settings().home, ServerConfig(manage=False, max_upload_bytes=2000)
    )
    admin = platform.auth.bootstrap(get_settings().home)
    with TestClient(
        create_app(platform),
        base_url="http://127.0.0.1:8000",
        headers={"Authorization": f"Bearer {admin}"},
    ) as client:
        big = _upload(client, _iris_csv(), "too-big")
        assert big.status_code == 413
        assert "upload limit of 2,000 bytes" in big.json()["error"]["message"]
        _nothing_stored(client, "too-big")
        small = _upload(client, _iris_csv(slice(0, 10)), "small")
        assert small.status_code == 201


def test_the_dataset_pages_show_versions_profile_lineage_and_diff(client: Any) -> None:
    assert _upload(client, _iris_csv()).status_code == 201
    assert _upload(client, _iris_csv(bump=0), derived_from="iris-up@1").status_code == 201
    listing = client.get("/datasets").text
    assert 'href="/datasets/iris-up"' in listing
    assert 'id="upload-dataset"' in listing  # the admin may upload
    page = client.get("/datasets/iris-up?version=2").text
    assert "iris-up@2: schema" in page
    assert "sepal length (cm)" in page
    assert 'id="profile"' in page
    assert '<span class="mono">iris-up@1</span>' in page  # derived from
    assert 'action="/datasets/iris-up/diff"' in page
    diff = client.get("/datasets/iris-up/diff?a=1&b=2").text
    assert "iris-up@1 → iris-up@2" in diff
    assert "(first at rows 0 of iris-up@2)" in diff
    missing = client.get("/datasets/nothing-here")
    assert missing.status_code == 404
    assert "no registered dataset named" in missing.text


def test_the_upload_form_lists_bad_rows_and_keeps_what_was_typed(client: Any) -> None:
    answer = client.post(
        "/datasets",
        files={"file": ("bad.csv", b"a,label\n1,x\nnope,y\n2,x\n", "text/csv")},
        data={"name": "form-bad", "target": "label"},
        headers=OURS,
    )
    assert answer.status_code == 422
    assert 'id="bad-rows"' in answer.text
    assert "nope" in answer.text
    assert 'value="form-bad"' in answer.text
    _nothing_stored(client, "form-bad")
    good = client.post(
        "/datasets",
        files={"file": ("ok.csv", b"a,label\n1,x\n3,y\n2,x\n", "text/csv")},
        data={"name": "form-ok"},
        headers=OURS,
        follow_redirects=False,
    )
    assert good.status_code == 303
    assert good.headers["location"] == "/datasets/form-ok?version=1"


@pytest.mark.integration
def test_an_interrupted_upload_leaves_nothing(platform: Platform) -> None:
    """A client that drops the connection half-way through its file (over real HTTP on
    127.0.0.1): no version, no artifact; the next, whole upload is version 1."""
    port = free_port()
    platform.config.port = port
    admin = platform.auth.bootstrap(get_settings().home)
    server = uvicorn.Server(
        uvicorn.Config(create_app(platform), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=30)
        content = _iris_csv()
        boundary = "lepton-test-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\niris-cut\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="iris.csv"'
            f"\r\nContent-Type: text/csv\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = len(head) + len(content) + len(tail)
        request = (
            f"POST /api/v1/datasets HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {admin}\r\nContent-Length: {length}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(request + head + content[: len(content) // 2])
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            assert client.get("/api/v1/datasets/iris-cut/versions").status_code == 404
            assert artifact_store().list("datasets/") == []
            whole = _upload(client, content, "iris-cut")
            assert (whole.status_code, whole.json()["ref"]) == (201, "iris-cut@1")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
