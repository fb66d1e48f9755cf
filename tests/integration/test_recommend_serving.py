"""A registered recommender served: ``lepton deploy`` and a platform deployment answer
``/recommend``, ``/similar`` and ``/predict`` as the in-memory model does.

The model is trained by the recommend recipe on the real MovieLens-small ratings of its
first 100 users (a few seconds), registered and promoted to production in a home of its
own. The deployment is a real ``lepton deploy`` supervisor on 127.0.0.1 (and, through the
platform, a real ``lepton server`` forwarding ``POST /api/v1/deployments/NAME/recommend``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest

import lepton as lp
from lepton import registry
from lepton.errors import DataSourceMissingError
from lepton.recommend import Recommender
from lepton.recommend.recipe import RecommendConfig, run

pytestmark = pytest.mark.integration

from servers import ok, running, start_platform, stop_platform  # noqa: E402


class Served(NamedTuple):
    home: Path
    rec: Recommender
    items: dict[int, tuple[str, int, str]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("recommend-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        try:
            ratings = lp.data.load("movielens", split="all")
        except DataSourceMissingError as exc:
            pytest.skip(f"MovieLens is not unpacked on this machine: {exc.message}")
        config = RecommendConfig.checked(users=100, factors=8, epochs=3, register="movies")
        result = run(config, registrar=lp.register)
        assert result.registered == "movies:1"
        registry.set_stage("movies:1", "production")
        assert result.recommender is not None
        yield Served(home, result.recommender, ratings.item_table())


@pytest.fixture
def home(served: Served, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEPTON_HOME", str(served.home))
    return served.home


def _genres(items: dict[int, tuple[str, int, str]], item: int) -> set[str]:
    return set(items[item][2].split("|"))


def _check_answers(client: httpx.Client, prefix: str, served: Served) -> None:
    rec, items = served.rec, served.items
    model = rec.model
    assert model is not None
    for user in (model.user_ids[0], model.user_ids[17], model.user_ids[-1]):
        answer = ok(client.post(f"{prefix}/recommend", json={"user": user, "k": 10}))
        expected = rec.recommend(user, k=10)
        assert answer["known_user"] is True
        assert answer["fallback"] is None
        assert [a["item"] for a in answer["items"]] == [i for i, _ in expected]
        np.testing.assert_allclose([a["score"] for a in answer["items"]],
                                   [s for _, s in expected], rtol=1e-5)  # fmt: skip
        # seen items are left out; titles come from the MovieLens item table
        seen = set(np.asarray(model.item_ids)[model.seen_items[model.seen_users == 0].numpy()])
        if user == model.user_ids[0]:
            assert seen.isdisjoint(a["item"] for a in answer["items"])
        first = answer["items"][0]
        assert first["title"] == items[first["item"]][0]
    user = model.user_ids[3]
    body = {"user": str(user), "k": 5, "exclude_seen": False}
    with_seen = ok(client.post(f"{prefix}/recommend", json=body))
    assert [a["item"] for a in with_seen["items"]] == [
        i for i, _ in rec.recommend(user, k=5, exclude_seen=False)
    ]
    body = {"user": user, "k": 8, "filter": {"genres": ["Comedy"]}}
    comedy = ok(client.post(f"{prefix}/recommend", json=body))
    expected = rec.recommend(user, k=8, filter=lambda i: "Comedy" in _genres(items, i))
    assert [a["item"] for a in comedy["items"]] == [i for i, _ in expected]
    assert all("Comedy" in a["genres"] for a in comedy["items"])
    # a user the model has never seen: the SDK's popularity fallback, marked
    stranger = ok(client.post(f"{prefix}/recommend", json={"user": 10**9, "k": 5}))
    assert stranger["known_user"] is False
    assert stranger["fallback"] == "popularity"
    assert [a["item"] for a in stranger["items"]] == [i for i, _ in rec.recommend(10**9, k=5)]

    similar = ok(client.post(f"{prefix}/similar", json={"item": 1, "k": 6}))
    assert similar["title"] == items[1][0]
    expected_similar = rec.similar_items(1, k=6)
    assert [a["item"] for a in similar["items"]] == [i for i, _ in expected_similar]
    np.testing.assert_allclose([a["score"] for a in similar["items"]],
                               [s for _, s in expected_similar], rtol=1e-5, atol=1e-6)  # fmt: skip

    pairs = [[model.user_ids[0], 1], [model.user_ids[5], 296], [10**9, 1]]
    predicted = ok(client.post(f"{prefix}/predict", json={"pairs": pairs}))
    np.testing.assert_allclose(predicted["predictions"],
                               rec.predict([tuple(p) for p in pairs]), rtol=1e-5)  # fmt: skip

    unknown = client.post(f"{prefix}/similar", json={"item": 10**9})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"]["code"] == "unknown_id"
    bad_genre = client.post(f"{prefix}/recommend", json={"user": 1, "filter": {"genres": ["X"]}})
    assert bad_genre.status_code == 400
    assert bad_genre.json()["error"]["code"] == "unknown_genre"
    assert "Comedy" in bad_genre.json()["error"]["message"]
    too_many = client.post(f"{prefix}/recommend", json={"user": 1, "k": 100_000})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["details"][0]["loc"] == ["k"]


def test_lepton_deploy_of_a_recommender_answers_like_the_model(
    served: Served, home: Path, tmp_path: Path
) -> None:
    with (
        running("deploy", "movies@production", tmp=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        info = ok(client.get("/info"))
        assert info["kind"] == "recommender"
        assert info["ref"] == "movies:1"
        assert info["users"] == 100
        assert info["titles"] is True
        assert info["metrics"]["rmse"] > 0
        _check_answers(client, "", served)
        no_explain = client.post("/explain", json={"inputs": [1.0]})
        assert no_explain.status_code == 404


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
def test_the_platform_forwards_recommend_and_similar(
    served: Served, home: Path, tmp_path: Path
) -> None:
    server = start_platform(home, tmp_path)
    try:
        with server.client() as admin:
            ok(admin.post("/api/v1/deployments", json={"name": "films", "model": "movies:1"}), 201)
            _ready(admin, "films")
            _check_answers(admin, "/api/v1/deployments/films", served)
            ghost = admin.post("/api/v1/deployments/ghost/recommend", json={"user": 1})
            assert ghost.status_code == 404
            ok(admin.post("/api/v1/deployments/films/stop"))
            stopped = admin.post("/api/v1/deployments/films/similar", json={"item": 1})
            assert stopped.status_code == 503
            assert stopped.json()["error"]["code"] == "deployment_stopped"
        url = f"{server.url}/api/v1/deployments/films/recommend"
        anonymous = httpx.post(url, json={"user": 1}, timeout=30)
        assert anonymous.status_code == 401
    finally:
        stop_platform(server, home)
