"""Client-side differential privacy: each client clips its model update and adds Gaussian
noise before the update leaves the client, and charges its own dataset's budget first.

The update ``u = w_local - w_global`` is clipped to L2 norm ``clip`` with Flower's own
``clip_inputs_inplace`` (FlatClip, Andrew et al. 2019) and noise ``N(0, (z * clip)^2)`` is
added per coordinate (``z`` = ``noise_multiplier``), drawn from a generator seeded from the
OS CSPRNG (``seed`` makes it reproducible and the release not private, as in
:mod:`lepton.privacy`).

Accounting: two neighbouring client datasets (one row added or removed) give updates
that differ by at most ``2 * clip`` (both are clipped to ``clip``), so one released update
is a Gaussian mechanism with noise multiplier ``z / 2`` relative to that sensitivity:
``GaussianDpEvent(z / 2)``. Every round the client takes part in is one such release,
charged to the ledger (:func:`lepton.privacy.charge`) before the update is sent. Being
sampled in only some rounds is not used for amplification (the client sees its own
selection), so the bound is conservative. Protected: the client's rows, against the
server and the other clients. Not protected: the number of rounds a client joins.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from lepton.errors import FederatedError

__all__ = ["ClientDP", "ledger_key", "privatize"]


@dataclass(frozen=True)
class ClientDP:
    """Client-side DP for :func:`lepton.federated.run`.

    Args:
        clip: L2 norm every client update is clipped to.
        noise_multiplier: Noise standard deviation as a multiple of ``clip``.
        ledger: Charge lepton's privacy ledger before each release: a prefix (client
            ``i`` charges ``"<prefix>/client-<i>"``) or one dataset key per client. Each key
            needs a budget (``lp.privacy.set_budget``); a client whose budget would be
            exceeded sends nothing and the round goes on without it.
        database: The ledger's database URL (default: ``LEPTON_DATABASE_URL``'s).
        seed: Reproducible noise for tests (then NOT private).

    Example:
        >>> dp = ClientDP(clip=1.0, noise_multiplier=1.1, ledger="mnist")
        >>> dp.event_sigma
        0.55
    """

    clip: float = 1.0
    noise_multiplier: float = 1.0
    ledger: str | tuple[str, ...] | None = None
    database: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.clip > 0:
            raise FederatedError(f"ClientDP clip must be positive, got {self.clip}")
        if self.noise_multiplier < 0:
            raise FederatedError(
                f"ClientDP noise_multiplier must be >= 0, got {self.noise_multiplier}"
            )
        if isinstance(self.ledger, list):
            object.__setattr__(self, "ledger", tuple(self.ledger))

    @property
    def event_sigma(self) -> float:
        """The noise multiplier relative to the update's sensitivity ``2 * clip``."""
        return self.noise_multiplier / 2

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        if isinstance(self.ledger, tuple):
            out["ledger"] = list(self.ledger)
        return out

    @classmethod
    def from_json(cls, value: dict[str, object]) -> ClientDP:
        ledger = value.get("ledger")
        return cls(
            clip=float(value["clip"]),  # type: ignore[arg-type]
            noise_multiplier=float(value["noise_multiplier"]),  # type: ignore[arg-type]
            ledger=tuple(ledger) if isinstance(ledger, list) else ledger,  # type: ignore[arg-type]
            database=value.get("database"),  # type: ignore[arg-type]
            seed=value.get("seed"),  # type: ignore[arg-type]
        )


def ledger_key(dp: ClientDP, client: int) -> str | None:
    """The ledger key client ``client`` charges, or ``None`` when there is no ledger."""
    if dp.ledger is None:
        return None
    if isinstance(dp.ledger, str):
        return f"{dp.ledger}/client-{client}"
    if client >= len(dp.ledger):
        raise FederatedError(
            f"ClientDP.ledger names {len(dp.ledger)} datasets but client {client} has none; "
            "give one key per client or a prefix"
        )
    return dp.ledger[client]


def privatize(
    local: Sequence[np.ndarray], global_: Sequence[np.ndarray], dp: ClientDP, salt: int
) -> tuple[list[np.ndarray], float]:
    """``global + clip(local - global) + noise``, and the update's norm before clipping.

    ``salt`` (the client and round) varies the seeded noise between releases.
    """
    from flwr.supercore.differential_privacy import clip_inputs_inplace, get_norm

    update = [np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
              for a, b in zip(local, global_, strict=True)]  # fmt: skip
    norm = get_norm(update)
    if norm > 0:  # Flower's clip divides by the norm
        clip_inputs_inplace(update, dp.clip)
    seed = secrets.randbits(128) if dp.seed is None else dp.seed * 1_000_003 + salt
    rng = np.random.Generator(np.random.PCG64(seed))
    std = dp.noise_multiplier * dp.clip
    out = []
    for u, g in zip(update, global_, strict=True):
        noisy = np.asarray(g, dtype=np.float64) + u + rng.normal(0.0, std, size=u.shape)
        out.append(noisy.astype(np.asarray(g).dtype))
    return out, norm
