"""The text platform parts: the ``text`` job spec, registered classifiers, indexes and
assistants (a manifest that describes text, round trips through the registry alone), their
served routes through the real ASGI app in-process (``/predict``, ``/search``, a streamed
``/chat`` whose follow-up uses the history, ``/info``), and the dashboard's ``/text`` page.

One home per module holds a TF-IDF classifier, an exact index and an assistant over a
small FAQ, all fitted on a few real sentences (MiniLM embeds a dozen texts: seconds).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

import lepton as lp
from lepton.errors import TextError
from lepton.platform.jobs._specs import JobRequest, JobSpec, TextJob
from lepton.serve import ModelService
from lepton.serve._by_model import SERVICES, service_for_model
from lepton.serve._text import AssistantService, IndexService, TextClassifierService, pieces
from lepton.text._stored import TEXT_ARCHITECTURES
from lepton.text.recipe import TextConfig, macro_f1

REVIEWS = [
    ("a triumph, moving and beautifully acted", "fresh"),
    ("a wonderful, funny and warm film", "fresh"),
    ("great performances and a great story", "fresh"),
    ("dull, slow and far too long", "rotten"),
    ("a boring mess with a terrible script", "rotten"),
    ("awful acting and a dull plot", "rotten"),
]
GLOSSES = [
    ("a domesticated carnivorous mammal kept as a pet; a dog", {"pos": "n"}),
    ("a small domesticated feline; a cat", {"pos": "n"}),
    ("a motor vehicle with four wheels; an automobile", {"pos": "n"}),
    ("move fast by using one's feet", {"pos": "v"}),
    ("consume food; eat a meal", {"pos": "v"}),
]
FAQ = [
    ("How do I register a model?", "Call lp.register(model, 'name'): it stores the weights."),
    ("How do I delete a registered model version?", "Run lepton models delete NAME:VERSION."),
    ("How do I deploy a model?", "Run lepton deploy NAME: it serves the version over HTTP."),
    ("How do I load a dataset?", "Call lp.data.load('mnist') for a catalog dataset."),
]

# -- the config and the job spec ----------------------------------------------------------


def test_the_job_spec_is_the_config_plus_its_kind() -> None:
    assert TextJob().model_dump(exclude={"kind"}) == TextConfig().model_dump()
    body = {"spec": {"kind": "text", "task": "index", "dataset": "wordnet-glosses",
                     "register": "glosses"}}  # fmt: skip
    req = JobRequest.model_validate(body)
    assert isinstance(req.spec, TextJob)
    assert (req.spec.task, req.spec.dataset, req.spec.register_as) == (
        "index",
        "wordnet-glosses",
        "glosses",
    )
    assert req.spec.index == TextConfig().index == "hnsw"
    stored = req.spec.model_dump(mode="json", by_alias=True)
    assert stored["register"] == "glosses"
    assert TypeAdapter(JobSpec).validate_python(stored) == req.spec


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"task": "translate"}, "task"),
        ({"task": "classify", "dataset": "wordnet-glosses"}, "dataset"),
        ({"encoder": "bert"}, "encoder"),
        ({"index": "ivf"}, "index"),
        ({"limit": 5}, "limit"),
        ({"threshold": 1.5}, "threshold"),
        ({"epochs": 0}, "epochs"),
        ({"register": "Bad Name!"}, "register"),
        ({"path": "/etc"}, "path"),
    ],
)
def test_the_spec_refuses_what_the_recipe_cannot_run(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        TextJob.model_validate({"kind": "text", **values})


def test_macro_f1_is_the_mean_of_per_class_f1() -> None:
    assert macro_f1(["a", "a", "b", "b"], ["a", "a", "b", "b"]) == 1.0
    # class a: tp 1, fp 1, fn 1 -> 0.5; class b: tp 1, fp 1, fn 1 -> 0.5
    assert macro_f1(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == pytest.approx(0.5)


# -- registered text versions ---------------------------------------------------------------


class Made(NamedTuple):
    home: Path
    clf: lp.text.TextClassifier
    index: lp.text.Index
    bot: lp.text.Assistant


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    home = tmp_path_factory.mktemp("text-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        mp.delenv("LEPTON_DATA_DIR", raising=False)
        torch.set_num_threads(1)
        clf = lp.text.TextClassifier("tfidf").fit(*map(list, zip(*REVIEWS, strict=True)))
        clf.register("reviews", metrics={"accuracy": 1.0})
        index = lp.text.Index("exact")
        index.add([t for t, _ in GLOSSES], metadata=[m for _, m in GLOSSES])
        index.register("glosses")
        bot = lp.text.Assistant(FAQ, threshold=0.4)
        bot.register("helpdesk")
        yield Made(home, clf, index, bot)


@pytest.fixture
def home(made: Made, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEPTON_HOME", str(made.home))
    return made.home


def test_every_text_architecture_has_its_service(made: Made, home: Path) -> None:
    assert SERVICES.keys() >= set(TEXT_ARCHITECTURES)
    assert type(service_for_model("reviews")) is TextClassifierService
    assert type(service_for_model("glosses")) is IndexService
    assert type(service_for_model("helpdesk")) is AssistantService
    lp.register(lp.models.MLP(in_features=4, num_classes=3), "plain")
    assert type(service_for_model("plain")) is ModelService


def test_the_manifest_describes_text_not_a_token_probe(made: Made, home: Path) -> None:
    tfidf = lp.registry.resolve("reviews").manifest
    assert tfidf["input_schema"] == {"kind": "text", "dtype": "string", "encoder": "tfidf"}
    assert tfidf["output_schema"]["classes"] == ["fresh", "rotten"]
    assert tfidf["dataset"]["rows"] == len(REVIEWS)
    assert set(tfidf["files"]) == {"model.safetensors"}  # no pickle
    # the bug: a MiniLM classifier recorded the probe's token count as its input shape
    mini = lp.text.TextClassifier("minilm").fit(*map(list, zip(*REVIEWS, strict=True)))
    schema = mini.register("reviews-minilm").manifest["input_schema"]
    assert "shape" not in schema
    assert (schema["kind"], schema["dtype"], schema["encoder"]) == ("text", "string", "minilm")
    assert schema["tokenizer"] == "all-MiniLM-L6-v2"
    assert schema["max_length"] == 256
    back = lp.text.TextClassifier.from_registry("reviews-minilm")
    texts = ["a warm and funny triumph", "a dull and boring mess"]
    assert np.allclose(back.predict_proba(texts), mini.predict_proba(texts), atol=1e-5)


def test_registered_objects_come_back_from_the_registry_alone(made: Made, home: Path) -> None:
    texts = ["great warm film", "boring and slow", "an unseen word zzz"]
    clf = lp.text.TextClassifier.from_registry("reviews")
    assert clf.encoder == "tfidf"
    assert clf.classes == made.clf.classes
    assert np.allclose(clf.predict_proba(texts), made.clf.predict_proba(texts))
    index = lp.text.Index.from_registry("glosses")
    assert len(index) == len(GLOSSES)
    back, before = index.search("a kitten", k=3), made.index.search("a kitten", k=3)
    assert [(h.id, h.text, h.metadata) for h in back] == [
        (h.id, h.text, h.metadata) for h in before
    ]
    assert [h.score for h in back] == pytest.approx([h.score for h in before], abs=1e-6)
    assert [h.metadata["pos"] for h in index.search("sprint", k=2, where={"pos": "v"})] == [
        "v",
        "v",
    ]
    bot = lp.text.Assistant.from_registry("helpdesk")
    assert bot.entries == made.bot.entries
    assert bot.threshold == 0.4
    assert torch.equal(bot._q, made.bot._q)
    with pytest.raises(TextError, match="not one of text-index"):
        lp.text.Index.from_registry("reviews")


# -- serving in-process ---------------------------------------------------------------------


def _calls(app: Any, calls: list[tuple[str, str, Any]]) -> list[httpx.Response]:
    """Each ``(method, path, json)`` through the app in-process, in order."""

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [await c.request(m, path, json=body) for m, path, body in calls]

    return asyncio.run(scenario())


def test_served_predict_takes_one_text_or_many(made: Made, home: Path) -> None:
    app = service_for_model("reviews").asgi()
    one, many, both, info = _calls(app, [
        ("POST", "/predict", {"text": "a wonderful film"}),
        ("POST", "/predict", {"texts": ["dull and slow", "great story"]}),
        ("POST", "/predict", {"text": "a", "texts": ["b"]}),
        ("GET", "/info", None),
    ])  # fmt: skip
    assert one.status_code == many.status_code == info.status_code == 200
    expected = made.clf.predict_proba(["a wonderful film"])[0]
    answer = one.json()
    assert answer["label"] == "fresh"
    assert answer["probabilities"] == pytest.approx(
        dict(zip(made.clf.classes, expected, strict=True))
    )
    assert [p["label"] for p in many.json()["predictions"]] == ["rotten", "fresh"]
    assert many.json()["label"] is None
    assert both.status_code == 422
    assert "exactly one of" in both.text
    assert info.json()["kind"] == "text-classifier"
    assert info.json()["classes"] == ["fresh", "rotten"]
    assert info.json()["input_schema"]["kind"] == "text"


def test_served_search_filters_and_refuses_unknown_keys(made: Made, home: Path) -> None:
    app = service_for_model("glosses").asgi()
    plain, verbs, unknown, info = _calls(app, [
        ("POST", "/search", {"query": "a kitten", "k": 2}),
        ("POST", "/search", {"query": "a kitten", "k": 5, "filter": {"pos": "v"}}),
        ("POST", "/search", {"query": "a kitten", "filter": {"colour": "red"}}),
        ("GET", "/info", None),
    ])  # fmt: skip
    assert plain.status_code == 200, plain.text
    hits = plain.json()["hits"]
    assert [h["text"] for h in hits] == [h.text for h in made.index.search("a kitten", k=2)]
    assert hits[0]["text"].endswith("a cat")
    assert {h["metadata"]["pos"] for h in verbs.json()["hits"]} == {"v"}
    assert len(verbs.json()["hits"]) == 2  # only two verbs
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_filter"
    assert info.json()["entries"] == len(GLOSSES)
    assert info.json()["filter_keys"] == ["pos"]


async def _raw_chat(app: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ASGI messages the app sends for one ``POST /chat``."""
    sent: list[dict[str, Any]] = []
    payload = json.dumps(body).encode()
    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "path": "/chat",
        "raw_path": b"/chat", "query_string": b"", "scheme": "http", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_chat_streams_ndjson_pieces_and_a_follow_up_uses_the_history(
    made: Made, home: Path
) -> None:
    app = service_for_model("helpdesk").asgi()
    first = {"message": "how can I put my model in the registry?"}
    follow = {"message": "and how do I delete it?",
              "history": [{"role": "user", "content": first["message"]},
                          {"role": "assistant", "content": FAQ[0][1]}]}  # fmt: skip

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await _raw_chat(app, first), await _raw_chat(app, follow)

    sent_first, sent_follow = asyncio.run(both())
    start = sent_first[0]
    assert start["status"] == 200
    assert (b"content-type", b"application/x-ndjson") in start["headers"]
    chunks = [m["body"] for m in sent_first[1:] if m["body"]]
    # one line per chunk, sent as made: the answer arrives piece by piece
    assert len(chunks) == 2 + len(pieces(FAQ[0][1]))
    events = [json.loads(c) for c in chunks]
    assert all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in chunks)
    assert events[0]["event"] == "start"
    assert events[0]["known"] is True
    assert events[0]["question"] == FAQ[0][0]
    assert events[0]["used_context"] is False
    assert "".join(e["text"] for e in events if e["event"] == "delta") == FAQ[0][1]
    assert events[-1] == {**events[-1], "event": "end", "text": FAQ[0][1]}
    # the follow-up names no subject: read with the previous turn, it is the delete entry
    later = [json.loads(m["body"]) for m in sent_follow[1:] if m["body"]]
    assert later[0]["used_context"] is True
    assert later[0]["question"] == FAQ[1][0]
    assert later[-1]["text"] == FAQ[1][1]
    alone = [json.loads(m["body"]) for m in asyncio.run(_raw_chat(app, {"message":
             follow["message"]}))[1:] if m["body"]]  # fmt: skip
    assert alone[0]["used_context"] is False


