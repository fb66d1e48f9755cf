"""Tuning studies in the REST API and the dashboard: real studies made by ``lp.tune`` (the
function form: no training), their pages, charts, links, empty states and errors."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from lepton.errors import TrainingError, TuneError
from lepton.platform._app import Platform
from lepton.platform._auth import Principal
from lepton.platform.jobs._specs import JobView
from lepton.platform.web._parallel_chart import parallel_chart
from lepton.platform.web._render import _ENV, num
from lepton.platform.web._study_charts import BETTER, WORSE, curves_chart
from lepton.tune import Categorical, Float, Space, tune
from lepton.tune._optuna import import_optuna, storage_for

SVG = "{http://www.w3.org/2000/svg}"
NASTY = "<script>alert(1)</script>"


def _bowl(params: dict[str, Any]) -> float:
    return float((params["x"] - 2) ** 2 + (0.0 if params["kind"] == "plain" else 1.0))


def _climb(params: dict[str, Any], trial: Any) -> float:
    """Five "epochs" of a score that grows with x: the median pruner stops low-x trials."""
    value = 0.0
    for step in range(5):
        value = params["x"] * (step + 1)
        if trial.report(value, step):
            break
    return value


def _svgs(page: str) -> list[ET.Element]:
    """Every chart of a page, parsed: each must be well-formed XML."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, re.S)]


def _chart(page: str, holder: str) -> ET.Element:
    found = re.search(rf'<div id="{holder}">\s*(<svg\b.*?</svg>)', page, re.S)
    assert found, f"no {holder} chart"
    return ET.fromstring(found.group(1))


@pytest.mark.slow  # two real studies (14 trials, each a tracked run) and fANOVA
def test_a_study_s_pages_and_api_show_its_trials_charts_and_links(
    client: Any, platform: Platform
) -> None:
    space: Space = {
        "x": Float(-10, 10),
        "lr": Float(1e-5, 1e-1, log=True),
        "kind": Categorical(["plain", NASTY]),
    }
    bowl = tune(_bowl, space, n_trials=8, study="bowl", database=platform.db)
    climb = tune(
        _climb, {"x": Float(0, 1)}, n_trials=6, direction="maximize", study="climb",
        database=platform.db,
    )  # fmt: skip
    assert climb.count("pruned") >= 1  # the per-epoch chart must show a pruned trial

    listing = client.get("/studies")
    assert listing.status_code == 200
    rows = re.findall(r'<tr>\s*<td><a href="/studies/(\w+)">.*?</tr>', listing.text, re.S)
    assert rows == ["climb", "bowl"]  # newest first
    assert f">{num(bowl.best_value)}</td>" in listing.text
    assert f'href="/runs/{bowl.run_id}"' in listing.text

    page = client.get("/studies/bowl").text
    assert f'<strong id="best-value">{num(bowl.best_value)}</strong>' in page
    assert f'href="/runs/{bowl.run_id}" id="study-run"' in page
    best_run = next(t.run_id for t in bowl.trials if t.number == bowl.best_trial)
    assert f'<a href="/runs/{best_run}" id="best-run">' in page
    for trial in bowl.trials:
        assert f'href="/runs/{trial.run_id}"' in page
    assert len(re.findall(r'<span class="badge complete">', page)) == 8
    # The categorical value is text everywhere: in the tables and in every chart.
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    charts = _svgs(page)
    assert len(charts) == 3  # best so far, importance, parallel coordinates: no curves
    best = _chart(page, "best-so-far")
    assert len(best.findall(f"{SVG}circle")) == 8 + 1  # a dot per trial, one in the legend
    parallel = _chart(page, "parallel")
    assert len(parallel.findall(f"{SVG}polyline")) == 8
    axis_labels = "".join(parallel.itertext())
    assert "lr (log)" in axis_labels  # five decades: a log axis
    assert NASTY in axis_labels  # a categorical tick, escaped in the markup
    bars = _chart(page, "importance")
    assert len(bars.findall(f"{SVG}rect")) == len(bowl.importances) == 3

    curves_page = client.get("/studies/climb").text
    curves = _chart(curves_page, "curves")
    lines = curves.findall(f"{SVG}polyline")
    assert len(lines) == 6
    pruned = [line for line in lines if line.get("stroke") == WORSE]
    assert len(pruned) == climb.count("pruned")
    assert [line for line in lines if line.get("stroke") == BETTER] == [lines[-1]]  # on top
    longest = max(len(line.get("points", "").split()) for line in lines)
    assert longest == 5
    assert all(len(line.get("points", "").split()) < 5 for line in pruned)

    api = client.get("/api/v1/studies").json()
    assert (api["total"], [s["name"] for s in api["items"]]) == (2, ["climb", "bowl"])
    assert api["items"][1]["best_value"] == bowl.best_value
    assert client.get("/api/v1/studies?limit=1&offset=1").json()["items"][0]["name"] == "bowl"
    one = client.get("/api/v1/studies/climb").json()
    # what lp.tune returned, but for its wall time (a stored study has none)
    skip = ("intermediate_values", "seconds")
    assert {k: v for k, v in one.items() if k not in skip} == {
        k: v for k, v in climb.to_dict().items() if k not in skip
    }
    values = one["intermediate_values"]
    assert sorted(values, key=int) == [str(t.number) for t in climb.trials]
    for trial in climb.trials:
        assert len(values[str(trial.number)]) == (5 if trial.state == "complete" else 1)

    study_run = client.get(f"/runs/{climb.run_id}").text
    assert 'The run of tuning study <a href="/studies/climb" id="run-study">' in study_run
    trial_run = client.get(f"/runs/{climb.trials[2].run_id}").text
    assert 'Trial 2 of tuning study <a href="/studies/climb" id="run-study">' in trial_run
    assert 'href="/studies" class="active"' in page  # the nav bar's Studies link


