"""``lp.models.GPT``: shapes, causality, training through ``lp.fit``, sampling, perplexity,
the registry round trip and the streamed ``/generate`` route."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import lepton as lp
from lepton.errors import GenerationError, LabelError, ShapeError, TextError
from lepton.models import GPT, CharTokenizer
from lepton.models._gpt import sample_next
from lepton.serve._by_model import service_for_model
from lepton.serve._generate import GenerateService

TEXT = "the quick brown fox jumps over the lazy dog. "
SMALL: dict[str, Any] = {"context": 32, "d_model": 32, "n_heads": 2, "n_layers": 1, "dropout": 0.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny matrices: more threads only wait on each other (7x slower on a busy box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained() -> tuple[GPT, lp.text.LanguageModelData, Any]:
    """A one-layer GPT fitted on one repeated sentence (it learns it by heart)."""
    torch.manual_seed(0)
    data = lp.text.LanguageModelData([TEXT * 12], context=32, stride=4, separator="")
    model = GPT(vocab=data.tokenizer.vocab, **SMALL)
    result = lp.fit(model, data.dataset, data.dataset, epochs=8, batch_size=16, lr=1e-2,
                    quiet=True, num_threads=1)  # fmt: skip
    return model.eval(), data, result


def test_logits_have_one_row_per_position_and_the_context_is_enforced() -> None:
    model = GPT(vocab="abc", **SMALL)
    out = model(torch.randint(0, 4, (3, 7)))
    assert out.shape == (3, 7, 4)  # vocab + the unknown id
    with pytest.raises(ShapeError, match=r"at most context=32 positions, got 33"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"vocab_size is 4"):
        model(torch.tensor([[0, 9]]))


def test_a_position_never_sees_the_tokens_after_it() -> None:
    torch.manual_seed(1)
    model = GPT(vocab="abcdefgh", **SMALL).eval()
    x = torch.randint(0, 8, (2, 20))
    changed = x.clone()
    changed[:, 12:] = (changed[:, 12:] + 3) % 8
    a, b = model(x), model(changed)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-3)


def test_weights_are_tied_and_stored_once() -> None:
    model = GPT(vocab="ab", **SMALL)
    names = list(model.state_dict())
    assert "tokens.weight" in names
    assert not any("head" in n for n in names)


def test_lp_fit_trains_it_on_next_token_windows(trained: Any) -> None:
    model, data, result = trained
    assert data.dataset.features.shape == data.dataset.targets.shape == (len(data), 32)
    assert torch.equal(data.dataset.features[0, 1:], data.dataset.targets[0, :-1])
    first, last = result.history[0], result.history[-1]
    assert first.train["loss"] > 2.0  # about log(vocab) at the start
    assert last.val["loss"] < 0.3, result.history  # the sentence, by heart
    assert last.val["accuracy"] > 0.9
    # the model continues the sentence it learnt
    assert model.generate("the quick brown ", 20, temperature=0) == "fox jumps over the l"


def test_perplexity_is_the_vocabulary_size_for_a_uniform_model_and_low_after_training(
    trained: Any,
) -> None:
    model, data, _result = trained
    fresh = GPT(vocab=data.tokenizer.vocab, **SMALL)
    with torch.no_grad():
        fresh.tokens.weight.zero_()  # every logit 0: uniform over the vocabulary
    assert lp.text.perplexity(fresh, [TEXT * 3]) == pytest.approx(fresh.vocab_size, rel=1e-4)
    ppl = lp.text.perplexity(model, [TEXT * 3], separator="")
    assert 1.0 <= ppl < math.exp(0.3)
    # stride 1 (each token sees the longest context) cannot do worse here
    assert lp.text.perplexity(model, [TEXT * 3], separator="", stride=1) <= ppl * 1.05
    with pytest.raises(TextError, match=r"stride must be in \[1, context=32\]"):
        lp.text.perplexity(model, [TEXT], stride=64)


def test_sampling_repeats_under_a_seed(trained: Any) -> None:
    model, _, _ = trained
    a = model.generate("the ", 40, temperature=1.5, seed=7)
    assert a == model.generate("the ", 40, temperature=1.5, seed=7)
    assert "".join(model.stream("the ", 40, temperature=1.5, seed=7)) == a
    others = {model.generate("the ", 40, temperature=1.5, seed=s) for s in range(5)}
    assert len(others) > 1
    assert len(a) == 40
    assert "\ufffd" not in a


def test_top_k_and_top_p_keep_only_the_likeliest_tokens() -> None:
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    gen = torch.Generator().manual_seed(0)
    drawn_k = {sample_next(logits, 1.0, top_k=2, generator=gen) for _ in range(300)}
    assert drawn_k == {1, 3}
    # 0.5 then 0.3 reach top_p=0.7; 0.15 comes after a mass of 0.8 and is dropped
    drawn_p = {sample_next(logits, 1.0, top_p=0.7, generator=gen) for _ in range(300)}
    assert drawn_p == {1, 3}
    assert {sample_next(logits, 1.0, top_p=0.4, generator=gen) for _ in range(50)} == {1}
    assert sample_next(logits, 0.0) == 1  # greedy
    everything = {sample_next(logits, 1.0, generator=gen) for _ in range(2000)}
    assert everything == {0, 1, 2, 3}
    with pytest.raises(GenerationError, match=r"top_p must be in \(0, 1\]"):
        GPT(vocab="ab", **SMALL).generate("a", 3, top_p=1.5)


def test_the_tokenizer_is_json_and_bytes_decode_incrementally(tmp_path: Any) -> None:
    tok = CharTokenizer.from_texts(["héllo"])
    again = CharTokenizer.load(tok.save(tmp_path / "tokenizer.json"))
    assert again.vocab == tok.vocab
    assert again.decode(again.encode("hé?")) == "hé\ufffd"
    raw = CharTokenizer(None)
    ids = raw.encode("é!")  # two bytes, then one
    decoder = raw.decoder()
    next(decoder)
    assert [decoder.send(i) for i in ids] == ["", "é", "!"]
    assert json.loads(raw.to_json()) == {"kind": "byte", "vocab": None}


def test_one_label_per_position_only_for_token_ids_of_the_same_shape() -> None:
    ids = np.arange(12).reshape(3, 4)
    ds = lp.data.Dataset(ids, ids + 1)
    assert ds.task == "classification"
    assert ds.targets is not None
    assert ds.targets.shape == (3, 4)
    assert sum(ds.describe()["class_counts"].values()) == 12
    with pytest.raises(LabelError, match=r"one label per sample \(N,\), got shape \(3, 2\)"):
        lp.data.Dataset(ids, ids[:, :2])
    with pytest.raises(LabelError, match=r"one label per sample"):
        lp.data.Dataset(ids.astype(np.float32), ids)


def test_registry_round_trip_gives_the_same_logits(trained: Any) -> None:
    model, data, result = trained
    version = lp.register(model, "tiny-gpt", metrics=result.metrics, dataset=data.dataset)
    assert version.manifest["architecture"]["config"]["vocab"] == data.tokenizer.vocab
    loaded = lp.load_model("tiny-gpt")
    assert isinstance(loaded, GPT)
    x = data.dataset.features[:3]
    assert torch.equal(loaded.eval()(x), model(x))
    assert loaded.generate("the", 25, seed=3) == model.generate("the", 25, seed=3)


def _stream(app: Any, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    async def go() -> tuple[str, list[dict[str, Any]]]:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c,
            c.stream("POST", "/generate", json=body) as response,
        ):
            assert response.status_code == 200, await response.aread()
            lines = [json.loads(line) async for line in response.aiter_lines() if line]
            return response.headers["content-type"], lines

    return asyncio.run(go())


def test_generate_streams_ndjson_pieces(trained: Any) -> None:
    model, _, _ = trained
    lp.register(model, "story")
    service = service_for_model("story")
    assert isinstance(service, GenerateService)
    app = service.asgi()
    body = {"prompt": "the lazy ", "max_new_tokens": 12, "temperature": 0.7, "seed": 5}
    kind, events = _stream(app, body)
    assert kind.startswith("application/x-ndjson")
    assert [e["event"] for e in events] == ["start"] + ["delta"] * 12 + ["end"]
    assert events[0]["seed"] == 5
    assert events[0]["prompt"] == "the lazy "
    text = "".join(e["text"] for e in events[1:-1])
    assert text == events[-1]["text"] == model.generate("the lazy ", 12, temperature=0.7, seed=5)
    _, unseeded = _stream(app, {"prompt": "the", "max_new_tokens": 3})
    assert isinstance(unseeded[0]["seed"], int)  # drawn, and told, so it can be replayed

    async def refused() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [
                await c.post("/generate", json={"prompt": "a", "temperature": -1}),
                await c.post("/generate", json={"prompt": "a", "top_p": 0}),
                await c.get("/info"),
            ]

    low, nucleus, info = asyncio.run(refused())
    assert low.status_code == nucleus.status_code == 422
    assert info.json()["kind"] == "language-model"
    assert info.json()["context"] == 32
