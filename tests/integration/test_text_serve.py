"""Registered ``lp.text`` versions on real servers: an assistant served by a real
``lepton deploy`` streams ``/chat`` as NDJSON lines (read as they arrive) and the CLI
asks it; an index and the assistant forwarded by a real ``lepton server``
(``/api/v1/deployments/NAME/search`` and the streamed ``/chat``); and a ``text`` job
through a real scheduler (the worker process fits, measures and registers).

The versions are fitted on a few sentences (MiniLM embeds them: seconds) in a home of
this module's own.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import lepton as lp
from helpers import one_slot_jobs, wait_for_job
from lepton.platform.jobs._specs import TERMINAL, JobRequest, TextJob
from lepton.storage import Database
from lepton.text.recipe import sample

pytestmark = pytest.mark.integration

from servers import LEPTON, ok, running, start_platform, stop_platform  # noqa: E402

FAQ = [
    ("How do I register a model?", "Call lp.register(model, 'name'): it stores the weights."),
    ("How do I delete a registered model version?", "Run lepton models delete NAME:VERSION."),
    ("How do I deploy a model?", "Run lepton deploy NAME: it serves the version over HTTP."),
]
GLOSSES = [
    ("a small domesticated feline; a cat", {"pos": "n"}),
    ("a motor vehicle with four wheels", {"pos": "n"}),
    ("move fast by using one's feet", {"pos": "v"}),
]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("text-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        lp.text.Assistant(FAQ, threshold=0.4).register("helpdesk")
        index = lp.text.Index("exact")
        index.add([t for t, _ in GLOSSES], metadata=[m for _, m in GLOSSES])
        index.register("glosses")
        yield home


@pytest.fixture
def home(made: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEPTON_HOME", str(made))
    return made


def _chat(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of one streamed chat, read line by line as they arrive."""
    with client.stream("POST", path, json=body) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in answer.iter_lines() if line]


def _check_chat(client: httpx.Client, path: str) -> None:
    first = _chat(client, path, {"message": "how can I put my model in the registry?"})
    assert (first[0]["event"], first[0]["question"]) == ("start", FAQ[0][0])
    assert [e["event"] for e in first[1:-1]] == ["delta"] * (len(first) - 2)
    assert "".join(e["text"] for e in first[1:-1]) == first[-1]["text"] == FAQ[0][1]
    history = [{"role": "user", "content": "how can I put my model in the registry?"},
               {"role": "assistant", "content": FAQ[0][1]}]  # fmt: skip
    follow = _chat(client, path, {"message": "and how do I delete it?", "history": history})
    assert follow[0]["used_context"] is True
    assert follow[-1]["text"] == FAQ[1][1]


@pytest.mark.slow
def test_lepton_deploy_streams_chat_and_the_cli_asks_it(home: Path, tmp_path: Path) -> None:
    with (
        running("deploy", "helpdesk", tmp=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        info = ok(client.get("/info"))
        assert (info["kind"], info["entries"], info["routes"]) == ("text-assistant", 3, ["/chat"])
        _check_chat(client, "/chat")
        out = subprocess.run(
            [LEPTON, "text", "ask", "and how do I delete it?",
             "-p", "how can I put my model in the registry?", "--url", server.url, "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        events = [json.loads(line) for line in out.stdout.splitlines()]
        assert events[0]["question"] == FAQ[1][0]
        assert events[-1] == {"event": "end", "text": FAQ[1][1]}


def _ready(client: httpx.Client, name: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, Any] = ok(client.get(f"/api/v1/deployments/{name}"))
        if found["state"] == "ready":
            return
        assert found["state"] != "failed", found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


@pytest.mark.slow
def test_the_platform_forwards_search_and_streams_chat(home: Path, tmp_path: Path) -> None:
    server = start_platform(home, tmp_path)
    try:
        with server.client() as admin:
            ok(admin.post("/api/v1/deployments", json={"name": "faq", "model": "helpdesk:1"}), 201)
            ok(admin.post("/api/v1/deployments", json={"name": "gloss", "model": "glosses:1"}), 201)
            _ready(admin, "faq")
            _ready(admin, "gloss")
            _check_chat(admin, "/api/v1/deployments/faq/chat")
            body = {"query": "a kitten", "k": 3, "filter": {"pos": "n"}}
            hits = ok(admin.post("/api/v1/deployments/gloss/search", json=body))["hits"]
            assert hits[0]["text"] == GLOSSES[0][0]
            assert {h["metadata"]["pos"] for h in hits} == {"n"}
            bad = admin.post("/api/v1/deployments/faq/chat", json={"message": ""})
            assert bad.status_code == 422
            ok(admin.post("/api/v1/deployments/faq/stop"))
            stopped = admin.post("/api/v1/deployments/faq/chat", json={"message": "hi"})
            assert stopped.status_code == 503
            assert stopped.json()["error"]["code"] == "deployment_stopped"
    finally:
        stop_platform(server, home)


# -- a text job through a real scheduler ----------------------------------------------------


def test_a_text_job_fits_measures_and_registers(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.upgrade()
    try:
        manager = one_slot_jobs(database)
        spec = TextJob.model_validate(
            {"kind": "text", "task": "classify", "encoder": "tfidf", "limit": 300,
             "register": "job-reviews"}
        )  # fmt: skip
        job = manager.submit(JobRequest(spec=spec, memory_mb=4096), "alice")
        view = wait_for_job(manager, job.id, lambda v: v.state in TERMINAL)
        log = (manager.jobs_dir / str(job.id) / "log.txt").read_text()
        assert view.state == "succeeded", log
        assert view.result is not None
        assert (view.result["kind"], view.result["registered"]) == ("text", "job-reviews:1")
        assert "registered as job-reviews:1" in log
        accuracy = view.result["metrics"]["accuracy"]
        assert 0.5 < accuracy <= 1  # two balanced classes: better than chance
        clf = lp.text.TextClassifier.from_registry("job-reviews:1", database=database)
        # the registered version is the model the job measured: its accuracy again
        test = sample(lp.data.load("rotten-tomatoes", split="test"), 300, seed=1)
        assert clf.score(test) == pytest.approx(accuracy)
        manifest = lp.registry.resolve("job-reviews:1", database=database).manifest
        assert manifest["metrics"]["accuracy"] == pytest.approx(accuracy)
        assert manifest["dataset"]["name"] == "rotten-tomatoes"
        assert manifest["dataset"]["rows"] == 300
    finally:
        database.dispose()
