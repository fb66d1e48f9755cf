"""The graph's platform parts: the ``graph`` recipe and job spec, a registered embedding
loaded back through the registry alone, and its served routes (``/predict_link``,
``/similar``, ``/query``, ``/info``) through the real ASGI app, in-process.

The model is trained once by the recipe on the real Nations triples (PyPI ``pykeen``'s
files; a few seconds) and registered in a home of this module's own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

import lepton as lp
from lepton.errors import ConfigError, DataSourceMissingError
from lepton.graph import Embedding, TripleSplits, load_triples
from lepton.graph.recipe import GraphConfig, run
from lepton.platform.jobs._specs import GraphJob, JobRequest, JobSpec
from lepton.serve import ModelService
from lepton.serve._by_model import SERVICES, service_for_model
from lepton.serve._graph import GRAPH_ARCHITECTURES, GraphService
from lepton.serve._recommend import RECOMMENDER_ARCHITECTURES

# -- the config and the job spec ----------------------------------------------------------


def test_the_job_spec_is_the_config_plus_its_kind() -> None:
    assert GraphJob().model_dump(exclude={"kind"}) == GraphConfig().model_dump()
    body = {"spec": {"kind": "graph", "dataset": "umls", "model": "rotate", "register": "u"}}
    req = JobRequest.model_validate(body)
    assert isinstance(req.spec, GraphJob)
    assert (req.spec.dataset, req.spec.model, req.spec.register_as) == ("umls", "rotate", "u")
    assert req.spec.dim == GraphConfig().dim
    stored = req.spec.model_dump(mode="json", by_alias=True)
    assert stored["register"] == "u"
    assert TypeAdapter(JobSpec).validate_python(stored) == req.spec


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"dataset": "wn18rr"}, "dataset"),
        ({"model": "transh"}, "model"),
        ({"dim": 0}, "dim"),
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"loss": "hinge"}, "loss"),
        ({"register": "Bad Name!"}, "register"),
        ({"path": "/etc"}, "path"),
    ],
)
def test_the_spec_refuses_what_the_recipe_cannot_run(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        GraphJob.model_validate({"kind": "graph", **values})


def test_checked_config_errors_and_a_missing_registrar() -> None:
    with pytest.raises(ConfigError, match="negatives"):
        GraphConfig.checked(negatives=0)
    with pytest.raises(ConfigError, match="registrar"):
        run(GraphConfig.checked(register="nations"))


# -- the recipe, registered -----------------------------------------------------------------


class Trained(NamedTuple):
    home: Path
    data: TripleSplits
    emb: Embedding
    result: Any


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    home = tmp_path_factory.mktemp("graph-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        mp.delenv("LEPTON_DATA_DIR", raising=False)
        try:
            data = load_triples("nations")
        except DataSourceMissingError as exc:
            pytest.skip(f"Nations is not installed: {exc.message}")
        torch.manual_seed(0)
        lines: list[str] = []
        config = GraphConfig.checked(dim=8, epochs=2, batch_size=256, register="nations")
        result = run(config, registrar=lp.register, say=lines.append, num_threads=1)
        assert any(line.startswith("epoch 2/2: loss") for line in lines), lines
        assert result.embedding is not None
        yield Trained(home, data, result.embedding, result)


@pytest.fixture
def home(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEPTON_HOME", str(trained.home))
    return trained.home


def test_the_recipe_trains_ranks_logs_and_registers(trained: Trained, home: Path) -> None:
    result, data = trained.result, trained.data
    assert result.registered == "nations:1"
    assert (result.entities, result.relations) == (14, 55)
    assert (result.train_triples, result.test_triples) == (1592, 201)
    assert len(result.losses) == 2
    assert 0 < result.metrics["mrr"] <= 1
    assert result.metrics["hits@1"] <= result.metrics["hits@3"] <= result.metrics["hits@10"]
    # the metrics are the SDK's own filtered ranking of the test split
    assert trained.emb.evaluate(data.test, known=data.all) == pytest.approx(result.metrics)
    tracked = lp.tracking.get_run(result.run_id)
    assert tracked.metrics["test_mrr"] == pytest.approx(result.metrics["mrr"])
    version = lp.registry.resolve("nations:1")
    assert version.manifest["architecture"]["name"] == "kg-embedding"
    assert version.manifest["dataset"]["name"] == "nations"
    assert version.manifest["dataset"]["rows"] == 1592
    assert version.manifest["metrics"]["mrr"] == pytest.approx(result.metrics["mrr"])
    assert set(version.manifest["files"]) == {"model.safetensors"}  # no pickle


def test_a_registered_embedding_loads_back_with_its_vocab_and_triples(
    trained: Trained, home: Path
) -> None:
    back = lp.graph.load("nations:1")
    assert back.model is not None
    assert back.model.entities == trained.data.entities
    assert back.model.relations == trained.data.relations
    assert torch.equal(back.model.triples, trained.data.all)
    assert back.predict_tail("usa", "economicaid", k=5) == trained.emb.predict_tail(
        "usa", "economicaid", k=5
    )
    # the registry imports lepton.graph by itself (MODEL_PACKAGES)
    code = (
        "import sys, lepton as lp\n"
        "assert 'lepton.graph' not in sys.modules\n"
        "m = lp.load_model('nations:1')\n"
        "print(type(m).__module__, len(m.entities), tuple(m.triples.shape))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["lepton.graph._models", "14", "(1992,", "3)"]


# -- serving in-process ---------------------------------------------------------------------


@pytest.fixture
def app(trained: Trained, home: Path) -> Any:
    service = service_for_model("nations:1")
    assert isinstance(service, GraphService)
    return service.asgi()


def _calls(app: Any, calls: list[tuple[str, str, Any]]) -> list[httpx.Response]:
    """Each ``(method, path, json)`` through the app in-process, in order."""

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [await c.request(m, path, json=body) for m, path, body in calls]

    return asyncio.run(scenario())


def test_the_service_is_picked_by_architecture(trained: Trained, home: Path) -> None:
    lp.register(lp.models.MLP(in_features=4, num_classes=3), "plain")
    assert type(service_for_model("plain")) is ModelService
    assert type(service_for_model("nations:1")) is GraphService
    # every architecture the packages name has its row in the table
    assert SERVICES.keys() >= GRAPH_ARCHITECTURES | RECOMMENDER_ARCHITECTURES


def test_served_links_similar_and_info_agree_with_the_model(trained: Trained, app: Any) -> None:
    emb, data = trained.emb, trained.data
    pair = (data.entity_index["usa"], data.relation_index["economicaid"])
    known = {data.entities[t] for h, r, t in data.all.tolist() if (h, r) == pair}
    assert known, "Nations has 5 usa economicaid triples"
    every, fresh, similar, info = _calls(app, [
        ("POST", "/predict_link", {"head": "usa", "relation": "economicaid", "k": 14}),
        ("POST", "/predict_link", {"head": "usa", "relation": "economicaid", "k": 14,
                                   "exclude_known": True}),
        ("POST", "/similar", {"entity": "china", "k": 4}),
        ("GET", "/info", None),
    ])  # fmt: skip
    for answer in (every, fresh, similar, info):
        assert answer.status_code == 200, answer.text
    tails = every.json()["tails"]
    expected = emb.predict_tail("usa", "economicaid", k=14)
    assert [t["entity"] for t in tails] == [e for e, _ in expected]
    assert [t["score"] for t in tails] == pytest.approx([s for _, s in expected])
    assert {t["entity"] for t in tails if t["known"]} == known
    kept = [t["entity"] for t in fresh.json()["tails"]]
    assert kept == [e for e, _ in emb.predict_tail("usa", "economicaid", k=14, exclude=known)]
    assert known.isdisjoint(kept)
    assert not any(t["known"] for t in fresh.json()["tails"])
    near = similar.json()["entities"]
    assert [e["entity"] for e in near] == [e for e, _ in emb.similar("china", k=4)]
    meta = info.json()
    assert (meta["kind"], meta["embedding"], meta["entities"]) == (
        "graph-embedding",
        "distmult",
        14,
    )
    assert meta["triples"] == 1992
    assert meta["relations"] == data.relations
    assert meta["metrics"]["mrr"] == pytest.approx(trained.result.metrics["mrr"])


def test_served_query_is_read_only_sparql_over_the_known_triples(
    trained: Trained, app: Any
) -> None:
    data = trained.data
    expected = {(data.entities[h], data.entities[t]) for h, r, t in data.all.tolist()
                if data.relations[r] == "economicaid"}  # fmt: skip
    select = "SELECT ?h ?t WHERE { ?h r:economicaid ?t }"
    answers = _calls(app, [
        ("POST", "/query", {"query": select}),
        ("POST", "/query", {"query": "ASK { e:usa r:economicaid ?t }"}),
        ("POST", "/query", {"query": "CONSTRUCT { ?h r:economicaid ?t } WHERE "
                                     "{ ?h r:economicaid ?t } LIMIT 3"}),
        ("POST", "/query", {"query": "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"}),
    ])  # fmt: skip
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    rows, ask, construct, count = (a.json() for a in answers)
    ns = GraphService("nations:1")
    ns.setup()

    def label(iri: str) -> str:
        return ns.graph.label(iri)

    assert {(label(r["h"]), label(r["t"])) for r in rows["rows"]} == expected
    assert ask["form"] == "ASK"
    assert ask["boolean"] is True
    assert construct["form"] == "CONSTRUCT"
    assert len(construct["rows"]) == 3
    assert all(len(triple) == 3 for triple in construct["rows"])
    assert count["rows"] == [{"n": 1992}]


def test_served_query_refuses_updates_service_and_runaway_queries(app: Any) -> None:
    answers = _calls(app, [
        ("POST", "/query", {"query": "INSERT DATA { e:a r:b e:c }"}),
        ("POST", "/query", {"query": "DELETE WHERE { ?s ?p ?o }"}),
        ("POST", "/query", {"query": "LOAD <http://example.org/data.nt>"}),
        ("POST", "/query", {"query": "SELECT * WHERE { SERVICE <http://evil.example/sparql> "
                                     "{ ?s ?p ?o } }"}),
        ("POST", "/query", {"query": "SELECT * WHERE { ?s ?p ?o }", "max_rows": 10}),
        ("POST", "/query", {"query": "SELECT * WHERE { ?a ?p ?b . ?c ?q ?d . ?e ?r ?f }",
                            "timeout_s": 0.001, "max_rows": 10_000}),
        ("POST", "/query", {"query": "SELECT * WHERE { ?s ?p ?o }", "timeout_s": 60}),
        ("POST", "/query", {"query": "SELECT * WHERE { ?s ?p ?o }", "max_rows": 10**9}),
        ("POST", "/query", {"query": "SELEKT nonsense"}),
        ("POST", "/query", {"query": "SELECT * WHERE { ?s ?p ?o } LIMIT 5"}),
    ])  # fmt: skip
    insert, delete, load, service, rows, slow, long, many, syntax, after = answers
    for refused in (insert, delete, load):
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "sparql_error"
        assert "update" in refused.json()["error"]["message"]
    assert service.status_code == 400
    assert "SERVICE is refused" in service.json()["error"]["message"]
    assert rows.status_code == 422
    assert rows.json()["error"]["code"] == "query_limit"
    assert "max_rows=10" in rows.json()["error"]["message"]
    assert slow.status_code == 422, slow.text
    assert slow.json()["error"]["code"] == "query_limit"
    assert "time limit" in slow.json()["error"]["message"]
    assert long.status_code == 422  # above the service's own time limit
    assert many.status_code == 422  # above its row limit
    assert syntax.status_code == 400
    assert "does not parse" in syntax.json()["error"]["message"]
    assert after.status_code == 200  # the store still answers, unchanged
    assert len(after.json()["rows"]) == 5


def test_served_errors_name_unknown_entities_and_relations(app: Any) -> None:
    entity, relation, similar, extra = _calls(app, [
        ("POST", "/predict_link", {"head": "atlantis", "relation": "economicaid"}),
        ("POST", "/predict_link", {"head": "usa", "relation": "invades"}),
        ("POST", "/similar", {"entity": "atlantis"}),
        ("POST", "/predict_link", {"head": "usa", "relation": "economicaid", "tail": "uk"}),
    ])  # fmt: skip
    assert entity.status_code == 404
    assert entity.json()["error"]["code"] == "unknown_entity"
    assert "atlantis" in entity.json()["error"]["message"]
    assert relation.status_code == 404
    assert relation.json()["error"]["code"] == "unknown_relation"
    assert similar.status_code == 404
    assert extra.status_code == 422


# -- the CLI ----------------------------------------------------------------------------------


def test_the_cli_predicts_queries_and_refuses_updates(trained: Trained, home: Path) -> None:
    import json

    from typer.testing import CliRunner

    from lepton.cli._app import app
    from lepton.errors import LeptonError

    cli = CliRunner()
    args = ["graph", "predict", "usa", "economicaid", "--model", "nations:1", "-k", "4"]
    shown = cli.invoke(app, [*args, "--json"])
    assert shown.exit_code == 0, shown.output
    tails = [t["entity"] for t in json.loads(shown.output)["tails"]]
    assert tails == [e for e, _ in trained.emb.predict_tail("usa", "economicaid", k=4)]
    table = cli.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "(usa, economicaid, ?)" in table.output
    assert tails[0] in table.output
    sparql = "SELECT ?t WHERE { e:usa r:economicaid ?t }"
    answer = cli.invoke(app, ["graph", "query", sparql, "--model", "nations:1", "--json"])
    assert answer.exit_code == 0, answer.output
    assert len(json.loads(answer.output)["rows"]) == 5
    update = cli.invoke(app, ["graph", "query", "CLEAR ALL", "--model", "nations:1"])
    assert isinstance(update.exception, LeptonError)  # `lepton` prints it as an error
    assert update.exception.code == "sparql_error"
    assert "read-only" in update.exception.message
    # a graph store under LEPTON_HOME/graphs, opened read-only
    store = lp.graph.create("tiny")
    store.load_rows([("alice", "knows", "bob"), ("bob", "knows", "carol")])
    rows = cli.invoke(app, ["graph", "query", "SELECT ?o WHERE { ?s ?p ?o }", "--graph", "tiny",
                            "--json"])  # fmt: skip
    assert rows.exit_code == 0, rows.output
    assert sorted(r["o"] for r in json.loads(rows.output)["rows"]) == [
        store.entity("bob"), store.entity("carol"),
    ]  # fmt: skip


def test_served_query_is_refused_while_too_many_evaluations_still_run(app: Any) -> None:
    from lepton.serve._graph import MAX_RUNNING_QUERIES

    # stand-ins for evaluations past their time limit that pyoxigraph is still finishing:
    # real threads with the name the served store's timed queries run under
    release = threading.Event()
    stuck = [threading.Thread(target=release.wait, name="sparql-served", daemon=True)
             for _ in range(MAX_RUNNING_QUERIES)]  # fmt: skip
    for thread in stuck:
        thread.start()
    try:
        (busy,) = _calls(app, [("POST", "/query", {"query": "ASK { ?s ?p ?o }"})])
    finally:
        release.set()
        for thread in stuck:
            thread.join()
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"]["code"] == "overloaded"
    assert busy.headers["retry-after"]
    (fine,) = _calls(app, [("POST", "/query", {"query": "ASK { ?s ?p ?o }"})])
    assert fine.status_code == 200
    assert fine.json()["boolean"] is True
