"""Differential privacy: the mechanisms' noise, the analytic Gaussian, the queries'
declared bounds, the table release, and the ledger that charges before it releases."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from dp_accounting import (  # type: ignore[import-untyped]
    GaussianDpEvent,
    LaplaceDpEvent,
    PoissonSampledDpEvent,
    RandomizedResponseDpEvent,
    SelfComposedDpEvent,
    get_sigma_gaussian,
)
from scipy.stats import norm  # type: ignore[import-untyped]
from sqlalchemy import select

from lepton import data as lp_data
from lepton import privacy
from lepton.data import Dataset
from lepton.errors import BudgetExceededError, NoBudgetError, PrivacyError
from lepton.privacy._accounting import event_from_json, event_to_json
from lepton.storage import open_database
from lepton.storage.schema import AuditRow

DRAWS = 20_000


@pytest.fixture(scope="module")
def cancer() -> Dataset:
    return lp_data.load("breast-cancer", split="all")


def exact_delta(sigma: float, epsilon: float, sensitivity: float = 1.0) -> float:
    """Balle & Wang (2018), Theorem 8, written out independently of the library."""
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    return float(norm.cdf(a - b) - math.exp(epsilon) * norm.cdf(-a - b))


# --- mechanisms ---------------------------------------------------------------------------


def test_laplace_noise_has_the_theoretical_scale() -> None:
    release = privacy.laplace(np.zeros(DRAWS), sensitivity=2.0, epsilon=0.5, seed=0)
    b = 2.0 / 0.5
    noise = release.value
    assert noise.shape == (DRAWS,)
    assert np.std(noise) == pytest.approx(math.sqrt(2) * b, rel=0.03)
    assert np.mean(np.abs(noise)) == pytest.approx(b, rel=0.03)  # E|X| = b
    assert abs(np.mean(noise)) < 0.1 * b
    assert release.event == LaplaceDpEvent(noise_multiplier=2.0)
    assert (release.epsilon, release.delta) == (0.5, 0.0)


def test_gaussian_noise_has_the_analytic_sigma() -> None:
    release = privacy.gaussian(np.zeros(DRAWS), sensitivity=3.0, epsilon=1.0, delta=1e-5, seed=0)
    sigma = 3.0 * privacy.analytic_gaussian_sigma(1.0, 1e-5)
    assert np.std(release.value) == pytest.approx(sigma, rel=0.02)
    assert release.noise_multiplier == pytest.approx(sigma / 3.0)
    assert release.event == GaussianDpEvent(noise_multiplier=pytest.approx(sigma / 3.0))


@pytest.mark.parametrize(("epsilon", "delta"), [(0.1, 1e-5), (0.5, 1e-6), (0.9, 1e-9)])
def test_analytic_sigma_meets_the_exact_condition_below_the_classic_bound(
    epsilon: float, delta: float
) -> None:
    sigma = privacy.analytic_gaussian_sigma(epsilon, delta, sensitivity=2.0)
    assert exact_delta(sigma, epsilon, 2.0) <= delta * (1 + 1e-9)
    assert exact_delta(sigma * (1 - 1e-6), epsilon, 2.0) > delta  # the smallest such sigma
    assert sigma < privacy.classic_gaussian_sigma(epsilon, delta, sensitivity=2.0)
    # dp-accounting's own analytic calibration agrees
    assert sigma == pytest.approx(2.0 * get_sigma_gaussian(epsilon, delta), rel=1e-6)


def test_analytic_sigma_holds_beyond_epsilon_one_where_the_classic_bound_does_not() -> None:
    sigma = privacy.analytic_gaussian_sigma(4.0, 1e-6)
    assert exact_delta(sigma, 4.0) <= 1e-6 * (1 + 1e-9)
    with pytest.raises(PrivacyError, match="only for epsilon < 1"):
        privacy.classic_gaussian_sigma(4.0, 1e-6)
    with pytest.raises(PrivacyError, match="needs delta > 0"):
        privacy.analytic_gaussian_sigma(1.0, 0.0)


def test_exponential_mechanism_picks_with_the_right_probability_ratios() -> None:
    utilities, epsilon = [0.0, 1.0, 2.0], 2.0  # weights exp(eps * u / 2) = 1, e, e^2
    picks = np.bincount(
        [privacy.exponential(utilities, sensitivity=1.0, epsilon=epsilon, seed=s).value
         for s in range(DRAWS)],
        minlength=3,
    )  # fmt: skip
    assert picks[2] / picks[1] == pytest.approx(math.e, rel=0.06)
    assert picks[1] / picks[0] == pytest.approx(math.e, rel=0.08)
    expected = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert picks / DRAWS == pytest.approx(expected, abs=0.01)
    named = privacy.exponential([5, 1], sensitivity=1.0, epsilon=1.0, candidates=["a", "b"])
    assert named.value in ("a", "b")
    assert named.private


def test_randomized_response_flips_at_the_theoretical_rate() -> None:
    k, epsilon = 4, 1.0
    release = privacy.randomized_response(np.zeros(DRAWS, dtype=int), k=k, epsilon=epsilon, seed=0)
    out = release.value
    flip_rate = (k - 1) / (math.exp(epsilon) + k - 1)
    assert np.mean(out != 0) == pytest.approx(flip_rate, abs=0.015)
    others = np.bincount(out[out != 0], minlength=k)[1:]
    assert others / others.sum() == pytest.approx([1 / 3] * 3, abs=0.02)  # uniform
    assert release.event == RandomizedResponseDpEvent(
        noise_parameter=pytest.approx(k / (math.exp(epsilon) + k - 1)), num_buckets=k
    )


def test_a_seeded_release_says_it_is_not_private() -> None:
    seeded = privacy.laplace(1.0, sensitivity=1.0, epsilon=1.0, seed=7)
    again = privacy.laplace(1.0, sensitivity=1.0, epsilon=1.0, seed=7)
    assert seeded.value == again.value
    assert seeded.private is False
    assert "NOT PRIVATE" in seeded.note
    assert "NOT PRIVATE" in repr(seeded)
    assert seeded.to_dict()["private"] is False
    fresh = privacy.laplace(1.0, sensitivity=1.0, epsilon=1.0)
    assert fresh.private
    assert fresh.note == ""


# --- queries ------------------------------------------------------------------------------


def test_a_query_without_declared_bounds_is_refused_and_charges_nothing(cancer: Dataset) -> None:
    privacy.set_budget(cancer, epsilon=1.0)
    with pytest.raises(PrivacyError, match=r"no declared bounds.*never taken from the data"):
        privacy.query(cancer, "mean", column="mean radius", epsilon=0.5)
    with pytest.raises(PrivacyError, match="has no column 'age'"):
        privacy.query(cancer, "sum", column="age", bounds=(0, 100), epsilon=0.5)
    assert privacy.charges(cancer) == []


def test_queries_answer_close_to_the_truth_with_a_large_epsilon(cancer: Dataset) -> None:
    privacy.set_budget(cancer, epsilon=1000.0)
    radius = cancer.features[:, 0].double().numpy()
    lower, upper = 5.0, 30.0

    def ask(statistic: str, **kw: Any) -> privacy.Release:
        return privacy.query(cancer, statistic, column="mean radius",  # type: ignore[arg-type]
                             bounds=(lower, upper), epsilon=100.0, seed=1, **kw)  # fmt: skip

    assert ask("count").value == pytest.approx(len(radius), abs=1)
    assert ask("sum").value == pytest.approx(radius.sum(), abs=3)
    assert ask("mean").value == pytest.approx(radius.mean(), abs=0.05)
    assert ask("variance").value == pytest.approx(radius.var(), rel=0.05)
    hist = ask("histogram", bins=5)
    assert hist.value == pytest.approx(np.histogram(radius, np.linspace(5, 30, 6))[0], abs=1)
    assert hist.domain == pytest.approx(np.linspace(5, 30, 6).tolist())
    median = ask("quantile", q=0.5)
    assert median.value == pytest.approx(np.median(radius), abs=0.2)
    assert median.mechanism == "exponential"
    target = privacy.query(cancer, "histogram", column="target", categories=[0, 1],
                           epsilon=100.0, seed=2)  # fmt: skip
    assert cancer.targets is not None
    assert target.value == pytest.approx(np.bincount(cancer.targets.numpy()), abs=1)
    whats = [c.what for c in privacy.charges(cancer)]
    assert whats[0] == "count(mean radius) laplace"
    assert "quantile(mean radius) exponential" in whats


def test_bounds_declared_with_the_budget_are_used_and_values_are_clipped(
    cancer: Dataset,
) -> None:
    privacy.set_budget(cancer, epsilon=500.0, columns={"mean radius": (0.0, 10.0)})
    mean = privacy.query(cancer, "mean", column="mean radius", epsilon=200.0, seed=0)
    clipped = np.clip(cancer.features[:, 0].double().numpy(), 0, 10).mean()
    assert mean.value == pytest.approx(clipped, abs=0.05)  # clipped to the declared 10
    assert mean.value <= 10.0


# --- the ledger ---------------------------------------------------------------------------


def test_a_dataset_without_a_budget_releases_nothing(cancer: Dataset) -> None:
    with pytest.raises(NoBudgetError, match=r"no privacy budget.*set_budget\("):
        privacy.query(cancer, "count", epsilon=0.1)
    with pytest.raises(NoBudgetError, match="no privacy budget"):
        privacy.budget(cancer)


def test_the_ledger_refuses_the_query_that_would_overspend(cancer: Dataset) -> None:
    privacy.set_budget(cancer, epsilon=1.0)
    first = privacy.query(cancer, "count", epsilon=0.6)
    assert first.charge is not None
    assert first.charge.epsilon_after == pytest.approx(0.6)
    answer = None
    with pytest.raises(BudgetExceededError, match=r"spent epsilon 0\.6 of 1.*asks 0\.6.*0\.4 "
                       r"remains\. Nothing was released.*set_budget\('breast-cancer'"):  # fmt: skip
        answer = privacy.query(cancer, "count", epsilon=0.6)
    assert answer is None
    assert [c.epsilon_after for c in privacy.charges(cancer)] == [pytest.approx(0.6)]
    left = privacy.budget(cancer)
    assert left.spent == pytest.approx(0.6)
    assert left.remaining == pytest.approx(0.4)
    assert left.charges == 1
    with open_database().session() as s:
        refused = s.scalars(select(AuditRow).where(AuditRow.status == 403)).all()
        assert [r.action for r in refused] == ["privacy.charge"]
    privacy.set_budget(cancer, epsilon=1.2)  # the owner raises it: the same query now fits
    assert privacy.query(cancer, "count", epsilon=0.6).charge is not None


def test_the_history_says_who_what_and_the_epsilon_after(cancer: Dataset) -> None:
    privacy.set_budget("breast-cancer", epsilon=1.0)
    privacy.query(cancer, "count", epsilon=0.25, who="alice")
    privacy.charge(cancer.split(0.5)[0], LaplaceDpEvent(noise_multiplier=4.0), what="manual")
    history = privacy.charges("breast-cancer")
    assert [h.what for h in history] == ["count(*) laplace", "manual"]
    assert [h.epsilon_after for h in history] == [pytest.approx(0.25), pytest.approx(0.5)]
    assert history[0].who == "alice"
    assert history[0].pid > 0
    assert history[0].host
    assert event_from_json(history[1].event) == LaplaceDpEvent(noise_multiplier=4.0)


def test_the_accountant_composes_many_gaussian_releases_tighter_than_the_sum(
    cancer: Dataset,
) -> None:
    privacy.set_budget(cancer, epsilon=1.0, delta=1e-5)
    for _ in range(15):  # naively 15 x 0.1 = 1.5 > 1.0 of budget: all fit composed
        privacy.query(cancer, "count", epsilon=0.1, delta=1e-7, mechanism="gaussian")
    spent = privacy.budget(cancer)
    assert spent.charges == 15
    assert spent.spent < 0.75
    # the PLD accountant beats basic composition for Laplace releases at delta > 0
    laplace = privacy.compose([LaplaceDpEvent(noise_multiplier=10.0)] * 20, delta=1e-5)
    assert laplace.accountant == "pld"
    assert laplace.epsilon < 0.85 * 2.0
    # at delta = 0 pure epsilons add up exactly
    assert privacy.compose([LaplaceDpEvent(noise_multiplier=10.0)] * 20, 0.0).epsilon == 2.0


def test_a_dpsgd_event_is_accounted_and_round_trips_through_json() -> None:
    event = SelfComposedDpEvent(PoissonSampledDpEvent(0.004, GaussianDpEvent(1.1)), 2000)
    assert event_from_json(event_to_json(event)) == event
    privacy.set_budget("mnist", epsilon=3.0, delta=1e-5)
    paid = privacy.charge("mnist", event, what="dpsgd")
    assert paid.accountant == "pld"
    assert 0 < paid.epsilon_after < 3.0


def test_the_ledger_refuses_what_it_cannot_account_for() -> None:
    privacy.set_budget("iris", epsilon=5.0)
    with pytest.raises(PrivacyError, match="local DP"):
        privacy.charge("iris", RandomizedResponseDpEvent(0.5, 3), what="rr")
    with pytest.raises(PrivacyError, match="needs a DpEvent"):
        privacy.charge("iris", "laplace", what="not an event")  # type: ignore[arg-type]
    with pytest.raises(BudgetExceededError, match="delta=0 pays only for pure-DP"):
        privacy.charge("iris", GaussianDpEvent(5.0), what="gaussian at delta 0")
    assert privacy.charges("iris") == []


def test_budget_keys_are_catalog_names_else_fingerprints(cancer: Dataset) -> None:
    train, test = cancer.split(0.2)
    assert privacy.budget_key(train) == privacy.budget_key(test) == "breast-cancer"
    own = Dataset(np.ones((4, 2), dtype=np.float32), name="mine")
    assert privacy.budget_key(own) == own.fingerprint()
    with pytest.raises(PrivacyError, match="epsilon must be a positive"):
        privacy.set_budget(own, epsilon=0.0)


# --- the table release --------------------------------------------------------------------


def test_differential_privacy_releases_a_table_of_the_declared_columns(cancer: Dataset) -> None:
    privacy.set_budget(cancer, epsilon=1.0)
    columns = {"mean radius": (5.0, 30.0, 10), "mean texture": (5.0, 40.0, 7), "target": [0, 1]}
    table = privacy.differential_privacy(cancer, epsilon=0.1, columns=columns)
    assert table.data.feature_names == list(columns)
    assert table.counts.shape == (10, 7, 2)
    assert table.private
    assert table.epsilon == 0.1
    assert table.charge.what == "table(mean radius, mean texture, target) laplace"
    values = table.data.features.numpy()
    assert len(values) == table.rows > 0
    assert values[:, 0].min() >= 5.0
    assert values[:, 0].max() <= 30.0
    assert set(np.unique(values[:, 2])) <= {0.0, 1.0}
    assert privacy.budget(cancer).spent == pytest.approx(0.1)


def test_differential_privacy_uses_the_declared_schema_and_never_the_data(
    cancer: Dataset,
) -> None:
    privacy.set_budget(cancer, epsilon=1.0)
    with pytest.raises(PrivacyError, match="declare the columns"):
        privacy.differential_privacy(cancer, epsilon=0.1)
    privacy.set_budget(cancer, epsilon=1.0, columns={"mean area": (100, 2600, 25)})
    table = privacy.differential_privacy(cancer, epsilon=0.1, rows=100, seed=3)
    assert table.data.feature_names == ["mean area"]
    assert len(table.data) == 100
    assert table.private is False
    assert "NOT PRIVATE" in table.note
    assert cancer.feature_names is not None
    with pytest.raises(PrivacyError, match="cells"):
        privacy.differential_privacy(
            cancer, epsilon=0.1, columns={n: (0, 1, 100) for n in cancer.feature_names[:4]}
        )
    assert len(privacy.charges(cancer)) == 1
