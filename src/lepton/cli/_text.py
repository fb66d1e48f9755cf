"""``lepton text``: train a text classifier, build a search index or an FAQ assistant
(here, or as a platform ``text`` job), and ask a registered one (or a deployment of it):
``predict`` labels texts, ``search`` finds texts by meaning, ``ask`` chats with an
assistant, its answer streamed as it comes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.cli._serve import JSON_OPTION, TOKEN_FILE_OPTION, URL_OPTION, ask_deployment
from lepton.errors import ConfigError
from lepton.text.recipe import TextConfig

__all__ = ["text_app"]

console = Console(highlight=False, soft_wrap=True)
DEFAULTS = TextConfig.model_construct()  # the recipe's defaults, defined once
text_app = typer.Typer(
    help="Language (lp.text): train a text classifier, build a semantic-search index or an "
    "FAQ assistant (locally or as a platform job), and ask a registered version or a "
    "deployment of it.",
    no_args_is_help=True,
)

_MODEL = typer.Option(
    None, "--model", "-m",
    help="A registered text version: name, name:VERSION or name@STAGE (answered here).",
)  # fmt: skip
_URL, _TOKEN_FILE, _JSON = URL_OPTION, TOKEN_FILE_OPTION, JSON_OPTION


@text_app.command("train")
def train(
    task: str = typer.Option(DEFAULTS.task, help="classify, index or assistant."),
    dataset: str = typer.Option(DEFAULTS.dataset, help="rotten-tomatoes or wordnet-glosses."),
    encoder: str = typer.Option(DEFAULTS.encoder, help="classify: tfidf, minilm or transformer."),
    index: str = typer.Option(DEFAULTS.index, help="index: exact or hnsw."),
    limit: int | None = typer.Option(None, help="Use N random texts of each split."),
    c: float = typer.Option(DEFAULTS.C, "--C", help="Inverse L2 strength of logistic heads."),
    epochs: int = typer.Option(DEFAULTS.epochs, help="Fine-tuning epochs (transformer)."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help="Embedding/fine-tuning batch."),
    lr: float = typer.Option(DEFAULTS.lr, help="Peak learning rate (transformer)."),
    threshold: float = typer.Option(DEFAULTS.threshold, help="assistant: least known score."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seeds sampling and fine-tuning."),
    register: str | None = typer.Option(None, help="Register the result under this name."),
    submit: bool = typer.Option(
        False, "--submit", help="Run it as a `text` job on the platform server instead."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="With --submit: stream the job's log until it ends."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
) -> None:
    """Train a classifier, build an index or an assistant, measure it and (with
    --register) register it.

    classify: Rotten Tomatoes, movie-disjoint splits; test accuracy and macro F1. index:
    the texts of a dataset embedded with all-MiniLM-L6-v2; self-hit@1 and, for HNSW,
    recall@10 against exact search. assistant: the FAQ about Lepton that ships with it;
    top-1 on held-out paraphrases and the "I don't know" rate out of scope. Everything is
    logged to a tracking run. With --submit the same spec runs as a platform job.

    Example: `lepton text train --encoder tfidf --register reviews`, then `lepton text
    predict "a triumph" --model reviews`.
    """
    values: dict[str, Any] = {
        "task": task, "dataset": dataset, "encoder": encoder, "index": index, "limit": limit,
        "C": c, "epochs": epochs, "batch_size": batch_size, "lr": lr, "threshold": threshold,
        "seed": seed, "register": register,
    }  # fmt: skip
    config = TextConfig.checked(**{k: v for k, v in values.items() if v is not None})
    if submit:
        from lepton.cli._jobs import _submit

        _submit({"kind": "text", **config.model_dump(mode="json", by_alias=True)}, follow)
        return
    from lepton.text.recipe import run

    if as_json:
        print(json.dumps(run(config).to_json(), indent=2))
        return
    with console.status(f"text: {config.task}") as status:

        def say(line: str) -> None:
            console.print(line)
            status.update(line)

        result = run(config, say=say)
    table = Table(title=f"{result.task} ({result.rows:,} rows)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)
    console.print(f"{result.seconds:.1f} s; run: `lepton runs show {result.run_id}`")
    if result.registered:
        command = {"classify": 'predict "TEXT"', "index": 'search "QUERY"',
                   "assistant": 'ask "QUESTION"'}[result.task]  # fmt: skip
        console.print(f"registered as {result.registered}: `lepton text {command} "
                      f"--model {result.registered}`")  # fmt: skip


def _local(route: str, body: dict[str, Any], model: str) -> Any:
    """``route``'s answer from the registered version ``model``, served here."""
    from lepton.serve import _text as served
    from lepton.serve._by_model import service_for_model

    service = service_for_model(model)
    if not isinstance(service, served._TextService):
        raise ConfigError(f"{model} is not a text model; see `lepton models list`")
    service.setup()
    wanted = {"predict": served.TextClassifierService, "search": served.IndexService,
              "chat": served.AssistantService}[route]  # fmt: skip
    if not isinstance(service, wanted):
        raise ConfigError(f"{model} is a {service.kind}; it does not answer /{route}")
    if isinstance(service, served.TextClassifierService):
        return service.predict(served.PredictRequest.model_validate(body)).model_dump()
    if isinstance(service, served.IndexService):
        return service.search(served.SearchRequest.model_validate(body)).model_dump()
    assert isinstance(service, served.AssistantService)
    return (e.model_dump() for e in service.chat(served.ChatRequest.model_validate(body)))


