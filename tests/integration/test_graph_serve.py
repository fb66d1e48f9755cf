"""A registered graph embedding on the platform: a ``graph`` job through a real scheduler
(the real worker process trains on Nations, logs the run and registers the model), and
the registered version served by a real ``lepton deploy`` (``/predict_link``,
``/similar``, ``/query``, ``/info``) and forwarded by a real ``lepton server``
(``POST /api/v1/deployments/NAME/predict_link`` and ``/query``).

The model is trained by the graph recipe on the real Nations triples (PyPI ``pykeen``'s
files; seconds), registered and promoted to production in a home of its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

import lepton as lp
from helpers import one_slot_jobs, wait_for_job
from lepton import registry
from lepton.errors import DataSourceMissingError
from lepton.graph import Embedding, TripleSplits, load_triples
from lepton.graph.recipe import GraphConfig, run
from lepton.platform.jobs._specs import TERMINAL, GraphJob, JobRequest
from lepton.storage import Database
from lepton.tracking import get_run

pytestmark = pytest.mark.integration

from servers import ok, running, start_platform, stop_platform  # noqa: E402


class Served(NamedTuple):
    home: Path
    data: TripleSplits
    emb: Embedding


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("graph-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        mp.delenv("LEPTON_DATA_DIR", raising=False)
        try:
            data = load_triples("nations")
        except DataSourceMissingError as exc:
            pytest.skip(f"Nations is not installed: {exc.message}")
        config = GraphConfig.checked(dim=16, epochs=5, register="nations")
        result = run(config, registrar=lp.register, num_threads=1)
        assert result.registered == "nations:1"
        registry.set_stage("nations:1", "production")
        assert result.embedding is not None
        yield Served(home, data, result.embedding)


@pytest.fixture
def home(served: Served, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEPTON_HOME", str(served.home))
    return served.home


def _check_answers(client: httpx.Client, prefix: str, served: Served) -> None:
    emb, data = served.emb, served.data
    for head, relation in (("usa", "economicaid"), ("china", "embassy"), ("cuba", "treaties")):
        body = {"head": head, "relation": relation, "k": 5}
        answer = ok(client.post(f"{prefix}/predict_link", json=body))
        expected = emb.predict_tail(head, relation, k=5)
        assert [t["entity"] for t in answer["tails"]] == [e for e, _ in expected]
        assert [t["score"] for t in answer["tails"]] == pytest.approx([s for _, s in expected])
    known = {data.entities[t] for h, r, t in data.all.tolist()
             if (data.entities[h], data.relations[r]) == ("usa", "economicaid")}  # fmt: skip
    body = {"head": "usa", "relation": "economicaid", "k": 14, "exclude_known": True}
    fresh = ok(client.post(f"{prefix}/predict_link", json=body))
    assert known.isdisjoint(t["entity"] for t in fresh["tails"])
    assert len(fresh["tails"]) == 14 - len(known)

    rows = ok(client.post(f"{prefix}/query", json={
        "query": "SELECT ?t WHERE { e:usa r:economicaid ?t }", "max_rows": 100,
    }))  # fmt: skip
    assert {r["t"].rsplit("/", 1)[1] for r in rows["rows"]} == known
    refused = client.post(f"{prefix}/query", json={"query": "DROP ALL"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "sparql_error"
    federated = "SELECT * WHERE { SERVICE <http://127.0.0.1:1/sparql> { ?s ?p ?o } }"
    refused = client.post(f"{prefix}/query", json={"query": federated})
    assert refused.status_code == 400
    assert "SERVICE is refused" in refused.json()["error"]["message"]
    too_many = client.post(f"{prefix}/query", json={"query": "SELECT * { ?s ?p ?o }",
                                                    "max_rows": 100})  # fmt: skip
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "query_limit"
    unknown = client.post(f"{prefix}/predict_link", json={"head": "mars", "relation": "embassy"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_entity"


def test_lepton_deploy_of_a_graph_embedding_answers_like_the_model(
    served: Served, home: Path, tmp_path: Path
) -> None:
    with (
        running("deploy", "nations@production", tmp=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        info = ok(client.get("/info"))
        assert (info["kind"], info["ref"], info["entities"]) == ("graph-embedding", "nations:1", 14)
        assert info["triples"] == 1992
        _check_answers(client, "", served)
        similar = ok(client.post("/similar", json={"entity": "usa", "k": 3}))
        assert [e["entity"] for e in similar["entities"]] == [
            e for e, _ in served.emb.similar("usa", k=3)
        ]


def _ready(client: httpx.Client, name: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, Any] = ok(client.get(f"/api/v1/deployments/{name}"))
        if found["state"] == "ready":
            return found
        assert found["state"] != "failed", found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


@pytest.mark.slow
def test_the_platform_forwards_predict_link_and_query(
    served: Served, home: Path, tmp_path: Path
) -> None:
    server = start_platform(home, tmp_path)
    try:
        with server.client() as admin:
            body = {"name": "nations-kg", "model": "nations:1"}
            ok(admin.post("/api/v1/deployments", json=body), 201)
            _ready(admin, "nations-kg")
            _check_answers(admin, "/api/v1/deployments/nations-kg", served)
            ok(admin.post("/api/v1/deployments/nations-kg/stop"))
            stopped = admin.post("/api/v1/deployments/nations-kg/query",
                                 json={"query": "ASK {}"})  # fmt: skip
            assert stopped.status_code == 503
            assert stopped.json()["error"]["code"] == "deployment_stopped"
        url = f"{server.url}/api/v1/deployments/nations-kg/query"
        anonymous = httpx.post(url, json={"query": "ASK {}"}, timeout=30)
        assert anonymous.status_code == 401
    finally:
        stop_platform(server, home)


# -- a graph job through a real scheduler ---------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    try:
        load_triples("nations")
    except DataSourceMissingError as exc:
        pytest.skip(f"Nations is not installed: {exc.message}")
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.upgrade()
    yield database
    database.dispose()


def test_a_graph_job_trains_ranks_and_registers(sqlite_db: Database) -> None:
    manager = one_slot_jobs(sqlite_db)
    spec = GraphJob.model_validate(
        {"kind": "graph", "model": "transe", "dim": 8, "epochs": 3, "register": "job-nations"}
    )
    job = manager.submit(JobRequest(spec=spec, memory_mb=4096), "alice")
    view = wait_for_job(manager, job.id, lambda v: v.state in TERMINAL, timeout=180)
    log = (manager.jobs_dir / str(job.id) / "log.txt").read_text()
    assert view.state == "succeeded", log
    result = view.result
    assert result is not None
    assert (result["kind"], result["registered"], result["entities"]) == (
        "graph", "job-nations:1", 14,
    )  # fmt: skip
    assert len(result["losses"]) == 3
    assert re.search(r"epoch 3/3: loss \d+\.\d+", log)
    assert "registered as job-nations:1" in log
    metrics = result["metrics"]
    assert 0 < metrics["mrr"] <= 1
    tracked = get_run(view.run_id, database=sqlite_db)
    assert tracked.state == "finished"
    assert tracked.metrics["test_mrr"] == pytest.approx(metrics["mrr"])
    # the registered version is the model the job measured: its filtered MRR again
    emb = lp.graph.load("job-nations:1", database=sqlite_db)
    data = load_triples("nations")
    assert emb.evaluate(data.test, known=data.all)["mrr"] == pytest.approx(metrics["mrr"])
