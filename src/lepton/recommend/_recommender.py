"""``Recommender``: fit, predict, recommend, similar items, and incremental fold-in.

All state lives in one :class:`FactorModel` (``.model``), so ``lp.register(rec.model,
name)`` stores a recommender and :func:`load` (or ``lp.load_model``) brings it back.

Algorithms (``algorithm=``; ``None`` picks the first of each kind):

* explicit ratings: ``"bayes"``, Bayesian matrix factorization by Gibbs sampling (the
  average of the samples' predictions, :mod:`lepton.recommend._bayes`), or ``"sgd"``,
  biased matrix factorization by mini-batch Adam (a point estimate; faster, less
  accurate on small data);
* implicit feedback: ``"als"``, implicit ALS with confidence weighting on torch (ours),
  ``"bpr"`` (pairwise ranking loss, Adam), or ``"implicit-als"``, the ALS of PyPI
  ``implicit`` (an optional dependency).

Drift bound of ``partial_fit``: rows it does not touch stay exactly as they were; each
touched user (then item) takes one closed-form step over the new ratings, anchored to
its current value with a weight standing for its old ratings (exact for new rows). How
far that is from a full refit grows with the share of ratings added since the last full
fit, :attr:`Recommender.drift`. Measured on MovieLens-small (``benchmarks/recommend.py``),
1,000 new ratings (1.25%) land within 0.001 test RMSE of a refit for ``"bayes"``
(+0.0008, in 0.5% of the refit's time) and 0.002 for ``"sgd"``; past
``refit_threshold`` (default 10%) :attr:`needs_refit` turns true: call :meth:`refit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from lepton.errors import NotFittedError, RecommendError, UnknownIdError
from lepton.recommend._bayes import fit_bayes, fold_in_bayes, n_kept
from lepton.recommend._implicit import fit_ials, fit_implicit_library
from lepton.recommend._metrics import coverage, mae, ranking_metrics, rmse
from lepton.recommend._model import FactorModel
from lepton.recommend._table import Columns, Triples, as_triples
from lepton.recommend._train import fit_bpr, fit_explicit, fit_genres, fold_in

__all__ = ["ALGORITHMS", "Recommender"]

#: The algorithms of each kind, the default first.
ALGORITHMS: dict[str, tuple[str, ...]] = {
    "explicit": ("bayes", "sgd"),
    "implicit": ("als", "bpr", "implicit-als"),
}

#: Each algorithm's defaults for the settings left as ``None`` (tuned on a validation
#: split carved from the training part of MovieLens-small; see benchmarks/README.md).
DEFAULTS: dict[str, dict[str, float]] = {
    "bayes": {"factors": 16, "epochs": 300, "lr": 0.01, "reg": 0.0, "samples": 64},
    "sgd": {"factors": 64, "epochs": 15, "lr": 0.01, "reg": 0.1},
    "bpr": {"factors": 64, "epochs": 30, "lr": 0.01, "reg": 0.0005},
    "als": {"factors": 32, "epochs": 15, "reg": 5.0, "confidence": 1.0},
    "implicit-als": {"factors": 64, "epochs": 15, "reg": 0.05, "confidence": 1.0},
}

Items = Mapping[Any, str | Collection[str]]


def _genre_map(source: Any) -> dict[Any, list[str]]:
    """``{item_id: [genre, ...]}`` from a ``Ratings`` item table or a mapping."""
    if source is None:
        return {}
    pairs: Iterable[tuple[Any, Any]]
    if hasattr(source, "item_ids") and hasattr(source, "genres"):
        pairs = zip(source.item_ids.tolist(), source.genres, strict=True)
    elif isinstance(source, Mapping):
        pairs = source.items()
    else:
        raise RecommendError("items= must map item id -> genres ('A|B' or a list of names)")
    out = {}
    for item, genres in pairs:
        names = genres.split("|") if isinstance(genres, str) else list(genres)
        out[item] = [g for g in names if g and g != "(no genres listed)"]
    return out


class Recommender:
    """A recommender on biased matrix factorization, trained with torch.

    Args:
        kind: ``"explicit"`` (ratings) or ``"implicit"`` (interactions).
        algorithm: See the module docs; ``None``: ``"bayes"`` for explicit ratings,
            ``"als"`` for implicit feedback.
        factors: Latent dimension (for ``"bayes"``, of each kept sample).
        epochs: Passes (SGD/BPR epochs, ALS sweeps, Gibbs sweeps of which the first
            quarter is burn-in).
        lr, batch_size: Mini-batch Adam settings (``"sgd"``, ``"bpr"``).
        reg: L2 weight: per rating for ``"sgd"``/``"bpr"`` (also used by their fold-in),
            per row for the ALS kinds; ``"bayes"`` learns its own.
        samples: Gibbs samples kept (``"bayes"``); the stored width is ``factors *
            samples``.
        confidence: ALS confidence of an interaction over a non-interaction, minus 1.
        Settings left as ``None`` take the algorithm's default (``DEFAULTS``).
        seed: Seeds initialisation and batch order: same data, same seed, same model.
        user_col, item_col, rating_col: Column names when the table's are not the usual
            ones (``user``/``userId``, ``item``/``movieId``, ``rating``).
        relevant_from: In ``score``, an explicit test rating counts as relevant from
            this value up.
        refit_threshold: ``needs_refit`` once ratings added by ``partial_fit`` exceed
            this share of those of the last full fit.

    Example:
        >>> ratings = lp.data.load("movielens", split="all")  # doctest: +SKIP
        >>> train, test = ratings.split(0.2, seed=0)  # doctest: +SKIP
        >>> rec = lp.recommend.Recommender(factors=64).fit(train)  # doctest: +SKIP
        >>> rec.score(test)["rmse"]  # doctest: +SKIP
    """

    def __init__(
        self,
        kind: str = "explicit",
        *,
        algorithm: str | None = None,
        factors: int | None = None,
        epochs: int | None = None,
        lr: float | None = None,
        reg: float | None = None,
        batch_size: int = 4096,
        samples: int | None = None,
        confidence: float | None = None,
        seed: int = 0,
        user_col: str | None = None,
        item_col: str | None = None,
        rating_col: str | None = None,
        relevant_from: float = 4.0,
        refit_threshold: float = 0.1,
    ) -> None:
        if kind not in ("explicit", "implicit"):
            raise RecommendError(f"kind must be 'explicit' or 'implicit', got {kind!r}")
        algorithm = algorithm or ALGORITHMS[kind][0]
        if algorithm not in ALGORITHMS[kind]:
            raise RecommendError(
                f"algorithm {algorithm!r} does not fit kind={kind!r}; choose one of "
                f"{list(ALGORITHMS[kind])}"
            )
        d = DEFAULTS[algorithm]
        factors = int(d["factors"]) if factors is None else factors
        epochs = int(d["epochs"]) if epochs is None else epochs
        lr = d.get("lr", 0.01) if lr is None else lr
        reg = d["reg"] if reg is None else reg
        samples = int(d.get("samples", 16)) if samples is None else samples
        confidence = d.get("confidence", 1.0) if confidence is None else confidence
        if factors < 1 or epochs < 0 or lr <= 0 or reg < 0 or batch_size < 1 or samples < 1:
            raise RecommendError(
                "factors, samples and batch_size must be >= 1, epochs >= 0, lr > 0 and reg >= 0"
            )
        if confidence < 0:
            raise RecommendError(f"confidence must be >= 0, got {confidence}")
        if algorithm == "bayes" and epochs < 1:
            raise RecommendError("algorithm='bayes' needs epochs >= 1 (Gibbs sweeps)")
        self.kind, self.algorithm, self.factors, self.seed = kind, algorithm, factors, seed
        self.epochs, self.lr, self.reg, self.batch_size = epochs, lr, reg, batch_size
        self.samples, self.confidence = samples, confidence
        self.columns = Columns(user_col, item_col, rating_col)
        self.relevant_from, self.refit_threshold = relevant_from, refit_threshold
        self.model: FactorModel | None = None
        self.losses: list[float] = []

    # -- state -------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: FactorModel) -> Recommender:
        """Wrap a :class:`FactorModel` (e.g. from ``lp.load_model``)."""
        if not isinstance(model, FactorModel):
            raise RecommendError(f"expected a recommender-mf model, got {type(model).__name__}")
        h = model.hyper
        algorithm = model.algorithm or ("sgd" if model.kind == "explicit" else "bpr")
        rec = cls(
            model.kind, algorithm=algorithm, factors=int(h.get("factors", model.factors)),
            epochs=int(h.get("epochs", 15)), lr=float(h.get("lr", 0.01)),
            reg=float(h.get("reg", 0.1)), batch_size=int(h.get("batch_size", 4096)),
            seed=int(h.get("seed", 0)), samples=int(h.get("samples", 16)),
            confidence=float(h.get("confidence", 1.0)),
        )  # fmt: skip
        rec.model = model.eval()
        return rec

    def _fitted(self) -> FactorModel:
        if self.model is None:
            raise NotFittedError("this Recommender is not fitted yet; call fit(ratings) first")
        return self.model

    def _index(self, ids: list[Any]) -> dict[Any, int]:
        return {v: i for i, v in enumerate(ids)}

    @property
    def drift(self) -> float:
        """Ratings added by ``partial_fit`` since the last full fit, as a share of it."""
        m = self._fitted()
        base = max(int(m.fitted_on), 1)
        return (len(m.seen_ratings) - base) / base

    @property
    def needs_refit(self) -> bool:
        """Whether :attr:`drift` passed ``refit_threshold``."""
        return self.drift > self.refit_threshold

    def _triples(self, data: Any) -> Triples:
        return as_triples(data, self.columns, need_rating=self.kind == "explicit")

    # -- fitting -------------------------------------------------------------------
    def _build(
        self, users: list[Any], items: list[Any], genres: list[str], n_seen: int, rng: Any
    ) -> FactorModel:
        hyper = {"epochs": self.epochs, "lr": self.lr, "reg": self.reg,
                 "batch_size": self.batch_size, "seed": self.seed, "factors": self.factors,
                 "samples": self.samples, "confidence": self.confidence}  # fmt: skip
        width = self.factors
        if self.algorithm == "bayes":
            width *= n_kept(self.epochs, self.epochs // 4, self.samples)
        return FactorModel(
            users, items, width, self.kind, genres, n_seen, rng, hyper, self.algorithm
        )

    def fit(self, ratings: Any, items: Any = None) -> Recommender:
        """Train on ``ratings`` (see the module docs for accepted tables); ``items`` maps
        item ids to genres for cold start (a ``lepton.data.Ratings`` brings its own)."""
        t = self._triples(ratings)
        genre_map = _genre_map(
            items if items is not None else ratings if hasattr(ratings, "genres") else None
        )
        users, u_idx = np.unique(t.users, return_inverse=True)
        rated = set(t.items.tolist())
        extra = np.asarray([i for i in genre_map if i not in rated])
        item_ids = np.unique(np.concatenate([t.items, extra]) if len(extra) else t.items)
        i_idx = np.searchsorted(item_ids, t.items)
        rng = [float(t.ratings.min()), float(t.ratings.max())] if self.kind == "explicit" else None
        genres = sorted({g for gs in genre_map.values() for g in gs})
        model = self._build(users.tolist(), item_ids.tolist(), genres, len(t), rng)
        self._train(model, torch.from_numpy(u_idx), torch.from_numpy(i_idx), t, genre_map)
        self.model = model.eval()
        return self

    def _train(
        self,
        model: FactorModel,
        u: torch.Tensor,
        i: torch.Tensor,
        t: Triples,
        genre_map: Mapping[Any, list[str]],
    ) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        r = torch.from_numpy(t.ratings)
        with torch.no_grad():
            model.user_factors.normal_(0, 0.05, generator=gen)
            model.item_factors.normal_(0, 0.05, generator=gen)
            model.user_bias.zero_()
            model.item_bias.zero_()
            model.mean.fill_(float(r.mean()) if self.kind == "explicit" else 0.0)
            model.seen_users.copy_(u)
            model.seen_items.copy_(i)
            model.seen_ratings.copy_(r)
            model.fitted_on.fill_(len(r))
            col = {g: c for c, g in enumerate(model.genres)}
            for item, idx in self._index(model.item_ids).items():
                for g in genre_map.get(item, []):
                    model.item_genres[idx, col[g]] = 1.0 / len(genre_map[item])
        kw = {"epochs": self.epochs, "lr": self.lr, "reg": self.reg,
              "batch_size": self.batch_size, "generator": gen}  # fmt: skip
        model.train()
        if self.algorithm == "bayes":
            self.losses = fit_bayes(
                model, u, i, r, rank=self.factors, sweeps=self.epochs,
                burn_in=self.epochs // 4, generator=gen,
            )  # fmt: skip
        elif self.algorithm == "sgd":
            self.losses = fit_explicit(model, u, i, r, **kw)  # type: ignore[arg-type]
        elif self.algorithm == "bpr":
            self.losses = fit_bpr(model, u, i, **kw)  # type: ignore[arg-type]
        elif self.algorithm == "als":
            self.losses = fit_ials(
                model, u, i, epochs=self.epochs, reg=self.reg, alpha=self.confidence,
                generator=gen,
            )  # fmt: skip
        else:
            self.losses = fit_implicit_library(
                model, u, i, epochs=self.epochs, reg=self.reg, alpha=self.confidence,
                seed=self.seed,
            )  # fmt: skip
        if self.losses and not math.isfinite(self.losses[-1]):
            raise RecommendError(f"training diverged (loss {self.losses[-1]}); lower lr")
        fit_genres(model)
        with torch.no_grad():  # never-rated items start from their genres' average
            unrated = torch.ones(len(model.item_ids), dtype=torch.bool)
            unrated[i] = False
            model.item_factors[unrated] = model.item_genres[unrated] @ model.genre_factors
            model.item_bias[unrated, 0] = model.item_genres[unrated] @ model.genre_bias

    def refit(self) -> Recommender:
        """Train from scratch on every stored rating (the fit plus all folded-in ones)."""
        m = self._fitted()
        users = np.asarray(m.user_ids)[m.seen_users.numpy()]
        items = np.asarray(m.item_ids)[m.seen_items.numpy()]
        genre_map = {
            item: [m.genres[c] for c in torch.nonzero(m.item_genres[idx]).flatten().tolist()]
            for idx, item in enumerate(m.item_ids)
        }
        table = {"user": users, "item": items, "rating": m.seen_ratings.numpy()}
        saved, self.columns = self.columns, Columns()
        try:
            return self.fit(table, items=genre_map)
        finally:
            self.columns = saved

    def partial_fit(self, new_ratings: Any, items: Any = None) -> Recommender:
        """Fold in new ratings, users and items without retraining (module docs)."""
        m = self._fitted()
        t = self._triples(new_ratings)
        if self.kind == "implicit":
            raise RecommendError(
                "partial_fit folds in explicit ratings; for implicit feedback call refit() "
                "after adding interactions with fit(old + new)"
            )
        u_map, i_map = self._index(m.user_ids), self._index(m.item_ids)
        genre_map = _genre_map(items)
        new_u = list(dict.fromkeys(u for u in t.users.tolist() if u not in u_map))
        new_i = list(dict.fromkeys(i for i in [*t.items.tolist(), *genre_map] if i not in i_map))
        model = self._grow(m, new_u, new_i, t, genre_map)
        u_map, i_map = self._index(model.user_ids), self._index(model.item_ids)
        u = torch.tensor([u_map[x] for x in t.users.tolist()], dtype=torch.int64)
        i = torch.tensor([i_map[x] for x in t.items.tolist()], dtype=torch.int64)
        with torch.no_grad():
            model.seen_users[-len(t) :] = u
            model.seen_items[-len(t) :] = i
            model.seen_ratings[-len(t) :] = torch.from_numpy(t.ratings)
        # new items without ratings keep their genre prior
        if self.algorithm == "bayes":
            fold_in_bayes(model, len(t), self.factors)
        else:
            fold_in(model, len(t), self.reg)
        self.model = model.eval()
        return self

    def _grow(
        self,
        m: FactorModel,
        new_u: list[Any],
        new_i: list[Any],
        t: Triples,
        genre_map: Mapping[Any, list[str]],
    ) -> FactorModel:
        users, items = [*m.user_ids, *new_u], [*m.item_ids, *new_i]
        n_seen = len(m.seen_ratings) + len(t)
        model = FactorModel(
            users, items, m.factors, m.kind, m.genres, n_seen,
            list(m.rating_range or []) or None, dict(m.hyper), m.algorithm,
        )  # fmt: skip
        nu, ni, ns = len(m.user_ids), len(m.item_ids), len(m.seen_ratings)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                old = m.state_dict()[name]
                if tensor.dim() == 0 or name.startswith("genre"):
                    tensor.copy_(old)
                elif name.startswith("user"):
                    tensor[:nu] = old
                elif name.startswith("item"):
                    tensor[:ni] = old
                else:  # seen_*
                    tensor[:ns] = old
            col = {g: c for c, g in enumerate(m.genres)}
            for k, item in enumerate(new_i):  # genre prior for new items
                for g in genre_map.get(item, []):
                    if g in col:
                        model.item_genres[ni + k, col[g]] = 1.0 / len(genre_map[item])
            model.item_factors[ni:] = model.item_genres[ni:] @ model.genre_factors
            model.item_bias[ni:, 0] = model.item_genres[ni:] @ model.genre_bias
            model.fitted_on.copy_(m.fitted_on)
        return model

    # -- answers ---------------------------------------------------------------------
    def predict(self, pairs: Any) -> np.ndarray:
        """Predicted ratings (or scores) of ``(user, item)`` pairs: a table with user and
        item columns, or rows. Unknown users get the item baseline (popularity
        fallback), unknown items the user baseline."""
        m = self._fitted()
        t = as_triples(pairs, self.columns, need_rating=False)
        u_map, i_map = self._index(m.user_ids), self._index(m.item_ids)
        u = np.array([u_map.get(x, -1) for x in t.users.tolist()], dtype=np.int64)
        i = np.array([i_map.get(x, -1) for x in t.items.tolist()], dtype=np.int64)
        with torch.no_grad():
            ut, it = torch.from_numpy(np.maximum(u, 0)), torch.from_numpy(np.maximum(i, 0))
            known_u, known_i = torch.from_numpy(u >= 0), torch.from_numpy(i >= 0)
            dot = (m.user_factors[ut] * m.item_factors[it]).sum(-1)
            out = (
                m.mean
                + m.user_bias[ut, 0] * known_u
                + m.item_bias[it, 0] * known_i
                + dot * (known_u & known_i)
            )
            if m.kind == "explicit" and m.rating_range is not None:
                out = out.clamp(*m.rating_range)
        return out.numpy().astype(np.float64)

    def _popularity(self, m: FactorModel) -> torch.Tensor:
        return torch.bincount(m.seen_items, minlength=len(m.item_ids)).float()

    def recommend(
        self,
        user: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter: Callable[[Any], bool] | Collection[Any] | None = None,
    ) -> list[tuple[Any, float]]:
        """The ``k`` best ``(item, score)`` for ``user``; an unknown user gets the most
        rated items (popularity fallback). ``filter`` keeps only items it accepts (a
        predicate on the item id, or a collection of allowed ids)."""
        m = self._fitted()
        index = self._index(m.user_ids).get(user)
        with torch.no_grad():
            if index is None:
                scores = self._popularity(m)
            else:
                scores = m.all_scores(torch.tensor([index]))[0].clone()
            if exclude_seen and index is not None:
                scores[m.seen_items[m.seen_users == index]] = -math.inf
            if filter is not None:
                ok = filter if callable(filter) else set(filter).__contains__
                allowed = torch.tensor([bool(ok(item)) for item in m.item_ids])
                scores[~allowed] = -math.inf
            top = torch.topk(scores, min(k, len(scores)))
        return [
            (m.item_ids[int(j)], float(s))
            for s, j in zip(top.values, top.indices, strict=True)
            if math.isfinite(float(s))
        ]

    def similar_items(self, item: Any, k: int = 10) -> list[tuple[Any, float]]:
        """The ``k`` items whose factors are closest in cosine to ``item``'s."""
        m = self._fitted()
        index = self._index(m.item_ids).get(item)
        if index is None:
            raise UnknownIdError(
                f"item {item!r} is not known to this recommender; add it with partial_fit"
            )
        with torch.no_grad():
            unit = torch.nn.functional.normalize(m.item_factors, dim=1)
            sims = unit @ unit[index]
            sims[index] = -math.inf
            top = torch.topk(sims, min(k, len(sims) - 1))
        return [
            (m.item_ids[int(j)], float(s)) for s, j in zip(top.values, top.indices, strict=True)
        ]

    def score(self, test: Any, k: int = 10) -> dict[str, float]:
        """Metrics on held-out ratings: ``rmse``/``mae`` (explicit), and precision, recall,
        NDCG and MAP at ``k`` plus ``coverage`` of top-``k`` lists (training items
        excluded; relevant = test ratings >= ``relevant_from``, or every test
        interaction for implicit models)."""
        m = self._fitted()
        t = as_triples(test, self.columns, need_rating=self.kind == "explicit")
        out: dict[str, float] = {}
        if self.kind == "explicit":
            pred = self.predict({"user": t.users, "item": t.items})
            out["rmse"], out["mae"] = rmse(pred, t.ratings), mae(pred, t.ratings)
        keep = t.ratings >= self.relevant_from if self.kind == "explicit" else t.ratings > 0
        relevant: dict[Any, list[Any]] = {}
        for user, item in zip(t.users[keep].tolist(), t.items[keep].tolist(), strict=True):
            relevant.setdefault(user, []).append(item)
        known = set(m.user_ids)
        lists = {u: [item for item, _ in self.recommend(u, k)] for u in relevant if u in known}
        out.update(ranking_metrics(lists, relevant, k))
        out["coverage"] = coverage(lists, len(m.item_ids))
        return out