@text_app.command("predict")
def predict(
    texts: list[str] = typer.Argument(..., help="One or more texts to classify."),
    model: str | None = _MODEL,
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    as_json: bool = _JSON,
) -> None:
    """Label texts with a registered classifier (--model) or a deployment (--url).

    Example: `lepton text predict "a triumph" "a dull mess" --model reviews`.
    """
    body = {"texts": texts}
    answer = ask_deployment("predict", body, model, url, token_file, "classifier")
    if answer is None:
        assert model is not None
        answer = _local("predict", body, model)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    table = Table(title_justify="left")
    for column in ("text", "label", "probability"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for text, row in zip(texts, answer["predictions"], strict=True):
        table.add_row(text[:80], row["label"], f"{row['probabilities'][row['label']]:.3f}")
    console.print(table)


@text_app.command("search")
def search(
    query: str = typer.Argument(..., help="What to look for, in words."),
    k: int = typer.Option(10, "-k", "--top", help="How many hits."),
    where: list[str] = typer.Option(
        [], "--where", help="Keep hits whose metadata KEY has VALUE (KEY=VALUE; repeatable)."
    ),
    model: str | None = _MODEL,
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    as_json: bool = _JSON,
) -> None:
    """Search a registered index (--model) or a deployment of one (--url) by meaning.

    Example: `lepton text search "a large dog" --where pos=n --model glosses`.
    """
    filters: dict[str, Any] = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--where takes KEY=VALUE, e.g. --where pos=n (got {item!r})")
        filters.setdefault(key, []).append(value)
    body: dict[str, Any] = {"query": query, "k": k}
    if filters:
        body["filter"] = {key: v[0] if len(v) == 1 else v for key, v in filters.items()}
    answer = ask_deployment("search", body, model, url, token_file, "index")
    if answer is None:
        assert model is not None
        answer = _local("search", body, model)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    table = Table(title=f"nearest to {query!r}", title_justify="left")
    for column in ("#", "id", "score", "text"):
        table.add_column(column, justify="left" if column in ("id", "text") else "right")
    for rank, hit in enumerate(answer["hits"], start=1):
        table.add_row(str(rank), hit["id"], f"{hit['score']:.4f}", hit["text"][:100])
    console.print(table)


def _chat_events(body: dict[str, Any], model: str | None, url: str | None,
                 token_file: Path | None) -> Iterator[dict[str, Any]]:  # fmt: skip
    if (model is None) == (url is None):
        raise ConfigError("name the assistant with exactly one of --model REF or --url URL")
    if model is not None:
        yield from _local("chat", body, model)
        return
    from lepton.cli._serve import _token
    from lepton.serve import Client

    with Client(url or "", token=_token(token_file)) as client:
        yield from client.chat(body)


@text_app.command("ask")
def ask(
    message: str = typer.Argument(..., help="Your question."),
    history: list[str] = typer.Option(
        [],
        "--previous",
        "-p",
        help="An earlier question of the conversation (repeatable, "
        "oldest first): a follow-up is read with its topic.",
    ),
    model: str | None = _MODEL,
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    as_json: bool = _JSON,
) -> None:
    """Ask a registered assistant (--model) or a deployment of one (--url); the answer
    is printed as it streams in.

    Example: `lepton text ask "and how do I delete it?" -p "how do I register a model?"
    --model lepton-faq`.
    """
    body = {"message": message, "history": [{"role": "user", "content": q} for q in history]}
    for event in _chat_events(body, model, url, token_file):
        if as_json:
            print(json.dumps({k: v for k, v in event.items() if v is not None}), flush=True)
        elif event.get("event") == "start":
            how = "matched" if event["known"] else "nearest"
            context = ", read with the previous turn" if event.get("used_context") else ""
            console.print(f"[dim]{how}: {event['question']} ({event['score']:.2f}{context})[/]")
        elif event.get("event") == "delta":
            console.print(event["text"], end="")
        elif event.get("event") == "end":
            console.print()
