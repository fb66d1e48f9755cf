"""A registered recommender behind ``/recommend``, ``/similar``, ``/predict`` and ``/info``.

``lepton deploy movies@production`` (and a platform deployment of that version) serves a
:class:`RecommenderService` instead of :class:`~lepton.serve.ModelService` when the
version's architecture is a recommender (the table in :mod:`lepton.serve._by_model` decides):

* ``POST /recommend`` ``{"user": 1, "k": 10, "exclude_seen": true,
  "filter": {"genres": ["Comedy"], "items": [...]}}``: the user's top ``k`` items with
  scores. A user the model has never seen gets the most rated items (the SDK's
  popularity fallback), marked ``"fallback": "popularity"``.
* ``POST /similar`` ``{"item": 1, "k": 10}``: the items closest in factor space; an item
  the model has never seen is a 404 ``unknown_id``.
* ``POST /predict`` ``{"pairs": [[user, item], ...]}``: predicted ratings (scores for an
  implicit model).

Items carry their title, year and genres when the version was trained on a catalog
dataset that has them (MovieLens): the item table is read once, at setup.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from lepton.errors import LeptonError, RequestError, ServingError, UnknownIdError
from lepton.serve._by_model import architecture_name
from lepton.serve._handler import handler
from lepton.serve._service import Service

if TYPE_CHECKING:
    from lepton.recommend import Recommender
    from lepton.storage import Database

__all__ = [
    "RECOMMENDER_ARCHITECTURES",
    "PairsRequest",
    "PredictAnswer",
    "RecommendAnswer",
    "RecommendFilter",
    "RecommendRequest",
    "RecommenderService",
    "ScoredItem",
    "SimilarAnswer",
    "SimilarRequest",
    "is_recommender",
]

log = logging.getLogger("lepton.serve")

#: Architectures served by :class:`RecommenderService` (``lp.recommend.FactorModel``).
RECOMMENDER_ARCHITECTURES = frozenset({"recommender-mf"})
#: Datasets whose item table gives titles, years and genres, by the manifest's name.
_ITEM_TABLES = frozenset({"movielens"})
MAX_K = 1000
MAX_PAIRS = 10_000

Id = int | str


class RecommendFilter(BaseModel):
    """Which items may be recommended: any of these genres, and/or only these ids."""

    model_config = ConfigDict(extra="forbid")

    genres: list[str] | None = Field(
        default=None, max_length=64, description="Keep items with at least one of these genres."
    )
    items: list[Id] | None = Field(
        default=None, max_length=100_000, description="Keep only these item ids."
    )


class RecommendRequest(BaseModel):
    """A user's top-``k`` items."""

    model_config = ConfigDict(extra="forbid")

    user: Id = Field(description="The user id, as in the training ratings.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items.")
    exclude_seen: bool = Field(default=True, description="Leave out items the user already rated.")
    filter: RecommendFilter | None = None


class SimilarRequest(BaseModel):
    """The items closest to one item."""

    model_config = ConfigDict(extra="forbid")

    item: Id = Field(description="The item id, as in the training ratings.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items.")


class PairsRequest(BaseModel):
    """``(user, item)`` pairs to score."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[tuple[Id, Id]] = Field(
        min_length=1, max_length=MAX_PAIRS, description="[[user, item], ...]"
    )


class ScoredItem(BaseModel):
    """One item of an answer, with what the catalog knows of it."""

    item: Id
    score: float
    title: str | None = None
    year: int | None = None
    genres: list[str] | None = None


class RecommendAnswer(BaseModel):
    """A user's top items; ``fallback`` says how an unknown user was answered."""

    user: Id
    known_user: bool
    fallback: str | None = None
    items: list[ScoredItem]


class SimilarAnswer(BaseModel):
    """The items closest to ``item`` (cosine of the item factors)."""

    item: Id
    title: str | None = None
    items: list[ScoredItem]


class PredictAnswer(BaseModel):
    """One predicted rating (or implicit score) per pair, in order."""

    predictions: list[float]


def _same_type(value: Id, example: Any) -> Id:
    """``value`` as the model's id type: ``"7"`` for a model of int ids is ``7``."""
    if isinstance(example, int) and isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    if isinstance(example, str) and isinstance(value, int):
        return str(value)
    return value


