"""The Text page: the registered ``lp.text`` versions, a search box over a registered
index, a chat panel with a registered assistant, and a classify box.

Answers come from the very services a deployment of the version runs
(:mod:`lepton.serve._text`: same ranking, same threshold, same conversation state), loaded
in the platform's process and kept for a few versions. The forms are plain ``GET`` forms
(nothing changes on the server); the chat form carries the conversation's earlier
questions in a hidden field, so a follow-up is read with the previous topic as in
``Assistant.ask``. With ``static/lepton.js`` the chat form asks ``GET /text/chat``
instead, which streams the answer as NDJSON events (a deployment's ``/chat`` format), and
the page shows it as it comes; without script the form reloads the page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from lepton import registry
from lepton.errors import LeptonError, RequestError
from lepton.platform._deps import Caller, P
from lepton.platform._http import allow
from lepton.platform._state import Platform
from lepton.platform.jobs._specs import TextJob
from lepton.platform.web._loaded import Loaded, versions_of
from lepton.platform.web._render import (
    FormText,
    form_problems,
    job_form_defaults,
    optional_int,
    redirect,
    render,
    submit_job_form,
)
from lepton.serve._by_model import architecture_name
from lepton.serve._text import (
    AssistantService,
    ChatRequest,
    ChatTurn,
    IndexService,
    PredictRequest,
    SearchRequest,
    TextClassifierService,
)
from lepton.storage import Database

__all__ = ["MAX_TURNS", "router", "text_versions"]

router = APIRouter(include_in_schema=False)
Ref = Annotated[str, Query(max_length=120)]
Words = Annotated[str, Query(max_length=2000)]
MAX_TURNS = 10  # earlier questions the chat form carries
_KINDS = {"text-classifier": "classifier", "text-tfidf": "classifier",
          "text-index": "index", "text-assistant": "assistant"}  # fmt: skip

_indexes: Loaded[IndexService] = Loaded(lambda ref, db: IndexService(ref, database=db))
_assistants: Loaded[AssistantService] = Loaded(lambda ref, db: AssistantService(ref, database=db))
_classifiers: Loaded[TextClassifierService] = Loaded(
    lambda ref, db: TextClassifierService(ref, database=db)
)


def text_versions(database: Database) -> dict[str, list[registry.ModelVersion]]:
    """Every ready text version by kind (``classifier``, ``index``, ``assistant``),
    newest first."""
    found = versions_of(database, _KINDS)
    return {kind: [v for v in found if _KINDS[architecture_name(v.manifest) or ""] == kind]
            for kind in set(_KINDS.values())}  # fmt: skip


def _pick(chosen: str, versions: list[registry.ModelVersion]) -> str:
    refs = [v.ref for v in versions]
    return chosen if chosen in refs else (refs[0] if refs else "")


def _filter(text: str) -> dict[str, Any] | None:
    """``"pos=n, words=dog"`` as ``{"pos": "n", "words": "dog"}`` (``None`` if empty)."""
    pairs = [part.partition("=") for part in text.split(",") if part.strip()]
    bad = [k for k, sep, _ in pairs if not sep or not k.strip()]
    if bad:
        raise ValueError(f"write the filter as key=value, e.g. pos=n (got {text!r})")
    return {k.strip(): v.strip() for k, _, v in pairs} or None


def _defaults() -> dict[str, str]:
    """The job form's first values: the recipe's own defaults (`lepton text train`'s)."""
    return job_form_defaults(
        TextJob, ("task", "dataset", "encoder", "index"), ("limit", "register")
    )


def _choices() -> dict[str, Any]:
    from typing import get_args

    fields = TextJob.model_fields
    return {name: get_args(fields[name].annotation) for name in
            ("task", "dataset", "encoder", "index")}  # fmt: skip


@router.post("/text")
@allow("editor")
def submit_text_job(
    p: P,
    who: Caller,
    request: Request,
    task: FormText = "",
    dataset: FormText = "",
    encoder: FormText = "",
    index: FormText = "",
    limit: FormText = "",
    register_as: FormText = "",
    cpus: FormText = "",
    memory_mb: FormText = "",
) -> Response:
    """Submit a ``text`` job from the form (the same typed spec as the API)."""
    form = {"task": task, "dataset": dataset, "encoder": encoder, "index": index,
            "limit": limit, "register": register_as, "cpus": cpus,
            "memory_mb": memory_mb}  # fmt: skip
    try:
        given = {
            "task": task.strip() or None, "dataset": dataset.strip() or None,
            "encoder": encoder.strip() or None, "index": index.strip() or None,
            "limit": optional_int(limit, "limit"), "register": register_as.strip() or None,
        }  # fmt: skip
        job = submit_job_form(p, who, TextJob, given, cpus=cpus, memory_mb=memory_mb)
    except ValidationError as exc:
        return _page(p, request, form=form, error=form_problems(exc))
    except LeptonError as exc:
        return _page(p, request, form=form, error=exc.message)
    return redirect(f"/jobs/{job.id}")


def _page(p: Platform, request: Request, *, form: dict[str, str], error: str) -> Response:
    return render(
        request, "text.html", section="/text", status=422, versions=text_versions(p.db),
        index="", q="", k=10, where="", hits=None, assistant="", message="", history=[],
        turns=[], classifier="", text="", predictions=None, problems={}, form=form,
        error=error, choices=_choices(),
    )  # fmt: skip


@router.get("/text")
@allow("viewer")
def text_page(
    p: P,
    request: Request,
    index: Ref = "",
    q: Words = "",
    k: Annotated[int, Query(ge=1, le=50)] = 10,
    where: Annotated[str, Query(max_length=200)] = "",
    assistant: Ref = "",
    message: Words = "",
    history: Annotated[list[str], Query(max_length=MAX_TURNS)] = [],  # noqa: B006
    classifier: Ref = "",
    text: Words = "",
) -> Response:
    """Search a registered index, chat with a registered assistant, classify a text."""
    versions = text_versions(p.db)
    index, assistant = _pick(index, versions["index"]), _pick(assistant, versions["assistant"])
    classifier = _pick(classifier, versions["classifier"])
    problems: dict[str, str] = {}
    hits: list[dict[str, Any]] | None = None
    if q.strip() and index:
        try:
            body = SearchRequest(query=q, k=k, filter=_filter(where))
            hits = _indexes(index, p.db).search(body).model_dump()["hits"]
        except ValidationError as exc:
            problems["search"] = form_problems(exc)
        except ValueError as exc:
            problems["search"] = str(exc)
        except LeptonError as exc:
            problems["search"] = exc.message
    turns: list[dict[str, Any]] = []
    asked = [h for h in history if h.strip()][-MAX_TURNS:]
    if message.strip() and assistant:
        try:
            bot = _assistants(assistant, p.db).obj.conversation()
            for question in [*asked, message]:
                answer = bot.ask(question)
                turns.append({"question": question, "answer": answer.text, "known": answer.known,
                              "score": answer.score, "matched": answer.question,
                              "used_context": answer.used_context})  # fmt: skip
            asked = [*asked, message][-MAX_TURNS:]
        except LeptonError as exc:
            problems["chat"] = exc.message
    predictions: list[dict[str, Any]] | None = None
    if text.strip() and classifier:
        try:
            answer_ = _classifiers(classifier, p.db).predict(PredictRequest(text=text))
            predictions = [answer_.predictions[0].model_dump()]
        except LeptonError as exc:
            problems["classify"] = exc.message
    return render(
        request, "text.html", section="/text", versions=versions, index=index, q=q, k=k,
        where=where, hits=hits, assistant=assistant, history=asked,
        message=message if "chat" in problems or not turns else "",
        turns=turns, classifier=classifier, text=text, predictions=predictions,
        problems=problems, status=422 if problems else 200, form=_defaults(), error="",
        choices=_choices(),
    )  # fmt: skip


@router.get("/text/chat")
@allow("viewer")
def text_chat_stream(
    p: P,
    assistant: Ref,
    message: Words,
    history: Annotated[list[str], Query(max_length=MAX_TURNS)] = [],  # noqa: B006
) -> Response:
    """The chat panel's answer as the deployment's ``/chat`` streams it (NDJSON events),
    for ``static/lepton.js``; the form without script reloads ``/text`` instead."""
    turns = [ChatTurn(role="user", content=h) for h in history if h.strip()][-MAX_TURNS:]
    try:
        body = ChatRequest(message=message, history=turns)
    except ValidationError as exc:
        raise RequestError(form_problems(exc)) from None
    service = _assistants(_pick(assistant, text_versions(p.db)["assistant"]) or assistant, p.db)
    lines = (e.model_dump_json(exclude_none=True) + "\n" for e in service.chat(body))
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"cache-control": "no-cache"})  # fmt: skip
