"""DP-SGD for ``lp.fit``: per-sample clipping, Gaussian noise and Poisson sampling, by Opacus.

``lp.fit(model, train, privacy=DPSGD(epsilon=3, delta=1e-5))`` trains with the algorithm
of Abadi et al. (2016): every step samples each row independently with probability
``q = batch_size / rows`` (Poisson sampling, which the accountants' amplification bound
assumes), clips each row's gradient to L2 norm ``max_grad_norm``, sums, adds Gaussian
noise of standard deviation ``noise_multiplier * max_grad_norm`` and divides by the
expected batch size. Opacus computes the per-sample gradients and picks the smallest
``noise_multiplier`` whose accountant (PRV or RDP) reaches ``epsilon`` after all the
planned steps; nothing here is a home-made accountant.

The run is charged to the dataset's budget in the ledger *before the first step*, as the
event ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)``
for every planned step, so a run the budget cannot pay for trains nothing. (A run that
stops early has paid for the steps it skipped: the ledger never under-counts.)

``fit`` reaches this class through the :class:`lepton.train.TrainingPrivacy` protocol,
because ``train`` sits below ``privacy`` in the layers.
"""

from __future__ import annotations

import math
import secrets
import warnings
from typing import Any, Literal

import torch
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent
from torch import nn

from lepton.data import Dataset
from lepton.errors import PrivacyError, PrivateTrainingError
from lepton.models import respec
from lepton.privacy._gaussian import check_epsilon_delta
from lepton.privacy._history import budget_key
from lepton.privacy._ledger import charge
from lepton.storage import Database
from lepton.train import TrainingPrivacy
from lepton.train._private import PrivateTraining

__all__ = ["DPSGD"]

Accountant = Literal["prv", "rdp"]


class _Batch:
    """Rows fetched in bulk; ``len`` is the row count (Opacus' empty-batch check)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)


class _Rows(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A :class:`~lepton.data.Dataset` as a torch map-style dataset that indexes a whole
    batch at once (``__getitems__``), so Poisson sampling costs no per-row Python loop."""

    def __init__(self, data: Dataset) -> None:
        assert data.targets is not None
        self.x, self.y, self.transform = data.features, data.targets, data.transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __getitems__(self, indices: list[int]) -> _Batch:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        xb = self.x.index_select(0, idx)
        if self.transform is not None and len(idx):
            xb = self.transform(xb)
        return _Batch(xb, self.y.index_select(0, idx))


