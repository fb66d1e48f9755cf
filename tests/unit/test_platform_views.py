"""What the REST API and the dashboard share: the SDK's lookups (lineage, stages, a run's
outputs and metrics), one vocabulary for stages, deployment names and replicas, and the
rule that api/ and web/ read no table themselves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import lepton as lp
from lepton import registry, tracking
from lepton.errors import RegistryError, TrackingError
from lepton.platform._app import Platform
from lepton.platform.deployments._specs import MAX_REPLICAS

BASE = "http://127.0.0.1:8000"
OURS = {"origin": BASE, "accept": "text/html"}
PLATFORM = Path(lp.__file__).parent / "platform"


@pytest.fixture
def lineage(platform: Platform) -> int:
    """Two versions of ``iris-mlp`` trained on iris, the first from a run with metrics,
    in production; returns the run's id."""
    train = lp.data.load("iris", split="train")
    model = lp.models.MLP(in_features=4, num_classes=3, hidden=[8])
    with lp.start_run("fit", database=platform.db) as run:
        for step, loss in enumerate((1.0, 0.5)):
            run.log_metric("val_loss", loss, step=step)
        first = lp.register(model, "iris-mlp", dataset=train, database=platform.db)
    lp.register(model, "iris-mlp", dataset=train, database=platform.db)
    registry.set_stage(first.ref, "production", database=platform.db)
    return run.id


def test_the_sdk_answers_lineage_stages_and_a_run_s_outputs(
    platform: Platform, lineage: int
) -> None:
    db = platform.db
    assert registry.versions_by_dataset(database=db) == {"iris": ["iris-mlp:1", "iris-mlp:2"]}
    assert registry.versions_in_stage("production", database=db) == {"iris-mlp": [1]}
    assert registry.versions_in_stage("staging", database=db) == {}
    assert registry.versions_of_run(lineage, database=db) == ["iris-mlp:1"]
    assert tracking.count_runs(database=db) == 1
    assert tracking.count_runs(state="running", database=db) == 0
    assert tracking.metric_histories(lineage, database=db) == {"val_loss": [(0, 1.0), (1, 0.5)]}
    with pytest.raises(RegistryError, match="stage must be one of staging, production"):
        registry.versions_in_stage("prod", database=db)
    with pytest.raises(TrackingError, match="state must be one of running, finished"):
        tracking.count_runs(state="done", database=db)


def test_the_api_and_the_pages_show_the_same_lineage(client: Any, lineage: int) -> None:
    iris = client.get("/api/v1/datasets/iris").json()
    assert iris["models"] == ["iris-mlp:1", "iris-mlp:2"]
    listed = {d["name"]: d for d in client.get("/api/v1/datasets?limit=500").json()["items"]}
    assert listed["iris"] == iris
    assert 'href="/models/iris-mlp/2"' in client.get("/datasets").text
    runs = client.get("/api/v1/runs").json()
    assert (runs["total"], runs["items"][0]["id"]) == (1, lineage)
    assert client.get("/api/v1/runs?state=running").json()["total"] == 0
    metrics = client.get(f"/api/v1/runs/{lineage}/metrics").json()
    assert metrics == {"val_loss": [[0, 1.0], [1, 0.5]]}
    run_page = client.get(f"/runs/{lineage}").text
    assert 'href="/models/iris-mlp/1"' in run_page
    assert "<polyline" in run_page
    models_page = client.get("/models").text
    assert 'href="/models/iris-mlp/1"><span class="badge production">v1</span>' in models_page
    overview = client.get("/").text
    assert '<div class="value">1</div><div class="label">tracked runs</div>' in overview
    assert "models (2 versions)" in overview


def test_stages_come_from_the_registry_everywhere(client: Any, lineage: int) -> None:
    page = client.get("/models/iris-mlp/2").text
    stage_select = page.split('<select name="stage">', 1)[1].split("</select>", 1)[0]
    assert re.findall(r'<option value="(\w+)"', stage_select) == list(registry.STAGES)
    refused = client.put("/api/v1/models/iris-mlp/versions/2/stage", json={"stage": "prod"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_request"
    form = client.post("/models/iris-mlp/2/stage", data={"stage": "prod"}, headers=OURS)
    assert form.status_code == 422
    moved = client.put("/api/v1/models/iris-mlp/versions/2/stage", json={"stage": "archived"})
    assert moved.json()["stage"] == "archived"


def test_deployment_names_and_replicas_follow_the_specs(client: Any) -> None:
    # A trailing '-' is no DNS label: refused by the API and the pages alike, as the
    # deployment spec refuses it, rather than looked up.
    for path in ("/api/v1/deployments/mnist-", "/deployments/mnist-"):
        assert client.get(path).status_code == 422, path
    assert client.get("/api/v1/deployments/mnist").status_code == 404
    too_many = client.patch("/api/v1/deployments/mnist", json={"replicas": MAX_REPLICAS + 1})
    assert too_many.status_code == 422
    assert (
        client.patch("/api/v1/deployments/mnist", json={"replicas": MAX_REPLICAS}).status_code
        == 404
    )
    page = client.get("/deployments?model=mnist:1").text
    assert f'name="replicas" type="number" min="1" max="{MAX_REPLICAS}"' in page


def test_api_and_web_read_no_table_and_the_dashboard_no_api_route() -> None:
    """Routes and pages call the SDK or the platform's services (``_catalog``,
    ``_queries``, ``p.jobs``, ``p.deployments``, ``p.auth``), so a table has one reader."""
    offenders = []
    for path in sorted([*PLATFORM.glob("api/*.py"), *PLATFORM.glob("web/*.py")]):
        text = path.read_text()
        where = path.relative_to(PLATFORM)
        if "lepton.storage.schema" in text or "sqlalchemy" in text:
            offenders.append(f"{where}: imports the tables or SQLAlchemy")
        if re.search(r"\bselect\(", text):
            offenders.append(f"{where}: builds a query")
        if path.parent.name == "web" and "lepton.platform.api" in text:
            offenders.append(f"{where}: imports the API (share a service module instead)")
    assert offenders == []
