"""lepton.recommend on the real MovieLens-small ratings (a subset of users for speed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lepton as lp
from lepton.data import Ratings
from lepton.data._movielens import _content_digest
from lepton.errors import DataSourceMissingError, NotFittedError, RecommendError, UnknownIdError
from lepton.recommend import FactorModel, Recommender, ranking_metrics
from lepton.recommend._bayes import n_kept

pytest.importorskip("rdata")
if lp.data.info("movielens").locate() is None:
    pytest.skip("MovieLens is not installed (scripts/setup.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def movielens() -> Ratings:
    return lp.data.load("movielens", split="all")


@pytest.fixture(scope="module")
def subset(movielens: Ratings) -> Ratings:
    users = np.unique(movielens.user)[:120]
    return movielens.take(np.isin(movielens.user, users))


@pytest.fixture(scope="module")
def fitted(subset: Ratings) -> tuple[Recommender, Ratings, Ratings]:
    torch.set_num_threads(1)
    train, test = subset.split(0.2, seed=0)
    rec = Recommender(algorithm="sgd", factors=16, epochs=6, lr=0.01, batch_size=2048, seed=0)
    return rec.fit(train), train, test


@pytest.fixture(scope="module")
def bayes(subset: Ratings) -> tuple[Recommender, Ratings, Ratings]:
    """The default explicit algorithm, short: 20 Gibbs sweeps, 8 samples of rank 8."""
    torch.set_num_threads(1)
    train, test = subset.split(0.2, seed=0)
    rec = Recommender(factors=8, epochs=20, samples=8, seed=0).fit(train)
    return rec, train, test


def test_loader_counts_and_checksum(movielens: Ratings) -> None:
    assert len(movielens) == 100_004
    assert movielens.n_users == 671
    assert movielens.n_items == 9_066
    assert len(movielens.item_ids) == 9_066
    table = movielens.item_table()
    assert table[1][0] == "Toy Story"
    assert table[1][1] == 1995
    assert "Animation" in table[1][2]
    assert set(np.unique(movielens.rating)) <= {0.5 * k for k in range(1, 11)}
    assert _content_digest(movielens) == lp.data._movielens.MOVIELENS_SHA256
    assert len(lp.data.load("movielens")) == 80_003  # the catalog's seeded 80/20 train split


def test_missing_source_says_how_to_get_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataSourceMissingError, match=r"setup\.sh"):
        lp.data.load("movielens", path=tmp_path)


def test_random_split_is_seeded_and_disjoint(subset: Ratings) -> None:
    train, test = subset.split(0.2, seed=3)
    again, _ = subset.split(0.2, seed=3)
    assert np.array_equal(train.user, again.user)
    assert np.array_equal(train.item, again.item)
    assert len(train) + len(test) == len(subset)
    assert abs(len(test) / len(subset) - 0.2) < 1e-3
    rows = lambda r: set(zip(r.user.tolist(), r.item.tolist(), r.timestamp.tolist(), strict=False))  # noqa: E731
    assert not rows(train) & rows(test)


def test_temporal_split_puts_each_users_latest_in_test(subset: Ratings) -> None:
    train, test = subset.temporal_split(0.2)
    assert len(train) + len(test) == len(subset)
    for user in np.unique(test.user)[:50]:
        assert train.timestamp[train.user == user].max() <= test.timestamp[test.user == user].min()
        n = (subset.user == user).sum()
        assert (test.user == user).sum() == max(1, round(0.2 * n))


def test_fit_reaches_a_sane_rmse_and_ranks(fitted: tuple[Recommender, Ratings, Ratings]) -> None:
    rec, _, test = fitted
    scores = rec.score(test, k=10)
    baseline = float(np.sqrt(np.mean((test.rating - rec.model.mean.item()) ** 2)))  # type: ignore[union-attr]
    assert scores["rmse"] < 0.95
    assert scores["rmse"] < baseline - 0.03
    assert 0 <= scores["ndcg@10"] <= 1
    assert 0 < scores["coverage"] <= 1


def test_recommend_excludes_seen_and_honours_filter(
    fitted: tuple[Recommender, Ratings, Ratings],
) -> None:
    rec, train, _ = fitted
    user = int(train.user[0])
    seen = set(train.item[train.user == user].tolist())
    top = rec.recommend(user, k=20)
    assert len(top) == 20
    assert not seen & {item for item, _ in top}
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    everything = rec.recommend(user, k=10_000, exclude_seen=False)
    assert seen <= {i for i, _ in everything}
    allowed = {item for item, _ in top[5:]}
    assert {i for i, _ in rec.recommend(user, k=5, filter=allowed)} <= allowed
    popular = rec.recommend("nobody", k=3)  # unknown user: most rated items
    counts = np.bincount(np.searchsorted(rec.model.item_ids, train.item))  # type: ignore[union-attr]
    assert popular[0][0] == rec.model.item_ids[int(counts.argmax())]  # type: ignore[union-attr]


def test_similar_items_are_ranked_by_cosine(fitted: tuple[Recommender, Ratings, Ratings]) -> None:
    rec, _, _ = fitted
    sims = rec.similar_items(1, k=5)
    assert len(sims) == 5
    assert 1 not in {i for i, _ in sims}
    assert all(-1.0001 <= s <= 1.0001 for _, s in sims)
    with pytest.raises(UnknownIdError):
        rec.similar_items(-42)


def test_partial_fit_folds_in_a_new_user(fitted: tuple[Recommender, Ratings, Ratings]) -> None:
    rec, _train, _ = fitted
    before = {k: v.clone() for k, v in rec.model.state_dict().items()}  # type: ignore[union-attr]
    loved, hated = [1, 2, 3, 6, 10], [32, 47, 50, 110, 150]
    new = {"user": [9_999] * 10, "item": loved + hated, "rating": [5.0] * 5 + [0.5] * 5}
    rec.partial_fit(new)
    m = rec.model
    assert m is not None
    assert m.user_ids[-1] == 9_999
    pred = rec.predict([(9_999, i) for i in loved + hated])
    assert pred[:5].mean() > pred[5:].mean() + 1.0
    assert not {i for i, _ in rec.recommend(9_999, k=10)} & set(loved + hated)
    # every other user's row is untouched, and the fold-in took a fraction of a fit
    n = before["user_factors"].shape[0]
    assert torch.equal(m.user_factors[:n], before["user_factors"])
    assert 0 < rec.drift < 0.01
    assert not rec.needs_refit
    with pytest.raises(RecommendError, match="NaN"):
        rec.partial_fit({"user": [1], "item": [1], "rating": [float("nan")]})


def test_bad_inputs_get_clear_errors() -> None:
    table = {"user": [1, 2], "item": [1, 2], "rating": [4.0, 3.0]}
    with pytest.raises(RecommendError, match="no column 'stars'"):
        Recommender(rating_col="stars").fit(table)
    with pytest.raises(RecommendError, match="NaN"):
        Recommender().fit({"user": [1, 2], "item": [1, 2], "rating": [4.0, float("nan")]})
    with pytest.raises(RecommendError, match="cannot tell which column"):
        Recommender().fit({"who": [1], "what": [1], "rating": [1.0]})
    with pytest.raises(RecommendError, match="kind"):
        Recommender(kind="hybrid")
    with pytest.raises(NotFittedError):
        Recommender().recommend(1)


def test_string_ids_rows_and_implicit_bpr_and_als() -> None:
    rows = [(f"u{u}", f"i{(u * 7 + j) % 30}", 1.0) for u in range(40) for j in range(6)]
    for options in ({"algorithm": "bpr", "epochs": 30, "lr": 0.05}, {"epochs": 10}):
        rec = Recommender(kind="implicit", factors=8, batch_size=64, **options)  # type: ignore[arg-type]
        rec.fit(rows)
        top = rec.recommend("u3", k=5)
        assert len(top) == 5
        assert all(isinstance(i, str) for i, _ in top)
    assert rec.algorithm == "als"  # the implicit default
    assert rec.losses[-1] <= rec.losses[0]  # ALS never increases its objective
    metrics = ranking_metrics({"a": [1, 2, 3]}, {"a": [2, 9]}, k=3)
    assert metrics["precision@3"] == pytest.approx(1 / 3)
    assert metrics["recall@3"] == pytest.approx(0.5)
    assert metrics["ndcg@3"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))


def test_register_and_load_round_trip(fitted: tuple[Recommender, Ratings, Ratings]) -> None:
    rec, _, test = fitted
    pairs = list(zip(test.user[:50].tolist(), test.item[:50].tolist(), strict=True))
    version = lp.register(rec.model, "movies", metrics={"rmse": rec.score(test)["rmse"]})
    again = lp.recommend.load(version.ref)
    assert isinstance(again.model, FactorModel)
    assert np.array_equal(again.predict(pairs), rec.predict(pairs))
    user = int(test.user[0])
    assert again.recommend(user, k=10) == rec.recommend(user, k=10)
    assert again.model.user_ids == rec.model.user_ids  # type: ignore[union-attr]


def test_cold_start_item_and_refit(subset: Ratings) -> None:
    small = subset.take(np.isin(subset.user, np.unique(subset.user)[:30]))
    rec = Recommender(factors=8, epochs=2, batch_size=2048).fit(small)
    m = rec.model
    assert m is not None
    assert "Animation" in m.genres
    new_item = 10**7
    rec.partial_fit({"user": [1], "item": [1], "rating": [4.0]}, items={new_item: "Animation"})
    m = rec.model
    assert m is not None
    row = m.item_ids.index(new_item)
    expected = m.item_genres[row] @ m.genre_factors  # starts from its genre's factors
    assert torch.allclose(m.item_factors[row], expected)
    assert expected.abs().sum() > 0
    rec.partial_fit({"user": [5555], "item": [1], "rating": [5.0]})
    stored = len(rec.model.seen_ratings)  # type: ignore[union-attr]
    assert stored == len(small) + 2
    assert rec.drift > 0
    rec.refit()
    assert len(rec.model.seen_ratings) == stored
    assert rec.drift == 0
    assert 5555 in rec.model.user_ids
    assert new_item in rec.model.item_ids


def test_algorithms_are_checked_against_the_kind() -> None:
    assert Recommender().algorithm == "bayes"
    assert Recommender("implicit").algorithm == "als"
    with pytest.raises(RecommendError, match="does not fit kind='explicit'"):
        Recommender(algorithm="bpr")
    with pytest.raises(RecommendError, match="does not fit kind='implicit'"):
        Recommender("implicit", algorithm="bayes")
    with pytest.raises(RecommendError, match="samples"):
        Recommender(samples=0)


def test_bayes_stores_the_sample_average_and_beats_sgd(
    bayes: tuple[Recommender, Ratings, Ratings],
    fitted: tuple[Recommender, Ratings, Ratings],
) -> None:
    rec, _, test = bayes
    m = rec.model
    assert m is not None
    assert m.algorithm == "bayes"
    assert m.factors == 8 * n_kept(20, 5, 8) == 64  # 8 kept samples of rank 8, side by side
    # the first block alone is one sample: a different (worse) predictor than the average
    pairs = torch.tensor([[0, 0], [1, 3]])
    whole = m(pairs)
    one = (m.user_factors[pairs[:, 0], :8] * m.item_factors[pairs[:, 1], :8]).sum(-1) * 8
    assert not torch.allclose(
        whole, one + m.mean + m.user_bias[pairs[:, 0], 0] + m.item_bias[pairs[:, 1], 0]
    )
    bayes_rmse = rec.score(test)["rmse"]
    sgd_rmse = fitted[0].score(test)["rmse"]  # same split, same users
    assert bayes_rmse < sgd_rmse
    assert all(np.isfinite(rec.losses))
    assert rec.losses[-1] < rec.losses[0]


def test_bayes_partial_fit_touches_only_new_rows_and_tracks_a_refit(subset: Ratings) -> None:
    torch.set_num_threads(1)
    train, test = subset.split(0.2, seed=1)
    order = np.random.default_rng(0).permutation(len(train))
    base, new = train.take(np.sort(order[300:])), train.take(np.sort(order[:300]))
    rec = Recommender(factors=8, epochs=20, samples=8, seed=0).fit(base)
    before_rmse = rec.score(test)["rmse"]
    m = rec.model
    assert m is not None
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rec.partial_fit(new)
    m = rec.model
    assert m is not None
    # cost: only the rows of users and items in the new ratings moved
    touched_u = {m.user_ids.index(u) for u in set(new.user.tolist())}
    moved_u = set(
        torch.nonzero((m.user_factors != before["user_factors"]).any(1)).flatten().tolist()
    )
    assert moved_u == touched_u
    n_items = before["item_factors"].shape[0]
    moved_i = (m.item_factors[:n_items] != before["item_factors"]).any(1).sum()
    assert 0 < int(moved_i) <= len(set(new.item.tolist()))
    assert m.fitted_on == len(base)
    assert rec.drift == pytest.approx(300 / len(base))
    # accuracy: the fold-in does not hurt, and lands near a full refit on everything
    folded = rec.score(test)["rmse"]
    assert folded <= before_rmse + 0.005
    refit = Recommender(factors=8, epochs=20, samples=8, seed=0).fit(train).score(test)["rmse"]
    assert abs(folded - refit) < 0.01


def test_implicit_als_ours_and_pypi_rank_above_popularity(subset: Ratings) -> None:
    torch.set_num_threads(1)
    train, test = subset.temporal_split(0.2)
    relevant: dict[int, list[int]] = {}
    for u, i in zip(test.user.tolist(), test.item.tolist(), strict=True):
        relevant.setdefault(u, []).append(i)
    counts = np.unique(train.item, return_counts=True)
    popular = counts[0][np.argsort(-counts[1], kind="stable")].tolist()
    seen = {u: set(train.item[train.user == u].tolist()) for u in relevant}
    pop_lists = {u: [i for i in popular if i not in seen[u]][:10] for u in relevant}
    pop_ndcg = ranking_metrics(pop_lists, relevant, 10)["ndcg@10"]
    ours = Recommender("implicit", epochs=10).fit(train)
    lists = {u: [i for i, _ in ours.recommend(u, 10)] for u in relevant}
    assert ranking_metrics(lists, relevant, 10)["ndcg@10"] > pop_ndcg
    pytest.importorskip("implicit")
    theirs = Recommender("implicit", algorithm="implicit-als", epochs=10).fit(train)
    assert theirs.model is not None
    assert theirs.model.algorithm == "implicit-als"
    lists = {u: [i for i, _ in theirs.recommend(u, 10)] for u in relevant}
    assert ranking_metrics(lists, relevant, 10)["ndcg@10"] > 0