def test_chat_says_it_does_not_know_below_the_threshold(made: Made, home: Path) -> None:
    app = service_for_model("helpdesk").asgi()
    (answer,) = _calls(app, [("POST", "/chat", {"message": "what is the capital of Peru?"})])
    events = [json.loads(line) for line in answer.text.splitlines()]
    assert events[0]["known"] is False
    assert events[0]["score"] < 0.4
    assert events[-1]["text"].startswith("I don't know.")
    (bad,) = _calls(app, [("POST", "/chat", {"message": ""})])
    assert bad.status_code == 422


# -- the dashboard page ---------------------------------------------------------------------


def test_the_text_page_searches_chats_classifies_and_keeps_what_was_typed(
    home: Path, client: Any
) -> None:
    empty = client.get("/text")
    assert empty.status_code == 200
    assert 'href="/text"' in empty.text  # in the nav bar
    assert "glosses:1" in empty.text
    assert "helpdesk:1" in empty.text
    found = client.get("/text", params={"index": "glosses:1", "q": "a kitten", "k": 2})
    assert found.status_code == 200
    assert 'value="a kitten"' in found.text
    assert "a small domesticated feline" in found.text
    verbs = client.get("/text", params={"index": "glosses:1", "q": "a kitten", "where": "pos=v"})
    assert "a small domesticated feline" not in verbs.text
    assert "consume food" in verbs.text
    bad = client.get("/text", params={"index": "glosses:1", "q": "a kitten", "where": "pos"})
    assert bad.status_code == 422
    assert "key=value" in bad.text
    assert 'value="a kitten"' in bad.text
    asked = {"assistant": "helpdesk:1", "message": "and how do I delete it?",
             "history": ["how can I put my model in the registry?"]}  # fmt: skip
    chat = client.get("/text", params=asked)
    assert chat.status_code == 200
    assert "lepton models delete NAME:VERSION" in chat.text
    assert "read with the previous turn" in chat.text
    assert 'name="history" value="and how do I delete it?"' in chat.text
    # what static/lepton.js reads to show the answer as it streams in
    streamed = client.get("/text/chat", params=asked)
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in streamed.text.splitlines()]
    assert events[0]["used_context"] is True
    assert events[-1] == {"event": "end", "text": FAQ[1][1]}
    assert client.get("/text/chat", params={"assistant": "helpdesk:1"}).status_code == 422
    assert 'data-stream="/text/chat"' in chat.text
    sure = client.get("/text", params={"classifier": "reviews:1", "text": "a wonderful film"})
    assert "<strong>fresh</strong>" in sure.text
    assert 'value="a wonderful film"' in sure.text


def test_the_text_page_submits_a_text_job_and_keeps_a_refused_form(
    client: Any, platform: Any
) -> None:
    # a home of its own (the module's has its admin signed in by the test above)
    ours = {"origin": "http://127.0.0.1:8000", "accept": "text/html"}
    listing = client.get("/text")
    assert 'id="submit-text"' in listing.text, listing.text[-3000:]
    bad = client.post("/text", data={"task": "classify", "limit": "5"}, headers=ours)
    assert bad.status_code == 422
    assert "limit: Input should be greater than or equal to 10" in bad.text
    assert 'name="limit" type="number" min="10" value="5"' in bad.text  # kept
    made = client.post(
        "/text", data={"task": "index", "dataset": "wordnet-glosses", "index": "exact",
                       "limit": "500", "register_as": "glosses"},
        headers=ours, follow_redirects=False,
    )  # fmt: skip
    assert made.status_code == 303
    job = platform.jobs.get(int(made.headers["location"].rsplit("/", 1)[1]))
    assert job.kind == "text"
    assert (job.spec["task"], job.spec["dataset"], job.spec["index"]) == (
        "index",
        "wordnet-glosses",
        "exact",
    )
    assert (job.spec["limit"], job.spec["register"]) == (500, "glosses")
