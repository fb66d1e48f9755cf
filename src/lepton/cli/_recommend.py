"""``lepton recommend``: train a recommender on MovieLens (here, or as a platform job), and
ask a registered one (or a deployment of it) for a user's top items or an item's
neighbours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.cli._serve import JSON_OPTION, TOKEN_FILE_OPTION, URL_OPTION, ask_deployment
from lepton.recommend.recipe import RecommendConfig

__all__ = ["recommend_app"]

console = Console(highlight=False, soft_wrap=True)
DEFAULTS = RecommendConfig.model_construct()  # the recipe's defaults, defined once
recommend_app = typer.Typer(
    help="Recommenders (lp.recommend) on MovieLens-small: train one (locally or as a "
    "platform job), then ask a registered version, or a deployment of it, for a user's "
    "recommendations or an item's similar items.",
    no_args_is_help=True,
)

_MODEL = typer.Option(
    None, "--model", "-m",
    help="A registered recommender: name, name:VERSION or name@STAGE (answered here).",
)  # fmt: skip
_URL, _TOKEN_FILE, _JSON = URL_OPTION, TOKEN_FILE_OPTION, JSON_OPTION
_K = typer.Option(10, "-k", "--top", help="How many items.")


@recommend_app.command("train")
def train(
    users: int | None = typer.Option(None, help="Use only the ratings of the first N users."),
    split: str = typer.Option(
        DEFAULTS.split, help="random (rows) or temporal (each user's latest ratings) to test."
    ),
    test_size: float = typer.Option(DEFAULTS.test_size, help="Share of ratings held out."),
    feedback: str = typer.Option(
        DEFAULTS.feedback, help="explicit (ratings, matrix factorization) or implicit (BPR)."
    ),
    factors: int = typer.Option(DEFAULTS.factors, help="Latent dimension."),
    epochs: int = typer.Option(DEFAULTS.epochs, help="Passes over the training ratings."),
    lr: float = typer.Option(DEFAULTS.lr, help="Adam learning rate."),
    reg: float = typer.Option(DEFAULTS.reg, help="L2 weight per rating."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help="Ratings per optimizer step."),
    k: int = typer.Option(DEFAULTS.k, "-k", help="Cut-off of precision/recall/NDCG/MAP@k."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seeds the split, the weights and the order."),
    register: str | None = typer.Option(None, help="Register the model under this name."),
    submit: bool = typer.Option(
        False, "--submit", help="Run it as a `recommend` job on the platform server instead."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="With --submit: stream the job's log until it ends."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
) -> None:
    """Train a recommender on MovieLens-small, test it and (with --register) register it.

    The ratings (optionally only the first --users users) are split into train and test
    (--split random, or temporal: each user's latest ratings are held out), a biased
    matrix factorization (--feedback explicit) or BPR model (implicit) is trained, and the
    held-out ratings give RMSE, MAE and precision/recall/NDCG/MAP at -k and catalog
    coverage. Everything is logged to a tracking run (`lepton runs show ID`).

    With --submit the same spec runs as a platform job (LEPTON_SERVER_URL; `lepton jobs
    show ID`), and the server's worker registers the model.

    Example: `lepton recommend train --factors 64 --epochs 15 --register movies`, then
    `lepton recommend for 1 --model movies`.
    """
    values: dict[str, Any] = {
        "users": users, "split": split, "test_size": test_size, "feedback": feedback,
        "factors": factors, "epochs": epochs, "lr": lr, "reg": reg, "batch_size": batch_size,
        "k": k, "seed": seed, "register": register,
    }  # fmt: skip
    config = RecommendConfig.checked(**values)
    if submit:
        from lepton.cli._jobs import _submit

        spec = {"kind": "recommend", **config.model_dump(mode="json", by_alias=True)}
        _submit(spec, follow)
        return
    from lepton.recommend.recipe import run
    from lepton.registry import register as registrar

    if as_json:
        result = run(config, registrar=registrar)
        print(json.dumps(result.to_json(), indent=2))
        return
    with console.status("loading MovieLens") as status:

        def say(line: str) -> None:
            console.print(line)
            status.update(line if not line.startswith("epoch") else "training")

        result = run(config, registrar=registrar, say=say)
    table = Table(title=f"test ({config.split} split, {result.test_ratings:,} ratings)",
                  title_justify="left")  # fmt: skip
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)
    console.print(f"{result.seconds:.1f} s in all; run: `lepton runs show {result.run_id}`")
    if result.registered:
        console.print(f"registered as {result.registered}: `lepton recommend for USER "
                      f"--model {result.registered}`")  # fmt: skip


def _ask(route: str, body: dict[str, Any], model: str | None, url: str | None,
         token_file: Path | None) -> dict[str, Any]:  # fmt: skip
    """The answer of ``route`` from a deployment (``url``) or a registered version here."""
    answer = ask_deployment(route, body, model, url, token_file, "recommender")
    if answer is not None:
        return answer
    from lepton.serve._recommend import RecommenderService, RecommendRequest, SimilarRequest

    assert model is not None
    service = RecommenderService(model)
    service.setup()
    if route == "recommend":
        return service.recommend(RecommendRequest.model_validate(body)).model_dump()
    return service.similar(SimilarRequest.model_validate(body)).model_dump()


def _table(title: str, items: list[dict[str, Any]], score: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "item", "title", "year", "genres", score):
        table.add_column(column, justify="right" if column in ("#", "item", score) else "left")
    for rank, item in enumerate(items, start=1):
        table.add_row(
            str(rank), str(item["item"]), item.get("title") or "-",
            str(item["year"]) if item.get("year") is not None else "-",
            ", ".join(item.get("genres") or []) or "-", f"{item['score']:.4f}",
        )  # fmt: skip
    return table


@recommend_app.command("for")
def recommend_for(
    user: str = typer.Argument(..., help="The user id (as in the training ratings)."),
    model: str | None = _MODEL,
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    k: int = _K,
    include_seen: bool = typer.Option(False, help="Keep items the user already rated."),
    genre: list[str] | None = typer.Option(
        None, "--genre", "-g", help="Only items of this genre (repeatable: any of them)."
    ),
    as_json: bool = _JSON,
) -> None:
    """A user's top -k items, with titles where the catalog has them.

    A user the model has never seen gets the most rated items (popularity fallback), said
    so. Answered by the registered version (--model, loaded here) or by a running
    deployment of it (--url), which answer the same.

    Example: `lepton recommend for 15 --model movies@production -k 10 --genre Comedy`.
    """
    ident: int | str = int(user) if user.lstrip("-").isdigit() else user
    body: dict[str, Any] = {"user": ident, "k": k, "exclude_seen": not include_seen}
    if genre:
        body["filter"] = {"genres": genre}
    answer = _ask("recommend", body, model, url, token_file)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    note = "" if answer["known_user"] else " (unknown user: the most rated items)"
    console.print(_table(f"top {k} for user {answer['user']}{note}", answer["items"], "score"))


@recommend_app.command("similar")
def similar(
    item: str = typer.Argument(..., help="The item id (a MovieLens movieId)."),
    model: str | None = _MODEL,
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    k: int = _K,
    as_json: bool = _JSON,
) -> None:
    """The -k items closest to ITEM in the model's factor space (cosine similarity).

    Example: `lepton recommend similar 1 --model movies -k 5` (Toy Story's neighbours).
    """
    ident: int | str = int(item) if item.lstrip("-").isdigit() else item
    answer = _ask("similar", {"item": ident, "k": k}, model, url, token_file)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    name = f"{answer['item']} ({answer['title']})" if answer.get("title") else str(answer["item"])
    console.print(_table(f"{k} items like {name}", answer["items"], "cosine"))
