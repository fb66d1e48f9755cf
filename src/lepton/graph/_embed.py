"""``Embedding``: train a knowledge-graph embedding with ``lp.fit``, rank, predict links.

Training is ``lepton.train.fit`` itself: the data is a :class:`~lepton.data.Dataset` of
``(N, 3)`` int64 triples with dummy regression targets, the model returns each triple's
score, and the ``loss=`` hook draws the negatives and computes the ranking loss. Negative
sampling is PyKEEN's ``BasicNegativeSampler``: each positive gets ``negatives`` copies
with the head or the tail (even odds) replaced by a uniformly drawn *other* entity. A
callback re-applies the unit-norm constraint on entity vectors after every step
(TransE, DistMult), as PyKEEN does.

Losses (defaults per model, as PyKEEN's): ``"margin"`` (margin ranking, margin 1:
TransE, DistMult), ``"softplus"`` (logistic, on positives and negatives: ComplEx) and
``"nssa"`` (self-adversarial negative sampling, margin 9, temperature 1: RotatE).

Evaluation is the filtered, both-sided ranking protocol (Bordes et al. 2013): for each
test triple, every entity replaces the tail (then the head); candidates that form another
known triple (train, valid or test) are removed; the rank is the *realistic* one (the
mean of the optimistic and pessimistic ranks under ties, as PyKEEN reports). MRR is the
mean of ``1 / rank``, Hits@k the share of ranks ``<= k``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lepton.data import Dataset
from lepton.errors import GraphError, NotFittedError
from lepton.graph._data import TripleSplits
from lepton.graph._models import KINDS, KGEModel
from lepton.train import Callback, FitResult, TrainState, fit

__all__ = ["LOSSES", "Embedding", "rank_metrics"]

LOSSES = ("margin", "softplus", "nssa")
_DEFAULT_LOSS = {"transe": "margin", "distmult": "margin", "complex": "softplus", "rotate": "nssa"}
_DEFAULT_MARGIN = {"margin": 1.0, "softplus": 0.0, "nssa": 9.0}


class _Constrain(Callback):
    """Unit-norm entity vectors after every optimizer step (TransE, DistMult)."""

    def __init__(self, model: KGEModel) -> None:
        self.model = model

    def on_batch_end(self, state: TrainState) -> None:
        self.model.normalize_entities()


def corrupt(triples: torch.Tensor, n_entities: int, negatives: int) -> torch.Tensor:
    """``(B, negatives, 3)`` corrupted copies: head or tail (even odds) replaced by a
    uniformly drawn entity other than the one it replaces."""
    neg = triples[:, None, :].repeat(1, negatives, 1)
    side = torch.randint(0, 2, neg.shape[:2], device=triples.device) * 2  # column 0 or 2
    old = neg.gather(2, side[..., None])[..., 0]
    new = torch.randint(0, n_entities - 1, old.shape, device=triples.device)
    new = new + (new >= old).long()  # skip the original entity
    neg.scatter_(2, side[..., None], new[..., None])
    return neg


def ranking_loss(
    kind: str, pos: torch.Tensor, neg: torch.Tensor, *, margin: float, temperature: float = 1.0
) -> torch.Tensor:
    """The loss of positive scores ``(B,)`` against negative scores ``(B, k)``."""
    if kind == "margin":
        return F.relu(margin - pos[:, None] + neg).mean()
    if kind == "softplus":
        scores = torch.cat([pos, neg.reshape(-1)])
        signs = torch.cat([torch.ones_like(pos), -torch.ones_like(neg.reshape(-1))])
        return F.softplus(-signs * scores).mean()
    # nssa: scores are negative distances; negatives weighted by softmax(temperature * score)
    weights = torch.softmax(neg * temperature, dim=-1).detach()
    pos_loss = -F.logsigmoid(margin + pos).mean()
    neg_loss = -(weights * F.logsigmoid(-neg - margin)).sum(-1).mean()
    return (pos_loss + neg_loss) / 2


def _known(
    triples: torch.Tensor,
) -> tuple[dict[tuple[int, int], list[int]], dict[tuple[int, int], list[int]]]:
    tails: dict[tuple[int, int], list[int]] = defaultdict(list)
    heads: dict[tuple[int, int], list[int]] = defaultdict(list)
    for h, r, t in triples.tolist():
        tails[(h, r)].append(t)
        heads[(r, t)].append(h)
    return tails, heads


@torch.no_grad()
def _ranks(
    scores: torch.Tensor, target: torch.Tensor, keys: list[tuple[int, int]],
    known: dict[tuple[int, int], list[int]] | None,
) -> torch.Tensor:  # fmt: skip
    rows = torch.arange(len(target))
    true = scores[rows, target].clone()
    if known is not None:
        r_idx: list[int] = []
        c_idx: list[int] = []
        for i, key in enumerate(keys):
            others = known.get(key, ())
            r_idx.extend([i] * len(others))
            c_idx.extend(others)
        if r_idx:
            scores[torch.tensor(r_idx), torch.tensor(c_idx)] = float("-inf")
        scores[rows, target] = true
    optimistic = 1 + (scores > true[:, None]).sum(1)
    pessimistic = (scores >= true[:, None]).sum(1)
    return (optimistic + pessimistic).double() / 2


@torch.no_grad()
def rank_metrics(
    model: KGEModel,
    triples: torch.Tensor,
    known: torch.Tensor | None = None,
    *,
    batch_size: int = 256,
    ks: Iterable[int] = (1, 3, 10),
) -> dict[str, float]:
    """Filtered (when ``known`` is given) both-sided ranking metrics of ``triples``:
    ``mrr``, ``mean_rank``, ``hits@k``; also ``tail_mrr`` and ``head_mrr``."""
    model.eval()
    tails, heads = _known(known) if known is not None else (None, None)
    tail_ranks, head_ranks = [], []
    for start in range(0, len(triples), batch_size):
        b = triples[start : start + batch_size]
        h, r, t = b[:, 0], b[:, 1], b[:, 2]
        hl, rl, tl = h.tolist(), r.tolist(), t.tolist()
        tail_ranks.append(_ranks(model.score_tails(h, r), t, list(zip(hl, rl, strict=True)), tails))
        head_ranks.append(_ranks(model.score_heads(r, t), h, list(zip(rl, tl, strict=True)), heads))
    tr, hr = torch.cat(tail_ranks), torch.cat(head_ranks)
    ranks = torch.cat([tr, hr])
    out = {"mrr": float((1 / ranks).mean()), "mean_rank": float(ranks.mean())}
    for k in ks:
        out[f"hits@{k}"] = float((ranks <= k).double().mean())
    out["tail_mrr"], out["head_mrr"] = float((1 / tr).mean()), float((1 / hr).mean())
    return out


class Embedding:
    """A knowledge-graph embedding (TransE, DistMult, ComplEx or RotatE) trained with
    ``lp.fit``.

    Args:
        kind: ``"transe"``, ``"distmult"``, ``"complex"`` or ``"rotate"``.
        dim: Embedding dimension.
        epochs, batch_size, lr: ``lp.fit`` settings (Adam, no weight decay).
        negatives: Corrupted triples per positive.
        loss: ``"margin"``, ``"softplus"`` or ``"nssa"`` (default: PyKEEN's for the model).
        margin: The loss margin (default: 1 for ``"margin"``, 9 for ``"nssa"``).
        temperature: NSSA's adversarial temperature.
        p: TransE's norm (1 or 2).
        seed: Seeds initialisation, batch order and negatives.
        num_threads: Torch CPU threads while training.

    Example:
        >>> data = lp.graph.load_triples("nations")  # doctest: +SKIP
        >>> emb = lp.graph.Embedding("transe", dim=50, epochs=100).fit(data)  # doctest: +SKIP
        >>> emb.evaluate(data.test, known=data.all)["mrr"]  # doctest: +SKIP
        >>> emb.predict_tail("usa", "exports3", k=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        kind: str = "transe",
        *,
        dim: int = 50,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 0.01,
        negatives: int = 1,
        loss: str | None = None,
        margin: float | None = None,
        temperature: float = 1.0,
        p: int = 1,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise GraphError(f"unknown embedding model {kind!r}; choose from {list(KINDS)}")
        loss = loss or _DEFAULT_LOSS[kind]
        if loss not in LOSSES:
            raise GraphError(f"unknown loss {loss!r}; choose from {list(LOSSES)}")
        if negatives < 1 or dim < 1 or epochs < 1 or batch_size < 1 or not lr > 0:
            raise GraphError("dim, epochs, batch_size and negatives must be >= 1 and lr > 0")
        if p not in (1, 2):
            raise GraphError(f"p (TransE's norm) must be 1 or 2, got {p}")
        self.kind, self.dim, self.epochs, self.batch_size, self.lr = (
            kind,
            dim,
            epochs,
            batch_size,
            lr,
        )
        self.negatives, self.loss, self.temperature, self.p, self.seed = (
            negatives,
            loss,
            temperature,
            p,
            seed,
        )
        self.margin = _DEFAULT_MARGIN[loss] if margin is None else margin
        self.num_threads = num_threads
        self.model: KGEModel | None = None
        self.result: FitResult | None = None

    def hyper(self) -> dict[str, Any]:
        """The training settings (JSON-safe)."""
        return {"kind": self.kind, "dim": self.dim, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "negatives": self.negatives,
                "loss": self.loss, "margin": self.margin, "temperature": self.temperature,
                "p": self.p, "seed": self.seed}  # fmt: skip

    # -- training ----------------------------------------------------------------
    def fit(self, data: TripleSplits, *, quiet: bool = True) -> Embedding:
        """Train on ``data.train`` (new weights); returns ``self``. ``self.result`` holds
        ``lp.fit``'s :class:`~lepton.train.FitResult` (per-epoch loss, time)."""
        if not isinstance(data, TripleSplits):
            raise GraphError(
                "fit takes a TripleSplits (lp.graph.load_triples('nations') or "
                "TripleSplits.from_labels(name, train, valid, test))"
            )
        if len(data.entities) < 2 or len(data.train) == 0:
            raise GraphError("training needs at least two entities and one training triple")
        known = data.all
        model = KGEModel(self.kind, data.entities, data.relations, dim=self.dim, p=self.p,
                         seed=self.seed, n_triples=len(known))  # fmt: skip
        model.triples.copy_(known)
        n_entities = len(data.entities)

        def hook(out: torch.Tensor, _y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            neg = corrupt(x, n_entities, self.negatives)
            neg_scores = model(neg.reshape(-1, 3)).reshape(len(x), self.negatives)
            return ranking_loss(self.loss, out, neg_scores, margin=self.margin,
                                temperature=self.temperature)  # fmt: skip

        train = Dataset(data.train, torch.zeros(len(data.train)), name=f"{data.name}-triples",
                        task="regression")  # fmt: skip
        callbacks = [_Constrain(model)] if self.kind in ("transe", "distmult") else []
        self.result = fit(
            model, train, epochs=self.epochs, batch_size=self.batch_size, optimizer="adam",
            lr=self.lr, weight_decay=0.0, loss=hook, seed=self.seed, device="cpu",
            callbacks=callbacks, quiet=quiet, num_threads=self.num_threads,
        )  # fmt: skip
        self.model = model.eval()
        return self

    def _fitted(self) -> KGEModel:
        if self.model is None:
            raise NotFittedError("this Embedding is not trained yet; call fit(data) first")
        return self.model

    # -- evaluation and prediction -----------------------------------------------
    def evaluate(
        self, triples: torch.Tensor, *, known: torch.Tensor | None = None, batch_size: int = 256
    ) -> dict[str, float]:
        """Ranking metrics on index triples; pass ``known=data.all`` for the filtered
        setting (the standard one)."""
        return rank_metrics(self._fitted(), triples, known, batch_size=batch_size)

    def _entity(self, label: str | int) -> int:
        model = self._fitted()
        if isinstance(label, int):
            if not 0 <= label < len(model.entities):
                raise GraphError(f"entity index {label} out of range 0..{len(model.entities) - 1}")
            return label
        try:
            return model.entities.index(label)
        except ValueError:
            raise GraphError(
                f"unknown entity {label!r}; the model knows {len(model.entities)} entities, "
                f"e.g. {model.entities[:3]}"
            ) from None

    def _relation(self, label: str | int) -> int:
        model = self._fitted()
        if isinstance(label, int):
            if not 0 <= label < len(model.relations):
                raise GraphError(f"relation index {label} out of range")
            return label
        try:
            return model.relations.index(label)
        except ValueError:
            raise GraphError(
                f"unknown relation {label!r}; the model knows {model.relations[:5]}..."
            ) from None

    @torch.no_grad()
    def predict_tail(
        self, head: str | int, relation: str | int, k: int = 10, *,
        exclude: Iterable[str] = (),
    ) -> list[tuple[str, float]]:  # fmt: skip
        """The ``k`` most plausible tails of ``(head, relation, ?)`` as ``(entity,
        score)``, best first; ``exclude`` leaves entities out (e.g. known tails)."""
        model = self._fitted()
        h, r = torch.tensor([self._entity(head)]), torch.tensor([self._relation(relation)])
        scores = model.score_tails(h, r)[0]
        return self._top(scores, k, exclude)

    @torch.no_grad()
    def predict_head(
        self, relation: str | int, tail: str | int, k: int = 10, *,
        exclude: Iterable[str] = (),
    ) -> list[tuple[str, float]]:  # fmt: skip
        """The ``k`` most plausible heads of ``(?, relation, tail)``."""
        model = self._fitted()
        r, t = torch.tensor([self._relation(relation)]), torch.tensor([self._entity(tail)])
        return self._top(model.score_heads(r, t)[0], k, exclude)

    def _top(self, scores: torch.Tensor, k: int, exclude: Iterable[str]) -> list[tuple[str, float]]:
        model = self._fitted()
        scores = scores.clone()
        for e in exclude:
            scores[self._entity(e)] = float("-inf")
        k = max(0, min(k, int(torch.isfinite(scores).sum())))
        top = torch.topk(scores, k)
        return [
            (model.entities[i], float(s))
            for s, i in zip(top.values, top.indices.tolist(), strict=True)
        ]

    @torch.no_grad()
    def similar(self, entity: str | int, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` entities whose vectors are closest by cosine similarity (itself
        left out)."""
        model = self._fitted()
        i = self._entity(entity)
        vectors = F.normalize(model.entity, dim=1)
        sims = vectors @ vectors[i]
        sims[i] = float("-inf")
        k = max(0, min(k, len(model.entities) - 1))
        top = torch.topk(sims, k)
        return [
            (model.entities[j], float(s))
            for s, j in zip(top.values, top.indices.tolist(), strict=True)
        ]

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``embedding.json`` into the folder ``path``."""
        from safetensors.torch import save_file

        from lepton._fs import atomic_write_bytes, make_dirs

        model = self._fitted()
        folder = make_dirs(Path(path).expanduser())
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(folder / "weights.safetensors"))  # fmt: skip
        meta = {"format": "lepton-kg-embedding/1", "hyper": self.hyper(),
                "entities": model.entities, "relations": model.relations}  # fmt: skip
        atomic_write_bytes(folder / "embedding.json", json.dumps(meta).encode())
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Embedding:
        """Read what :meth:`save` wrote."""
        from safetensors.torch import load_file

        folder = Path(path).expanduser()
        try:
            meta = json.loads((folder / "embedding.json").read_text("utf-8"))
            weights = load_file(str(folder / "weights.safetensors"))
        except (OSError, ValueError) as exc:
            raise GraphError(
                f"{folder} holds no saved embedding ({exc}); save one with .save()"
            ) from None
        return cls.from_model(cls._build(meta, weights), meta["hyper"])

    @staticmethod
    def _build(meta: dict[str, Any], weights: dict[str, torch.Tensor]) -> KGEModel:
        h = meta["hyper"]
        weights.setdefault("triples", torch.zeros(0, 3, dtype=torch.int64))  # saved before
        model = KGEModel(h["kind"], meta["entities"], meta["relations"], dim=h["dim"], p=h["p"],
                         n_triples=len(weights["triples"]))  # fmt: skip
        model.load_state_dict(weights)
        return model

    @classmethod
    def from_model(cls, model: KGEModel, hyper: dict[str, Any] | None = None) -> Embedding:
        """Wrap a :class:`KGEModel` (e.g. from ``lp.load_model``)."""
        if not isinstance(model, KGEModel):
            raise GraphError(f"expected a kg-embedding model, got {type(model).__name__}")
        h = {k: v for k, v in (hyper or {}).items() if k not in ("kind", "dim", "p")}
        emb = cls(model.kind, dim=model.dim, p=model.p, **h)
        emb.model = model.eval()
        return emb

    def train_seconds(self) -> float:
        """Wall time of the last ``fit`` (``lp.fit``'s)."""
        return self.result.seconds if self.result is not None else 0.0