class RecommenderService(Service):
    """A registered recommender version (``lp.recommend.FactorModel``) as a service."""

    def __init__(self, ref: str, *, database: Database | None = None) -> None:
        self.ref = ref
        self.database = database

    def setup(self) -> None:
        from lepton.recommend import Recommender
        from lepton.registry import load_model, resolve

        version = resolve(self.ref, database=self.database)
        self.version = version
        model: Any = load_model(version.ref, database=self.database)  # a FactorModel
        self.recommender: Recommender = Recommender.from_model(model)
        self.model = model
        self._user_example = model.user_ids[0] if model.user_ids else 0
        self._item_example = model.item_ids[0] if model.item_ids else 0
        self._users = set(model.user_ids)
        self._items = set(model.item_ids)
        # genres from the model itself (its cold-start features), so filters work without
        # a catalog; a catalog's item table adds titles and years
        self.genres: dict[Any, list[str]] = {}
        for row, item in zip(model.item_genres.tolist(), model.item_ids, strict=True):
            self.genres[item] = [g for g, w in zip(model.genres, row, strict=True) if w > 0]
        self.catalog: dict[Any, tuple[str, int, str]] = self._catalog()

    def _catalog(self) -> dict[Any, tuple[str, int, str]]:
        dataset = self.version.manifest.get("dataset") or {}
        name = dataset.get("name") if isinstance(dataset, dict) else None
        if name not in _ITEM_TABLES:
            return {}
        from lepton.data import load

        try:
            table: dict[Any, tuple[str, int, str]] = load(name, split="all").item_table()
        except LeptonError as exc:  # the data is not on this machine: serve ids only
            log.warning("%s: no item titles (%s)", self.version.ref, exc)
            return {}
        return table

    def describe(self, item: Any, score: float) -> ScoredItem:
        """``item`` with its score and what the catalog (or the model) knows of it."""
        known = self.catalog.get(item)
        if known is None:
            return ScoredItem(item=item, score=score, genres=self.genres.get(item) or None)
        title, year, genres = known
        names = [g for g in genres.split("|") if g and g != "(no genres listed)"]
        return ScoredItem(
            item=item, score=score, title=title, year=year if year >= 0 else None, genres=names
        )

    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The served version: name, number, kind, sizes, genres and metrics."""
        m = self.model
        manifest = self.version.manifest
        return {
            "model": self.version.name,
            "version": self.version.version,
            "ref": self.version.ref,
            "kind": "recommender",
            "feedback": m.kind,
            "users": len(m.user_ids),
            "items": len(m.item_ids),
            "factors": m.factors,
            "genres": list(m.genres),
            "titles": bool(self.catalog),
            "dataset": manifest.get("dataset"),
            "metrics": manifest.get("metrics"),
            "routes": ["/recommend", "/similar", "/predict"],
        }

    def _filter(self, spec: RecommendFilter | None) -> Any:
        if spec is None or (spec.genres is None and spec.items is None):
            return None
        allowed: set[Any] | None = None
        if spec.items is not None:
            allowed = {_same_type(i, self._item_example) for i in spec.items}
        wanted: set[str] | None = None
        if spec.genres is not None:
            known = set(self.model.genres)
            unknown = sorted(set(spec.genres) - known)
            if unknown:
                raise RequestError(
                    f"unknown genre(s) {', '.join(map(repr, unknown))}; this model knows: "
                    f"{', '.join(sorted(known)) or 'no genres'}",
                    code="unknown_genre",
                )
            wanted = set(spec.genres)

        def ok(item: Any) -> bool:
            if allowed is not None and item not in allowed:
                return False
            return wanted is None or not wanted.isdisjoint(self.genres.get(item, ()))

        return ok

    @handler(workers=2)
    def recommend(self, request: RecommendRequest) -> RecommendAnswer:
        """A user's top ``k`` items; an unknown user gets the most rated ones."""
        user = _same_type(request.user, self._user_example)
        known = user in self._users
        found = self.recommender.recommend(
            user, request.k, exclude_seen=request.exclude_seen, filter=self._filter(request.filter)
        )
        return RecommendAnswer(
            user=user,
            known_user=known,
            fallback=None if known else "popularity",
            items=[self.describe(item, score) for item, score in found],
        )

    @handler(workers=2)
    def similar(self, request: SimilarRequest) -> SimilarAnswer:
        """The ``k`` items closest to ``item`` (cosine of their factors)."""
        item = _same_type(request.item, self._item_example)
        try:
            found = self.recommender.similar_items(item, request.k)
        except UnknownIdError as exc:
            raise ServingError(
                f"item {request.item!r} is not known to {self.version.ref}; ask for one of its "
                f"{len(self._items):,} items (e.g. {self._item_example!r})",
                status=404, code=exc.code,
            ) from None  # fmt: skip
        own = self.catalog.get(item)
        return SimilarAnswer(
            item=item,
            title=own[0] if own else None,
            items=[self.describe(i, score) for i, score in found],
        )

    @handler(workers=2)
    def predict(self, request: PairsRequest) -> PredictAnswer:
        """Predicted ratings (scores, for an implicit model) of ``(user, item)`` pairs;
        an unknown user gets the item's baseline, an unknown item the user's."""
        pairs = [
            (_same_type(u, self._user_example), _same_type(i, self._item_example))
            for u, i in request.pairs
        ]
        values = self.recommender.predict(pairs).tolist()
        return PredictAnswer(predictions=[v if math.isfinite(v) else 0.0 for v in values])


def is_recommender(manifest: dict[str, Any]) -> bool:
    """Whether a version's manifest names a recommender architecture."""
    return architecture_name(manifest) in RECOMMENDER_ARCHITECTURES
