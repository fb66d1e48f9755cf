"""Knowledge-graph embedding models as one registered ``nn.Module``: TransE, DistMult,
ComplEx and RotatE.

``forward`` takes ``(N, 3)`` int64 index triples ``[head, relation, tail]`` and returns
``(N,)`` plausibility scores (higher is more plausible); ``score_tails``/``score_heads``
score every entity at once for ranking. The scoring functions follow the papers and
PyKEEN's definitions:

- TransE (Bordes et al. 2013): ``-||h + r - t||_p`` (``p=1`` by default).
- DistMult (Yang et al. 2015): ``<h, r, t>``.
- ComplEx (Trouillon et al. 2016): ``Re(<h, r, conj(t)>)``, complex vectors stored as
  ``[real | imaginary]`` halves of ``2 * dim`` floats.
- RotatE (Sun et al. 2019): ``-||h * r - t||`` with ``|r_i| = 1`` (the relation is a
  phase per dimension), complex entities.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lepton.errors import GraphError
from lepton.models import register_model

__all__ = ["KINDS", "KGEModel"]

KINDS = ("transe", "distmult", "complex", "rotate")


@register_model("kg-embedding")
class KGEModel(nn.Module):
    """Entity and relation embeddings with one of four scoring functions.

    Args:
        kind: ``"transe"``, ``"distmult"``, ``"complex"`` or ``"rotate"``.
        entities: Entity labels in index order (kept in the manifest).
        relations: Relation labels in index order.
        dim: Embedding dimension (complex dimensions for ComplEx and RotatE).
        p: The norm of TransE's distance (1 or 2).
        seed: Seeds the initialisation.
        n_triples: Rows of the ``triples`` buffer: the known ``(head, relation, tail)``
            index triples (train, valid and test), kept with the weights so a registered
            version can filter known links and answer SPARQL over its facts on its own.
    """

    triples: torch.Tensor

    def __init__(
        self,
        kind: str,
        entities: list[str],
        relations: list[str],
        dim: int = 50,
        p: int = 1,
        seed: int = 0,
        n_triples: int = 0,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise GraphError(f"unknown embedding model {kind!r}; choose from {list(KINDS)}")
        if dim < 1 or not entities or not relations:
            raise GraphError(
                "an embedding model needs dim >= 1 and at least one entity and relation"
            )
        self.kind, self.dim, self.p = kind, dim, p
        self.entities, self.relations = list(entities), list(relations)
        width = 2 * dim if kind in ("complex", "rotate") else dim
        gen = torch.Generator().manual_seed(seed)
        ne, nr = len(entities), len(relations)
        self.entity = nn.Parameter(self._init(ne, width, gen))
        if kind == "rotate":  # a phase per dimension: |r| = 1 by construction
            self.relation = nn.Parameter(torch.rand(nr, dim, generator=gen) * 2 * math.pi)
        else:
            self.relation = nn.Parameter(self._init(nr, width, gen))
        if kind in ("transe", "distmult"):
            self.normalize_entities()
        self.register_buffer("triples", torch.zeros(max(0, n_triples), 3, dtype=torch.int64))

    @staticmethod
    def _init(n: int, width: int, gen: torch.Generator) -> torch.Tensor:
        bound = 6 / math.sqrt(width)  # Xavier-uniform-like, as TransE's paper and PyKEEN
        return (torch.rand(n, width, generator=gen) * 2 - 1) * bound

    @torch.no_grad()
    def normalize_entities(self) -> None:
        """Project entity vectors to unit L2 norm (TransE/DistMult's constraint, applied
        after every step)."""
        self.entity.div_(self.entity.norm(dim=1, keepdim=True).clamp(min=1e-12))

    # -- scoring -----------------------------------------------------------------
    def _complex(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., : self.dim], x[..., self.dim :]

    def _rotation(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cos(r), torch.sin(r)

    def score(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Scores of index triples (any broadcastable shapes of indices)."""
        eh, er, et = self.entity[h], self.relation[r], self.entity[t]
        return self._score(eh, er, et)

    def _score(self, eh: torch.Tensor, er: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
        if self.kind == "transe":
            distance: torch.Tensor = (eh + er - et).norm(p=self.p, dim=-1)
            return -distance
        if self.kind == "distmult":
            return (eh * er * et).sum(-1)
        hr, hi = self._complex(eh)
        tr, ti = self._complex(et)
        if self.kind == "complex":
            rr, ri = self._complex(er)
            return (hr * rr * tr + hi * rr * ti + hr * ri * ti - hi * ri * tr).sum(-1)
        cr, ci = self._rotation(er)  # rotate
        dr, di = hr * cr - hi * ci - tr, hr * ci + hi * cr - ti
        return -torch.sqrt(dr * dr + di * di + 1e-12).sum(-1)

    def forward(self, triples: torch.Tensor) -> torch.Tensor:
        return self.score(triples[:, 0], triples[:, 1], triples[:, 2])

    def score_tails(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``(len(h), n_entities)`` scores of every entity as the tail of ``(h, r, ?)``."""
        eh, er, every = self.entity[h], self.relation[r], self.entity
        if self.kind == "distmult":
            return (eh * er) @ every.T
        if self.kind == "complex":
            hr, hi = self._complex(eh)
            rr, ri = self._complex(er)
            tr, ti = self._complex(every)
            return (hr * rr - hi * ri) @ tr.T + (hi * rr + hr * ri) @ ti.T
        return self._chunked(eh[:, None, :], er[:, None, :], every[None, :, :])

    def score_heads(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(len(t), n_entities)`` scores of every entity as the head of ``(?, r, t)``."""
        er, et, every = self.relation[r], self.entity[t], self.entity
        if self.kind == "distmult":
            return (er * et) @ every.T
        if self.kind == "complex":
            rr, ri = self._complex(er)
            tr, ti = self._complex(et)
            hr, hi = self._complex(every)
            return (rr * tr + ri * ti) @ hr.T + (rr * ti - ri * tr) @ hi.T
        return self._chunked(every[None, :, :], er[:, None, :], et[:, None, :])

    def _chunked(self, eh: torch.Tensor, er: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
        # distance models broadcast (B, E, width): in slices of entities to bound memory
        n = max(eh.shape[1], et.shape[1])
        b = max(eh.shape[0], er.shape[0], et.shape[0])
        step = max(1, (1 << 24) // max(1, b * eh.shape[-1]))
        parts = []
        for start in range(0, n, step):
            sl = slice(start, start + step)
            h = eh[:, sl] if eh.shape[1] > 1 else eh
            t = et[:, sl] if et.shape[1] > 1 else et
            parts.append(self._score(h, er, t))
        return torch.cat(parts, dim=1)
