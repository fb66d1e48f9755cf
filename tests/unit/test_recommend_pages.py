"""The dashboard's Recommend pages, in-process: the list with its training form (a real
``recommend`` job spec), and a recommender version's page: a user's history beside their
recommendations, and an item's similar items, as the model itself answers."""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import lepton as lp
from lepton.errors import DataSourceMissingError
from lepton.platform._app import Platform
from lepton.recommend import Recommender

BASE = "http://127.0.0.1:8000"
OURS = {"origin": BASE, "accept": "text/html"}
# Real MovieLens movie ids with their genres, rated by ten users (no data on disk needed).
GENRES = {
    1: "Adventure|Animation|Children|Comedy|Fantasy",
    2: "Adventure|Children|Fantasy",
    296: "Comedy|Crime|Drama|Thriller",
    318: "Crime|Drama",
    356: "Comedy|Drama|Romance|War",
    593: "Crime|Horror|Thriller",
    2571: "Action|Sci-Fi|Thriller",
    260: "Action|Adventure|Sci-Fi",
    1196: "Action|Adventure|Sci-Fi",
    480: "Action|Adventure|Sci-Fi|Thriller",
}


def _tiny(name: str = "tiny-rec") -> Recommender:
    rng = np.random.default_rng(1)
    users, items, ratings = [], [], []
    for user in range(1, 11):
        for item in rng.choice(list(GENRES), size=6, replace=False).tolist():
            users.append(user)
            items.append(item)
            ratings.append(float(rng.integers(1, 11)) / 2)
    torch.manual_seed(0)
    rec = Recommender(factors=4, epochs=5, lr=0.05)
    rec.fit({"user": users, "item": items, "rating": ratings}, items=GENRES)
    assert rec.model is not None
    lp.register(rec.model, name, metrics={"rmse": 0.9, "ndcg@10": 0.1})
    return rec


def _column(text: str, table: str, cell: int) -> list[str]:
    body = text.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]
    return [html.unescape(re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)[cell]) for r in rows]


def _ids(text: str, table: str) -> list[int]:
    """The item ids of a table's rows (the small id after each title)."""
    cells = _column(text, table, 1)
    return [int(re.findall(r"(\d+)</span>", c)[-1]) for c in cells]


def test_the_list_shows_recommenders_only_and_offers_the_job_form(client: Any) -> None:
    _tiny()
    lp.register(lp.models.MLP(in_features=4, num_classes=3), "not-a-recommender")
    page = client.get("/recommend")
    assert page.status_code == 200
    assert "/models/tiny-rec/1/recommend" in page.text
    assert "not-a-recommender" not in page.text
    assert 'id="submit-recommend"' in page.text
    jobs = client.get("/jobs").text
    assert (
        '<option value="movielens"' not in jobs.split('id="submit-job"', 1)[1].split("</form>")[0]
    )
    assert 'href="/recommend"' in jobs


def test_the_job_form_submits_a_recommend_job_and_keeps_what_was_typed(client: Any) -> None:
    typed = {"factors": "0", "register_as": "Bad Name", "epochs": "3"}
    bad = client.post("/recommend", data=typed, headers=OURS)
    assert bad.status_code == 422
    assert "factors" in bad.text
    assert 'value="Bad Name"' in bad.text
    assert 'name="epochs" type="number" min="1" value="3"' in bad.text
    ok = client.post(
        "/recommend",
        data={"split": "temporal", "factors": "8", "epochs": "2", "users": "40",
              "register_as": "films"},
        headers=OURS, follow_redirects=False,
    )  # fmt: skip
    assert ok.status_code == 303
    job_id = int(ok.headers["location"].rsplit("/", 1)[1])
    spec = client.get(f"/api/v1/jobs/{job_id}").json()["spec"]
    assert spec["kind"] == "recommend"
    assert (spec["split"], spec["factors"], spec["epochs"], spec["users"]) == ("temporal", 8, 2, 40)
    assert spec["register"] == "films"
    assert spec["lr"] is None  # left empty: the algorithm's default (Recommender's)


