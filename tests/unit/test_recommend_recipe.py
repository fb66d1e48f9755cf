"""The recommend recipe, its job spec, serving a registered recommender in-process, and
``lp.load_model`` of a recommender without ``import lepton.recommend`` first."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

import lepton as lp
from lepton.errors import ConfigError, DataSourceMissingError
from lepton.platform.jobs._specs import JobRequest, JobSpec, RecommendJob
from lepton.recommend import Recommender
from lepton.recommend.recipe import RecommendConfig, run
from lepton.serve import ModelService
from lepton.serve._by_model import service_for_model
from lepton.serve._recommend import RecommenderService

# Eight users of a few real MovieLens movies (ids and genres from ml-latest-small), so the
# in-process tests need no data on disk.
GENRES = {
    1: "Adventure|Animation|Children|Comedy|Fantasy",
    2: "Adventure|Children|Fantasy",
    296: "Comedy|Crime|Drama|Thriller",
    318: "Crime|Drama",
    356: "Comedy|Drama|Romance|War",
    593: "Crime|Horror|Thriller",
    2571: "Action|Sci-Fi|Thriller",
    260: "Action|Adventure|Sci-Fi",
}


def _ratings() -> dict[str, list[Any]]:
    rng = np.random.default_rng(0)
    users, items, values = [], [], []
    for user in range(1, 9):
        for item in rng.choice(list(GENRES), size=5, replace=False).tolist():
            users.append(user)
            items.append(item)
            values.append(float(rng.integers(1, 11)) / 2)
    return {"user": users, "item": items, "rating": values}


@pytest.fixture
def tiny() -> Recommender:
    torch.manual_seed(0)
    return Recommender(factors=4, epochs=5, lr=0.05).fit(_ratings(), items=GENRES)


# -- the config and the job spec ----------------------------------------------------------


def test_the_job_spec_is_the_config_plus_its_kind() -> None:
    job = RecommendJob()
    config = RecommendConfig()
    assert job.model_dump(exclude={"kind"}) == config.model_dump()
    req = JobRequest.model_validate({"spec": {"kind": "recommend", "epochs": 2, "register": "m"}})
    assert isinstance(req.spec, RecommendJob)
    # factors left empty: the algorithm's default (16 per Gibbs sample for "bayes")
    assert (req.spec.epochs, req.spec.register_as, req.spec.factors) == (2, "m", None)
    stored = req.spec.model_dump(mode="json", by_alias=True)
    assert TypeAdapter(JobSpec).validate_python(stored) == req.spec


def test_the_spec_refuses_what_the_recipe_cannot_run() -> None:
    with pytest.raises(ValidationError, match="movielens"):
        RecommendJob.model_validate({"kind": "recommend", "data": "mnist"})
    with pytest.raises(ValidationError, match="register"):
        RecommendJob.model_validate({"kind": "recommend", "register": "Bad Name!"})
    with pytest.raises(ValidationError, match="factors"):
        RecommendJob.model_validate({"kind": "recommend", "factors": 0})
    with pytest.raises(ValidationError, match="path"):
        RecommendJob.model_validate({"kind": "recommend", "path": "/etc"})
    with pytest.raises(ConfigError, match="test_size"):
        RecommendConfig.checked(test_size=1.5)
    with pytest.raises(ConfigError, match="does not fit feedback 'explicit'"):
        RecommendConfig.checked(algorithm="als")
    assert RecommendConfig.checked(feedback="implicit", algorithm="bpr").algorithm == "bpr"


def test_register_without_a_registrar_is_refused_before_any_work() -> None:
    with pytest.raises(ConfigError, match="registrar"):
        run(RecommendConfig.checked(register="movies"))


@pytest.mark.slow
def test_the_recipe_trains_scores_logs_and_registers_on_movielens() -> None:
    try:
        lp.data.load("movielens", split="all")
    except DataSourceMissingError as exc:
        pytest.skip(f"MovieLens is not unpacked on this machine: {exc.message}")
    lines: list[str] = []
    config = RecommendConfig.checked(users=30, factors=4, epochs=2, register="small-movies")
    result = run(config, registrar=lp.register, say=lines.append)
    assert result.registered == "small-movies:1"
    assert result.users == 30
    assert len(result.losses) == 2
    assert result.train_ratings + result.test_ratings > 1000
    assert set(result.metrics) >= {"rmse", "mae", "precision@10", "ndcg@10", "map@10"}
    assert any(line.startswith("epoch 2/2: loss") for line in lines)
    tracked = lp.tracking.get_run(result.run_id)  # type: ignore[arg-type]
    assert tracked.metrics["test_ndcg@10"] == pytest.approx(result.metrics["ndcg@10"])
    version = lp.registry.resolve("small-movies:1")
    assert version.manifest["dataset"]["name"] == "movielens"
    assert version.manifest["metrics"]["rmse"] == pytest.approx(result.metrics["rmse"])


# -- the registry loads a recommender by itself ---------------------------------------------


def test_load_model_of_a_recommender_needs_no_import_of_lepton_recommend(
    tiny: Recommender,
) -> None:
    assert tiny.model is not None
    lp.register(tiny.model, "tiny-rec")
    code = (
        "import sys, lepton as lp\n"
        "assert 'lepton.recommend' not in sys.modules\n"
        "m = lp.load_model('tiny-rec')\n"
        "print(type(m).__module__, len(m.user_ids))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["lepton.recommend._model", "8"]


# -- serving in-process ----------------------------------------------------------------------


@pytest.fixture
def app(tiny: Recommender) -> Any:
    assert tiny.model is not None
    lp.register(tiny.model, "tiny-rec")
    service = service_for_model("tiny-rec")
    assert isinstance(service, RecommenderService)
    return service.asgi()


def _calls(app: Any, calls: list[tuple[str, str, Any]]) -> list[httpx.Response]:
    """Each ``(method, path, json)`` through the app in-process, in order."""

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [await c.request(m, path, json=body) for m, path, body in calls]

    return asyncio.run(scenario())


def test_a_plain_model_is_still_a_model_service() -> None:
    model = lp.models.MLP(in_features=4, num_classes=3)
    lp.register(model, "plain")
    assert type(service_for_model("plain")) is ModelService


def test_served_answers_agree_with_the_model(app: Any, tiny: Recommender) -> None:
    drama_only = {"genres": ["Drama"]}
    answers = _calls(app, [
        ("POST", "/recommend", {"user": 3, "k": 2}),
        ("POST", "/recommend", {"user": "3", "k": 2}),
        ("POST", "/recommend", {"user": 3, "k": 8, "filter": drama_only}),
        ("POST", "/recommend", {"user": 3, "filter": {"items": [1, 2]}}),
        ("POST", "/similar", {"item": 296, "k": 3}),
        ("POST", "/predict", {"pairs": [[1, 296], [42, 296]]}),
        ("GET", "/info", None),
    ])  # fmt: skip
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
    top, as_text, drama, only, similar, predicted, info = (a.json() for a in answers)
    assert [a["item"] for a in top["items"]] == [i for i, _ in tiny.recommend(3, k=2)]
    assert top["items"][0]["title"] is None  # no catalog dataset recorded: ids only
    assert top["items"][0]["genres"]  # ...but the model's own genres
    assert as_text["items"] == top["items"]
    assert as_text["user"] == 3
    wanted = [i for i, _ in tiny.recommend(3, k=8, filter=lambda i: "Drama" in GENRES[i])]
    assert [a["item"] for a in drama["items"]] == wanted
    assert {a["item"] for a in only["items"]} <= {1, 2}
    assert [a["item"] for a in similar["items"]] == [i for i, _ in tiny.similar_items(296, 3)]
    expected = tiny.predict([(1, 296), (42, 296)])
    np.testing.assert_allclose(predicted["predictions"], expected, rtol=1e-6)
    assert (info["kind"], info["users"], info["items"]) == ("recommender", 8, len(GENRES))


def test_served_errors_are_json_with_codes(app: Any) -> None:
    cold, unknown, genre, extra, empty = _calls(app, [
        ("POST", "/recommend", {"user": 999, "k": 3}),
        ("POST", "/similar", {"item": 12345}),
        ("POST", "/recommend", {"user": 1, "filter": {"genres": ["Jazz"]}}),
        ("POST", "/recommend", {"user": 1, "seen": True}),
        ("POST", "/predict", {"pairs": []}),
    ])  # fmt: skip
    assert cold.status_code == 200
    assert cold.json()["fallback"] == "popularity"
    assert cold.json()["known_user"] is False
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_id"
    assert genre.status_code == 400
    assert genre.json()["error"]["code"] == "unknown_genre"
    assert "Drama" in genre.json()["error"]["message"]
    assert extra.status_code == 422
    assert empty.status_code == 422