def test_empty_failed_and_multi_objective_studies_have_their_own_pages(
    client: Any, platform: Platform
) -> None:
    optuna = import_optuna()
    optuna.create_study(study_name="empty", storage=storage_for(platform.db))
    empty = client.get("/studies/empty")
    assert empty.status_code == 200
    assert "This study has no trials yet" in empty.text

    def diverges(params: dict[str, Any]) -> float:
        raise TrainingError(f"loss is nan at x={params['x']:.2f}")

    with pytest.raises(TuneError, match="all 2 trials of study 'broken' failed"):
        tune(diverges, {"x": Float(0, 1)}, n_trials=2, study="broken", database=platform.db)
    broken = client.get("/studies/broken").text
    assert "No trial completed: 2 fail." in broken
    assert len(re.findall(r'<span class="badge fail">', broken)) == 2
    assert _svgs(broken) == []

    pair = tune(
        lambda p: (p["x"], (1 - p["x"]) ** 2), {"x": Float(0, 1)}, n_trials=4,
        direction=["minimize", "minimize"], pruner="none", study="pair", database=platform.db,
    )  # fmt: skip
    page = client.get("/studies/pair").text
    assert 'id="best-so-far"' not in page
    front = _chart(page, "pareto-chart")
    assert len(front.findall(f"{SVG}circle")) == 4 + 2  # the trials, and the legend's two
    table = re.search(r'<section class="panel scroll" id="pareto">.*?</section>', page, re.S)
    assert table is not None
    assert len(re.findall(r"<tr><td", table.group(0))) == len(pair.pareto) >= 1
    listed = client.get("/studies").text
    assert "Pareto front" in listed


def test_unknown_and_malformed_study_names_are_404_and_422(client: Any) -> None:
    page = client.get("/studies/ghost", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "no study named &#39;ghost&#39;" in page.text
    answer = client.get("/api/v1/studies/ghost")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "study_not_found"
    for bad in ("a%00b", "tab%09name", "x" * 513):
        refused = client.get(f"/api/v1/studies/{bad}")
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["code"] == "invalid_request"
        assert client.get(f"/studies/{bad}").status_code == 422
    assert client.get("/studies").status_code == 200
    assert "No studies yet" in client.get("/studies").text
    schema = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/studies", "/api/v1/studies/{name}"} <= set(schema)


def test_parallel_coordinates_skip_missing_params_and_escape_labels() -> None:
    trials = [
        (0, {"model": "mlp", "hidden": 32, NASTY: 1e-4}, 0.9),
        (1, {"model": "convnet", NASTY: 1e-1}, 0.5),  # no "hidden": a conditional param
        (2, {"model": "mlp", "hidden": 64, NASTY: 1e-2}, 0.7),
    ]
    svg = ET.fromstring(
        parallel_chart(trials, ["model", "hidden", NASTY], objective="acc", direction="maximize")
    )
    lines = svg.findall(f"{SVG}polyline")
    assert [len(line.get("points", "").split()) for line in lines] == [3, 4, 4]  # worst first
    assert lines[-1].findtext(f"{SVG}title") == "trial 0: 0.9"  # the best is drawn last
    assert lines[-1].get("stroke") == BETTER
    text = "".join(svg.itertext())
    assert "convnet" in text
    assert "mlp" in text
    assert "(log)" in text  # 1e-4 .. 1e-1
    assert "acc (max)" in text
    only_pruned = ET.fromstring(curves_chart({3: [0.2], 4: [0.1, None]}, pruned={3, 4}, best=None))
    assert len(only_pruned.findall(f"{SVG}circle")) == 2 + 1  # where each stopped, legend
    assert ET.fromstring(parallel_chart([], ["x"])).findall(f"{SVG}polyline") == []


def test_a_tune_job_s_page_links_to_its_study() -> None:
    job = JobView(
        id=4, kind="tune", spec={"kind": "tune"}, state="succeeded", priority=0, cpus=1.0,
        gpus=0, memory_mb=2048, attempts=1, max_retries=2, not_before=None, executor="local",
        result={"kind": "tune", "study": "job 4?"}, error=None, run_id=9, created_by="admin",
        created_at=time.time(), started_at=None, ended_at=None,
    )  # fmt: skip
    who = Principal(user_id=1, name="admin", role="admin", token_id=1, via="cookie")
    page = _ENV.get_template("job.html").render(
        who=who, nav=[], section="/jobs", now=time.time(), job=job, registered=None,
        suggested="digits-mlp", result_json="",
    )  # fmt: skip
    assert '<a href="/studies/job%204%3F" id="job-study">job 4?</a>' in page