def test_a_users_history_beside_their_recommendations(client: Any) -> None:
    rec = _tiny()
    model = rec.model
    assert model is not None
    page = client.get("/models/tiny-rec/1/recommend?user=4&k=3")
    assert page.status_code == 200, page.text
    text = page.text
    # the history: the user's training ratings, best first
    index = model.user_ids.index(4)
    mask = model.seen_users == index
    rated = sorted(zip(model.seen_ratings[mask].tolist(),
                       [model.item_ids[j] for j in model.seen_items[mask].tolist()],
                       strict=True), key=lambda ri: (-ri[0], str(ri[1])))  # fmt: skip
    shown = [float(r) for r in _column(text, "history", 4)]
    assert shown == [r for r, _ in rated]
    # the recommendations: what the model answers, seen items left out
    top = [i for i, _ in rec.recommend(4, k=3)]
    items = _ids(text, "recommendations")
    assert items == top
    assert not set(items) & {i for _, i in rated}
    # similar items of the user's best rated item by default
    assert f'<span class="mono muted">{rated[0][1]}</span>' in text
    like = [i for i, _ in rec.similar_items(rated[0][1], k=3)]
    similar = _ids(text, "similar")
    assert similar == like
    assert '<option value="4" selected>' in text
    assert "Crime" in text  # genres from the model's own item features


def test_filters_fallbacks_and_errors_are_shown_on_the_page(client: Any) -> None:
    rec = _tiny()
    drama = client.get("/models/tiny-rec/1/recommend?user=2&genre=Drama&k=5").text
    wanted = [i for i, _ in rec.recommend(2, k=5, filter=lambda i: "Drama" in GENRES[i])]
    assert len(_column(drama, "recommendations", 1)) == len(wanted)
    assert all("Drama" in g for g in _column(drama, "recommendations", 3))
    stranger = client.get("/models/tiny-rec/1/recommend?user=999")
    assert stranger.status_code == 200
    assert 'id="fallback"' in stranger.text
    assert "no history" in stranger.text
    unknown = client.get("/models/tiny-rec/1/recommend?user=1&item=424242")
    assert unknown.status_code == 200
    assert "item &#39;424242&#39; is not known" in unknown.text or "424242" in unknown.text
    assert 'class="notice error"' in unknown.text
    lp.register(lp.models.MLP(in_features=4, num_classes=3), "plain")
    plain = client.get("/models/plain/1/recommend")
    assert plain.status_code == 404
    assert "is not a recommender" in plain.text
    too_many = client.get("/models/tiny-rec/1/recommend?k=1000")
    assert too_many.status_code == 422
    version = client.get("/models/tiny-rec/1").text
    assert 'id="recommend-link"' in version


def test_viewers_may_look_but_not_train(client: Any, platform: Platform) -> None:
    _tiny()
    vic = platform.auth.create_user("vic", "viewer")
    viewer = TestClient(client.app, base_url=BASE)
    link = platform.auth.login_link_secret(vic.id)
    assert viewer.get(f"/login?token={link}", follow_redirects=False).status_code == 303
    assert viewer.get("/models/tiny-rec/1/recommend").status_code == 200
    page = viewer.get("/recommend")
    assert 'id="submit-recommend"' not in page.text
    refused = viewer.post("/recommend", data={"epochs": "1"}, headers=OURS)
    assert refused.status_code == 403


@pytest.mark.slow
def test_titles_come_from_movielens_for_a_version_trained_on_it(client: Any) -> None:
    from lepton.recommend.recipe import RecommendConfig, run

    try:
        ratings = lp.data.load("movielens", split="all")
    except DataSourceMissingError as exc:
        pytest.skip(f"MovieLens is not unpacked on this machine: {exc.message}")
    run(RecommendConfig.checked(users=20, factors=4, epochs=1, register="films"),
        registrar=lp.register)  # fmt: skip
    text = client.get("/models/films/1/recommend?user=1&item=1&k=5").text
    titles = ratings.item_table()
    assert "Like Toy Story" in text
    history = _column(text, "history", 1)
    assert any(titles[i][0] in html.unescape(h) for h in history for i in (31, 1029, 1061))
