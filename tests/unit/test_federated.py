"""lepton.federated: partitions, client-side DP and Flower simulations on real digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("dp_accounting")

import lepton as lp
from lepton.errors import FederatedError
from lepton.federated import ClientDP, label_counts, partition
from lepton.federated._dp import ledger_key, privatize
from lepton.federated.recipe import FederatedConfig
from lepton.train.recipe import build_model


@pytest.fixture(scope="module")
def digits() -> tuple[lp.data.Dataset, lp.data.Dataset]:
    return lp.data.load("digits", split="train"), lp.data.load("digits", split="test")


# -- partitions -------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_cover_every_row_once_and_are_reproducible(digits, scheme) -> None:
    train, _ = digits
    a = partition(train, 5, scheme=scheme, alpha=0.5, seed=3)
    b = partition(train, 5, scheme=scheme, alpha=0.5, seed=3)
    c = partition(train, 5, scheme=scheme, alpha=0.5, seed=4)
    assert sum(len(p) for p in a) == len(train)
    rows = np.concatenate([p.features.numpy().reshape(len(p), -1) for p in a])
    assert len(np.unique(rows, axis=0)) == len(np.unique(train.features.numpy(), axis=0))
    assert all(np.array_equal(x.targets, y.targets) for x, y in zip(a, b, strict=True))
    assert any(len(x) != len(y) or not np.array_equal(x.targets, y.targets)
               for x, y in zip(a, c, strict=True))  # fmt: skip
    assert [p.name for p in a] == [f"digits/client-{i}" for i in range(5)]


def test_dirichlet_skews_labels_more_as_alpha_shrinks(digits) -> None:
    train, _ = digits

    def skew(alpha: float) -> float:  # mean share of each client's largest class
        counts = label_counts(partition(train, 5, scheme="dirichlet", alpha=alpha, seed=0))
        return float(np.mean([max(c.values()) / sum(c.values()) for c in counts]))

    iid = label_counts(partition(train, 5, scheme="iid", seed=0))
    assert all(len(c) == 10 for c in iid)
    assert skew(0.1) > skew(0.5) > skew(100.0)
    assert skew(100.0) < 0.2 < 0.35 < skew(0.1)


def test_shards_give_each_client_about_two_classes(digits) -> None:
    train, _ = digits
    counts = label_counts(partition(train, 5, scheme="shards", seed=0))
    for c in counts:  # two shards, each at most 2 classes (a shard may straddle a border)
        assert len(c) <= 4
        top2 = sorted(c.values(), reverse=True)[:2]
        assert sum(top2) / sum(c.values()) > 0.8


def test_partition_refuses_what_it_cannot_do(digits) -> None:
    train, _ = digits
    with pytest.raises(FederatedError, match="too few"):
        partition(train.subset(slice(0, 30)), 5)
    with pytest.raises(FederatedError, match="unknown partition scheme"):
        partition(train, 3, scheme="random")  # type: ignore[arg-type]
    diabetes = lp.data.load("diabetes", split="train")
    with pytest.raises(FederatedError, match="no class labels"):
        partition(diabetes, 3, scheme="dirichlet")


# -- client-side DP ---------------------------------------------------------------------
def test_privatize_clips_the_update_and_adds_calibrated_noise() -> None:
    g = [np.zeros((200, 50), np.float32), np.zeros(1000, np.float32)]
    local = [np.full((200, 50), 0.5, np.float32), np.full(1000, -0.5, np.float32)]
    norm0 = float(np.sqrt(10000 * 0.25 + 1000 * 0.25))
    quiet = ClientDP(clip=1.0, noise_multiplier=0.0, seed=1)
    out, norm = privatize(local, g, quiet, salt=0)
    assert norm == pytest.approx(norm0, rel=1e-6)
    clipped = np.sqrt(sum(float((o.astype(np.float64) ** 2).sum()) for o in out))
    assert clipped == pytest.approx(1.0, rel=1e-5)  # scaled down to the clip norm
    assert out[0].dtype == np.float32
    noisy = ClientDP(clip=2.0, noise_multiplier=0.5, seed=1)
    out, _ = privatize(g, g, noisy, salt=0)  # a zero update: only noise
    values = np.concatenate([o.ravel() for o in out])
    assert values.std() == pytest.approx(0.5 * 2.0, rel=0.03)
    again, _ = privatize(g, g, noisy, salt=0)
    other, _ = privatize(g, g, noisy, salt=1)
    assert np.array_equal(again[1], out[1])
    assert not np.array_equal(other[1], out[1])
    fresh = ClientDP(clip=2.0, noise_multiplier=0.5)  # no seed: CSPRNG, never repeats
    assert not np.array_equal(privatize(g, g, fresh, 0)[0][1], privatize(g, g, fresh, 0)[0][1])


def test_client_dp_accounting_and_ledger_keys() -> None:
    dp = ClientDP(clip=1.0, noise_multiplier=1.2, ledger="hospital")
    assert dp.event_sigma == pytest.approx(0.6)  # sensitivity 2 * clip
    assert ledger_key(dp, 3) == "hospital/client-3"
    named = ClientDP(ledger=("a", "b"))
    assert ledger_key(named, 1) == "b"
    with pytest.raises(FederatedError, match="one key per client"):
        ledger_key(named, 2)
    assert ledger_key(ClientDP(), 0) is None
    with pytest.raises(FederatedError, match="clip must be positive"):
        ClientDP(clip=0)
    assert ClientDP.from_json(named.to_json()) == named


def test_config_is_strict_with_defaults() -> None:
    config = FederatedConfig.checked(data="MNIST", clients=3)
    assert (config.data, config.strategy, config.partition, config.alpha) == (
        "mnist", "fedavg", "dirichlet", 0.5)  # fmt: skip
    with pytest.raises(lp.errors.ConfigError, match="clients"):
        FederatedConfig.checked(clients=1)
    with pytest.raises(lp.errors.ConfigError, match="strategy"):
        FederatedConfig.checked(strategy="fedsgd")
    with pytest.raises(lp.errors.ConfigError, match="rounds"):
        FederatedConfig.checked(rounds="3")


# -- simulations (Flower's Simulation Runtime, Ray actors) --------------------------------
@pytest.mark.slow
def test_fedprox_simulation_learns_and_is_tracked(digits, tmp_path: Path) -> None:
    train, test = digits
    parts = partition(train, 3, scheme="dirichlet", alpha=1.0, seed=0)
    model = build_model("mlp", train, {})
    seen: list[int] = []
    result = lp.federated.run(
        model, parts, test=test, rounds=2, strategy="fedprox", proximal_mu=0.01,
        local_epochs=2, lr=3e-3, folder=tmp_path / "job", run_name="fl-unit",
        on_round=lambda r: seen.append(r.round),
    )  # fmt: skip
    accs = [r.accuracy or 0.0 for r in result.rounds]
    assert seen == [0, 1, 2]
    assert accs[0] < 0.3
    assert accs[2] > 0.75
    assert accs[2] > accs[1] - 0.05
    assert all(r.clients_replied == 3 and r.bytes_up > 0 for r in result.rounds[1:])
    assert lp.evaluate(result.model, test)["accuracy"] == pytest.approx(accs[2], abs=1e-6)
    history = lp.tracking.metric_history(result.run_id, "global_accuracy")
    assert [s for s, _ in history] == [0, 1, 2]
    assert lp.tracking.get_run(result.run_id).params["strategy"] == "fedprox"


@pytest.mark.slow
def test_fedadam_with_client_dp_samples_subsets_and_charges_each_participation(
    digits, tmp_path: Path
) -> None:
    from lepton.privacy import budget, charges, set_budget
    from lepton.storage import open_database

    train, test = digits
    parts = partition(train, 4, scheme="iid", seed=1)
    url = str(open_database().url)
    keys = [f"digits-fl/client-{i}" for i in range(4)]
    for key in keys:
        set_budget(key, epsilon=100.0, delta=1e-5)
    dp = ClientDP(clip=0.5, noise_multiplier=2.0, ledger="digits-fl", database=url, seed=0)
    model = build_model("mlp", train, {})
    result = lp.federated.run(
        model, parts, test=test, rounds=2, strategy="fedadam", fraction_fit=0.5, min_fit=2,
        server_lr=3e-2, local_epochs=1, lr=3e-3, dp=dp, folder=tmp_path / "job", track=False,
    )  # fmt: skip
    assert [r.clients_sampled for r in result.rounds[1:]] == [2, 2]
    assert [r.clients_replied for r in result.rounds[1:]] == [2, 2]
    assert all(r.accuracy is not None and 0 <= r.accuracy <= 1 for r in result.rounds)
    # one GaussianDpEvent(noise_multiplier / 2) per client per round it was sampled in
    made = [charges(key) for key in keys]
    assert sum(len(c) for c in made) == 4
    for key, c in zip(keys, made, strict=True):
        spent = budget(key).spent
        assert (spent > 0) == bool(c)
        assert all("GaussianDpEvent" in json.dumps(x.event) and "1.0" in json.dumps(x.event)
                   for x in c)  # fmt: skip


def test_processes_mode_needs_a_zoo_model(digits) -> None:
    import torch

    train, test = digits
    parts = partition(train, 2, seed=0)
    with pytest.raises(FederatedError, match="zoo model"):
        lp.federated.run(torch.nn.Linear(64, 10), parts, test=test, mode="processes")


@pytest.mark.slow
def test_secure_aggregation_gives_fedavgs_model_without_showing_one_update(
    digits, tmp_path: Path
) -> None:
    """SecAgg+ (masked, quantized updates; the server only unmasks their sum) ends at the
    same global model as plain FedAvg from the same start, within the quantization step."""
    import torch

    train, test = digits
    parts = partition(train, 3, scheme="iid", seed=2)
    ends = {}
    for secure in (False, True):
        torch.manual_seed(0)
        model = build_model("mlp", train, {})
        result = lp.federated.run(
            model, parts, test=test, rounds=1, local_epochs=2, lr=3e-3, track=False,
            secure_aggregation=secure, folder=tmp_path / f"job-{secure}",
        )  # fmt: skip
        assert [r.clients_replied for r in result.rounds[1:]] == [3]
        assert result.rounds[-1].accuracy is not None
        assert result.rounds[-1].accuracy > result.rounds[0].accuracy + 0.2  # it learns
        ends[secure] = (result.model.state_dict(), result.rounds)
    plain, secure_state = ends[False][0], ends[True][0]
    gap = max((plain[k] - secure_state[k]).abs().max().item() for k in plain)
    # masked and quantized (a step of 2 * 64 / 2**24 = 7.6e-6), yet the same average
    assert 0 < gap < 1e-4
    # masks and key shares cost more upload than the bare update
    assert ends[True][1][1].bytes_up > ends[False][1][1].bytes_up
    with pytest.raises(FederatedError, match="3 or more clients"):
        lp.federated.run(build_model("mlp", train, {}), parts[:2], test=test,
                         secure_aggregation=True, track=False)  # fmt: skip
