"""Token attributions of ``lp.text.TextClassifier`` (``lp.explain.explain_text``): exact
linear contributions for TF-IDF, integrated gradients through the MiniLM embedding whose
sum matches the change in the explained log-odds (completeness)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import lepton as lp
from lepton.errors import ExplainError
from lepton.explain import TextAttribution, explain_text
from lepton.text import TextClassifier

pytest.importorskip("captum")

TEXTS = ["a dull, lifeless mess of a movie", "a joyous triumph, wonderfully acted"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reviews() -> tuple[list[str], list[str]]:
    rt = lp.data.load("rotten-tomatoes", split="train")
    order = np.random.default_rng(0).permutation(len(rt))[:400]
    names = rt.label_names()
    return [rt.texts[i] for i in order], [names[i] for i in order]


@pytest.fixture(scope="module")
def tfidf(reviews: tuple[list[str], list[str]]) -> TextClassifier:
    return TextClassifier("tfidf").fit(*reviews)


@pytest.fixture(scope="module")
def minilm(reviews: tuple[list[str], list[str]]) -> TextClassifier:
    texts, labels = reviews
    return TextClassifier("minilm").fit(texts[:60], labels[:60])


def _total(result: TextAttribution, index: int) -> float:
    return float(result.attributions[index].sum())


def test_tfidf_contributions_add_up_to_the_log_odds_exactly(tfidf: TextClassifier) -> None:
    result = explain_text(tfidf, TEXTS)
    assert result.method == "linear"
    for i in range(len(TEXTS)):
        gap = float(result.log_odds[i] - result.baseline_log_odds[i])
        assert _total(result, i) == pytest.approx(gap, abs=1e-5)
    # the explained log-odds is the classifier's own
    proba = tfidf.predict_proba(TEXTS)
    for i, t in enumerate(result.targets):
        assert float(result.log_odds[i]) == pytest.approx(
            np.log(proba[i, t] / (1 - proba[i, t])), abs=1e-5
        )
    assert result.tokens[0] == ["dull", "lifeless", "mess", "of", "movie"]  # 1-letter words out
    # the other class: the same contributions, negated (two classes)
    other = explain_text(tfidf, TEXTS[:1], target=1 - result.targets[0])
    assert torch.allclose(other.attributions[0], -result.attributions[0])
    assert tfidf.classes[result.targets[0]] == "rotten"
    assert result.top_tokens(1)[0][0] in {"dull", "lifeless", "mess"}


def test_integrated_gradients_are_complete_for_minilm(minilm: TextClassifier) -> None:
    result = explain_text(minilm, TEXTS, target="fresh", n_steps=32)
    assert result.method == "integrated_gradients"
    assert result.targets == [minilm.classes.index("fresh")] * 2
    assert result.convergence_delta is not None
    for i in range(len(TEXTS)):
        gap = float(result.log_odds[i] - result.baseline_log_odds[i])
        assert abs(gap) > 1e-3
        assert _total(result, i) - gap == pytest.approx(float(result.convergence_delta[i]))
        assert abs(float(result.convergence_delta[i])) < 0.02 * abs(gap) + 1e-3
    # the log-odds is the classifier's own: logit of 'fresh' minus logit of 'rotten'
    proba = minilm.predict_proba(TEXTS)
    fresh = minilm.classes.index("fresh")
    expected = np.log(proba[:, fresh] / (1 - proba[:, fresh]))
    assert result.log_odds.numpy() == pytest.approx(expected, abs=1e-4)
    tokens, values = result.tokens[0], result.attributions[0]
    assert tokens[0] == "[CLS]"
    assert tokens[-1] == "[SEP]"
    assert len(values) == len(tokens)
    assert float(values[0]) == float(values[-1]) == 0.0  # kept in the baseline
    # attributions of the other class's log-odds are the same, negated
    rotten = explain_text(minilm, TEXTS[:1], target="rotten", n_steps=32)
    assert torch.allclose(rotten.attributions[0], -values[:], atol=1e-4)


def test_words_merge_pieces_and_results_serialise(minilm: TextClassifier) -> None:
    result = explain_text(minilm, ["an unwatchable film"], n_steps=16)
    pieces = result.tokens[0]
    words = result.words()
    assert "[CLS]" not in [w for w, _ in words]
    merged = [w for w, _ in words]
    assert "".join(merged) == "".join(p.removeprefix("##") for p in pieces[1:-1])
    assert sum(v for _, v in words) == pytest.approx(_total(result, 0), abs=1e-5)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["tokens"] == pieces
    assert record["target"] in minilm.classes
    assert result.plot().startswith(b"\x89PNG")


def test_bad_targets_and_inputs_are_refused(tfidf: TextClassifier) -> None:
    with pytest.raises(ExplainError, match=r"target 'neutral' is not a class"):
        explain_text(tfidf, TEXTS, target="neutral")
    with pytest.raises(ExplainError, match=r"one class or one per text \(2\)"):
        explain_text(tfidf, TEXTS, target=[0])
    with pytest.raises(ExplainError, match=r"not fitted"):
        explain_text(TextClassifier("tfidf"), TEXTS)
    with pytest.raises(ExplainError, match=r"index 5 is out of range"):
        explain_text(tfidf, TEXTS).pairs(5)
    with pytest.raises(ExplainError, match=r"explained by lepton\.explain\.explain_text"):
        lp.explain(tfidf, TEXTS)