def _collate(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:  # a _Batch
    return batch.x, batch.y


class DPSGD(TrainingPrivacy):
    """Differentially private training for :func:`lepton.fit` (DP-SGD through Opacus).

    The guarantee is ``(epsilon, delta)``-DP for adding or removing one training row, for
    everything derived from the trained weights, counting every step of the run (not
    just the last one). Hyper-parameter search on the same data spends budget too and is
    not counted unless each trial is charged.

    Args:
        epsilon: The epsilon the whole run may spend; the noise is chosen to reach it
            after ``epochs`` epochs (about 1-8 is the useful range for deep learning).
        delta: The delta; well below ``1 / rows`` (``1e-5`` for MNIST's 60,000 rows).
        max_grad_norm: Each row's gradient is clipped to this L2 norm before the noise.
            Small values (0.1-1) usually work best; the noise scales with it.
        accountant: ``"prv"`` (the privacy-random-variable accountant of Gopi et al.
            2021: the tightest, so the least noise for the same epsilon) or ``"rdp"``
            (Rényi DP, Mironov 2017: the classic, slightly looser).
        dataset: The ledger dataset to charge (a key such as ``"mnist"``, or a
            :class:`~lepton.data.Dataset`, see :func:`lepton.privacy.budget_key`); the
            whole run is charged before the first step and a run that would overspend
            is refused. ``None``: **no ledger** — the run is private to its own
            ``epsilon``, but nothing stops the same rows from being released again
            elsewhere; use it only for data that has no budget.
        database: The ledger's database (default: ``lp.storage.open_database()``).
        seed: Seeds the noise and the Poisson sampling, for tests. A seeded run is
            **not private** (anyone with the seed can regenerate the noise); its
            ``report()`` says ``private: False``. ``None`` (default): 63 fresh bits from
            :mod:`secrets` per run. Opacus' ``secure_mode`` (a CSPRNG for the noise) is
            not available: it needs ``torchcsprng``, which is no longer maintained.

    Example:
        >>> lp.privacy.set_budget("mnist", epsilon=4.0, delta=1e-5)  # doctest: +SKIP
        >>> result = lp.fit(model, train, epochs=20, batch_size=512, optimizer="sgd",
        ...                 lr=2.0, privacy=lp.privacy.DPSGD(epsilon=3, delta=1e-5,
        ...                 max_grad_norm=0.1, dataset="mnist"))  # doctest: +SKIP
        >>> result.privacy["epsilon"]  # doctest: +SKIP
        2.98
    """

    def __init__(
        self,
        epsilon: float,
        delta: float = 1e-5,
        max_grad_norm: float = 1.0,
        *,
        accountant: Accountant = "prv",
        dataset: Dataset | str | None = None,
        database: Database | str | None = None,
        seed: int | None = None,
    ) -> None:
        check_epsilon_delta(epsilon, delta, need_delta=True)
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise PrivacyError(f"max_grad_norm must be > 0, got {max_grad_norm!r}; e.g. 1.0")
        if accountant not in ("prv", "rdp"):
            raise PrivacyError(f"accountant must be 'prv' or 'rdp', got {accountant!r}")
        self.epsilon, self.delta = float(epsilon), float(delta)
        self.max_grad_norm, self.accountant = float(max_grad_norm), accountant
        self.dataset, self.database, self.seed = dataset, database, seed
        self.model_changes: list[str] = []
        self._run: dict[str, Any] = {}
        self._engine: Any = None
        self._wrapped: Any = None
        self._optimizer: Any = None

    def __repr__(self) -> str:
        return (
            f"DPSGD(epsilon={self.epsilon:g}, delta={self.delta:g}, max_grad_norm="
            f"{self.max_grad_norm:g}, accountant={self.accountant!r}, dataset={self.dataset!r})"
        )

    # -- the TrainingPrivacy protocol ------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """Check ``model`` with Opacus' ``ModuleValidator`` and fix it in place: each
        BatchNorm becomes a GroupNorm (BatchNorm mixes rows of a batch, so one row's
        gradient is not its own). A zoo model then records ``norm="group"``, so the
        registry rebuilds what was trained; any other change gets a warning naming it. A
        model Opacus still cannot train privately is refused."""
        from opacus.validators import ModuleValidator  # type: ignore[import-untyped]

        self.model_changes = []
        _out_of_place(model)
        if not ModuleValidator.validate(model, strict=False):
            return model
        for name, sub in list(model.named_modules()):
            fixer = ModuleValidator.FIXERS.get(type(sub))
            if fixer is None:
                continue
            if not name:
                raise PrivateTrainingError(
                    f"{type(model).__name__} is itself a layer DP-SGD cannot train; wrap it "
                    f"in a model, or use one without it"
                )
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            new = fixer(sub)
            device = next((p.device for p in sub.parameters()), None)
            if device is not None:
                new.to(device)
            setattr(parent, attr, new)
            self.model_changes.append(f"{name}: {_short(sub)} -> {_short(new)}")
        left = ModuleValidator.validate(model, strict=False)
        if left:
            raise PrivateTrainingError(
                f"Opacus cannot train {type(model).__name__} with per-sample gradients: "
                + "; ".join(str(e).splitlines()[0] for e in left[:5])
                + ". Replace those layers (e.g. nn.GroupNorm for normalisation, Opacus' "
                "DPLSTM for recurrent layers) or use a model from lepton.models without them"
            )
        if self.model_changes and not respec(model, norm="group"):
            warnings.warn(
                f"DP-SGD changed {type(model).__name__} in place so that each sample's "
                f"gradient is its own: {'; '.join(self.model_changes)}. The registry "
                f"rebuilds models from their architecture, so a changed lepton.models "
                f"model may not load back; prefer a model without BatchNorm",
                UserWarning,
                stacklevel=3,
            )
        return model

    def attach(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: Dataset,
        *,
        epochs: int,
        batch_size: int,
    ) -> PrivateTraining:
        """Wrap with Opacus' ``PrivacyEngine.make_private_with_epsilon`` (Poisson
        sampling, flat per-sample clipping) and charge the whole run to the ledger."""
        from opacus import PrivacyEngine  # type: ignore[import-untyped]

        rows = len(train)
        if train.targets is None:
            raise PrivateTrainingError(f"DP-SGD needs labelled data; {train.name!r} has none")
        if self.delta >= 1 / rows:
            raise PrivacyError(
                f"delta={self.delta:g} is not below 1/rows = {1 / rows:.3g} for {rows} rows: "
                f"it would allow releasing a whole row; use delta <= {0.1 / rows:.1g}"
            )
        if batch_size >= rows:
            raise PrivateTrainingError(
                f"batch_size={batch_size} samples every row at every step (sampling rate "
                f"1) for {rows} rows; use a batch_size well below the row count"
            )
        private = self.seed is None
        seed = secrets.randbits(63) if private else int(self.seed or 0)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        loader = torch.utils.data.DataLoader(
            _Rows(train),
            batch_size=batch_size,
            collate_fn=_collate,
            generator=torch.Generator().manual_seed(seed),
        )
        with warnings.catch_warnings():  # Opacus' secure-mode notice: documented instead
            warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            self._engine = PrivacyEngine(accountant=self.accountant, secure_mode=False)
            try:
                wrapped, dp_optimizer, dp_loader = self._engine.make_private_with_epsilon(
                    module=model,
                    optimizer=optimizer,
                    data_loader=loader,
                    target_epsilon=self.epsilon,
                    target_delta=self.delta,
                    epochs=epochs,
                    max_grad_norm=self.max_grad_norm,
                    poisson_sampling=True,
                    noise_generator=torch.Generator(device=device).manual_seed(seed + 1),
                )
            except (NotImplementedError, ValueError) as exc:
                raise PrivateTrainingError(
                    f"Opacus cannot make {type(model).__name__} private: {str(exc).splitlines()[0]}"
                ) from None
        self._wrapped, self._optimizer = wrapped, dp_optimizer
        steps_per_epoch = len(dp_loader)
        sample_rate = float(dp_loader.sample_rate)
        sigma = float(dp_optimizer.noise_multiplier)
        planned = epochs * steps_per_epoch
        self._run = {
            "target_epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "max_grad_norm": self.max_grad_norm,
            "clipping": "flat, per sample (L2)",
            "noise_multiplier": sigma,
            "sample_rate": sample_rate,
            "expected_batch_size": sample_rate * rows,
            "planned_steps": planned,
            "rows": rows,
            "private": private,
            "model_changes": list(self.model_changes),
            "ledger": None,
            "charge_id": None,
        }
        if self.dataset is not None:
            event = SelfComposedDpEvent(
                PoissonSampledDpEvent(sample_rate, GaussianDpEvent(sigma)), planned
            )
            what = f"dpsgd {type(model).__name__} on {train.name} ({planned} steps)"
            try:
                paid = charge(self.dataset, event, what=what, database=self.database)
            except BaseException:
                self.detach()  # refused: leave the model as it was, untrained
                raise
            self._run["ledger"], self._run["charge_id"] = budget_key(self.dataset), paid.id
        return PrivateTraining(
            model=wrapped,
            optimizer=dp_optimizer,
            batches=lambda: dp_loader,
            steps_per_epoch=steps_per_epoch,
        )

    def detach(self) -> None:
        """Remove Opacus' hooks and per-sample buffers from the model (its trained
        weights stay)."""
        if self._wrapped is not None:
            self._wrapped._close()
            self._wrapped = None

    def report(self) -> dict[str, Any]:
        """The guarantee of the last run: ``epsilon`` as the accountant computes it for
        the steps actually taken (at most the target), and how it was reached."""
        if not self._run:
            raise PrivateTrainingError("DPSGD.report() before a run: pass it to lp.fit first")
        out = dict(self._run)
        steps = sum(n for _, _, n in self._engine.accountant.history)
        out["steps"] = steps
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            out["epsilon"] = float(self._engine.get_epsilon(self.delta)) if steps else 0.0
        return out


def _out_of_place(model: nn.Module) -> None:
    """Turn ``inplace=True`` activations (ReLU, Dropout...) out of place: Opacus' backward
    hooks wrap each layer's output, and torch forbids modifying that in place. The
    arithmetic is the same."""
    for sub in model.modules():
        if getattr(sub, "inplace", False) is True:
            sub.inplace = False  # type: ignore[assignment]


def _short(module: nn.Module) -> str:
    return str(module).replace("\n", " ")
