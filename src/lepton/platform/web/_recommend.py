"""The Recommend pages: the registered recommenders with the form that trains one (a
``recommend`` job), and one recommender version's page: pick a user, see their history
(the ratings the model was trained on, with titles and genres) beside their top-k
recommendations, and an item's most similar items.

Answers come from the very :class:`~lepton.serve._recommend.RecommenderService` a
deployment of the version runs (same ranking, same titles, same fallbacks), loaded in the
platform's process: a version can be looked at before (or without) being deployed. A few
are kept loaded (:class:`~lepton.platform.web._loaded.Loaded`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from lepton import registry
from lepton.errors import LeptonError, NotFoundError
from lepton.platform._deps import Caller, P
from lepton.platform._http import RecordId, allow
from lepton.platform._state import Platform
from lepton.platform.jobs._specs import RecommendJob
from lepton.platform.web._loaded import Loaded, versions_of
from lepton.platform.web._render import (
    FormText,
    form_problems,
    job_form_defaults,
    number,
    optional_int,
    redirect,
    render,
    submit_job_form,
)
from lepton.serve._recommend import (
    RECOMMENDER_ARCHITECTURES,
    RecommenderService,
    RecommendFilter,
    RecommendRequest,
    SimilarRequest,
    is_recommender,
)
from lepton.storage import Database

__all__ = ["HISTORY_ROWS", "recommender_versions", "router"]

router = APIRouter(include_in_schema=False)
ModelName = Annotated[str, Path(max_length=100)]
IdText = Annotated[str, Query(max_length=100)]
HISTORY_ROWS = 100  # rated items shown of one user's history
MAX_USERS_IN_SELECT = 5000  # more users than this: a text field instead of a list


def _recommender(ref: str, database: Database) -> RecommenderService:
    return RecommenderService(ref, database=database)


_service: Loaded[RecommenderService] = Loaded(_recommender)  # loaded versions, a few kept


def recommender_versions(database: Database) -> list[registry.ModelVersion]:
    """Every ready recommender version, newest model first, then newest version."""
    return versions_of(database, RECOMMENDER_ARCHITECTURES)


# -- the list and the training form -------------------------------------------------------


def _defaults() -> dict[str, str]:
    """The form's first values: the recipe's own defaults (`lepton recommend train`'s)."""
    return job_form_defaults(
        RecommendJob, ("split", "feedback", "factors", "epochs", "lr", "k"), ("users", "register")
    )


def _list_page(
    p: Platform, request: Request, *, form: dict[str, str] | None = None, error: str = ""
) -> Response:
    return render(
        request, "recommend.html", section="/models", status=422 if error else 200,
        versions=recommender_versions(p.db), form=form or _defaults(), error=error,
        splits=("random", "temporal"), feedbacks=("explicit", "implicit"), version=None,
    )  # fmt: skip


@router.get("/recommend")
@allow("viewer")
def recommenders(p: P, request: Request) -> Response:
    """The registered recommenders, and the form that trains one on MovieLens."""
    return _list_page(p, request)


@router.post("/recommend")
@allow("editor")
def submit_recommend_job(
    p: P,
    who: Caller,
    request: Request,
    split: FormText = "",
    feedback: FormText = "",
    factors: FormText = "",
    epochs: FormText = "",
    lr: FormText = "",
    k: FormText = "",
    users: FormText = "",
    register_as: FormText = "",
    cpus: FormText = "",
    memory_mb: FormText = "",
) -> Response:
    """Submit a ``recommend`` job from the form (the same typed spec as the API)."""
    form = {"split": split, "feedback": feedback, "factors": factors, "epochs": epochs,
            "lr": lr, "k": k, "users": users, "register": register_as, "cpus": cpus,
            "memory_mb": memory_mb}  # fmt: skip
    try:
        given = {
            "split": split.strip() or None, "feedback": feedback.strip() or None,
            "factors": optional_int(factors, "factors"), "epochs": optional_int(epochs, "epochs"),
            "lr": number(lr, "learning rate") if lr.strip() else None,
            "k": optional_int(k, "k"), "users": optional_int(users, "users"),
            "register": register_as.strip() or None,
        }  # fmt: skip
        job = submit_job_form(p, who, RecommendJob, given, cpus=cpus, memory_mb=memory_mb)
    except ValidationError as exc:
        return _list_page(p, request, form=form, error=form_problems(exc))
    except LeptonError as exc:
        return _list_page(p, request, form=form, error=exc.message)
    return redirect(f"/jobs/{job.id}")


# -- one version ---------------------------------------------------------------------------


def _history(service: RecommenderService, user: Any) -> tuple[list[dict[str, Any]], int]:
    """The user's training ratings, best first (at most :data:`HISTORY_ROWS`), and how
    many there are in all."""
    model = service.model
    index = {u: i for i, u in enumerate(model.user_ids)}.get(user)
    if index is None:
        return [], 0
    mask = model.seen_users == index
    items = [model.item_ids[int(j)] for j in model.seen_items[mask].tolist()]
    ratings = model.seen_ratings[mask].tolist()
    rows = sorted(zip(items, ratings, strict=True), key=lambda ir: (-ir[1], str(ir[0])))
    shown = []
    for item, rating in rows[:HISTORY_ROWS]:
        described = service.describe(item, float(rating)).model_dump()
        described["rating"] = described.pop("score")
        shown.append(described)
    return shown, len(rows)


def _as_id(text: str, example: Any) -> Any:
    text = text.strip()
    if isinstance(example, int) and text.lstrip("-").isdigit():
        return int(text)
    return text


@router.get("/models/{name}/{version}/recommend")
@allow("viewer")
def version_recommend(
    p: P,
    request: Request,
    name: ModelName,
    version: RecordId,
    user: IdText = "",
    item: IdText = "",
    genre: Annotated[str, Query(max_length=100)] = "",
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Response:
    """A user's history beside their top ``k``, and an item's similar items."""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    if not is_recommender(found.manifest):
        raise NotFoundError(
            f"{found.ref} is not a recommender (its architecture is "
            f"{(found.manifest.get('architecture') or {}).get('name', '?')}); see "
            f"/models/{name}/{version}, or /recommend for the recommenders"
        )
    service = _service(found.ref, p.db)
    model = service.model
    first_user = model.user_ids[0] if model.user_ids else 0
    chosen = _as_id(user, first_user) if user.strip() else first_user
    problems: list[str] = []
    history, rated = _history(service, chosen)
    top: dict[str, Any] | None = None
    try:
        wanted = RecommendFilter(genres=[genre]) if genre else None
        answer = service.recommend(RecommendRequest(user=chosen, k=k, filter=wanted))
        top = answer.model_dump()
    except (LeptonError, ValidationError) as exc:
        problems.append(exc.message if isinstance(exc, LeptonError) else str(exc))
    anchor: Any = None
    if item.strip():
        anchor = _as_id(item, model.item_ids[0] if model.item_ids else 0)
    elif history:
        anchor = history[0]["item"]
    elif top and top["items"]:
        anchor = top["items"][0]["item"]
    similar: dict[str, Any] | None = None
    if anchor is not None:
        try:
            similar = service.similar(SimilarRequest(item=anchor, k=k)).model_dump()
        except LeptonError as exc:
            problems.append(exc.message)
    users = list(model.user_ids) if len(model.user_ids) <= MAX_USERS_IN_SELECT else None
    return render(
        request, "recommend.html", section="/models", version=found, info=service.info(),
        users=users, user=chosen, history=history, rated=rated, top=top, similar=similar,
        anchor=anchor, genre=genre, genres=list(model.genres), k=k, problems=problems,
        history_rows=HISTORY_ROWS,
    )  # fmt: skip
