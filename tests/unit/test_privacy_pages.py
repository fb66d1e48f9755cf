"""The privacy-budget pages and API, on a real ledger in the platform's database: the
budgets list with what each dataset spent, one dataset's spent-over-time chart and its
charges, and the JSON errors for a dataset without a budget."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from dp_accounting import LaplaceDpEvent

from lepton import privacy
from lepton.platform._app import Platform


@pytest.fixture
def spent(platform: Platform) -> None:
    """diabetes: epsilon 1, two Laplace releases of epsilon 0.2 each; wine: untouched."""
    privacy.set_budget("diabetes", epsilon=1.0, delta=1e-6, database=platform.db, who="ann")
    privacy.set_budget("wine", epsilon=2.0, database=platform.db, who="bob")
    for what in ("count", "mean(<script>age</script>)"):  # what= is user text: escaped
        privacy.charge("diabetes", LaplaceDpEvent(5.0), what=what, database=platform.db)


def test_budgets_page_lists_each_dataset_with_what_it_spent(client: Any, spent: None) -> None:
    page = client.get("/privacy")
    assert page.status_code == 200
    rows = page.text.split('id="budgets"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<a href="/privacy/([a-z]+)"', rows) == ["diabetes", "wine"]
    diabetes, wine = rows.split("<tr>")[2:4]
    assert ">0.4<" in diabetes
    assert ">0.6<" in diabetes
    assert 'aria-label="40% of the budget spent"' in diabetes
    assert 'aria-label="0% of the budget spent"' in wine
    assert "by ann" in diabetes
    assert "by bob" in wine


def test_ledger_page_draws_spent_against_budget_and_lists_the_charges(
    client: Any, spent: None
) -> None:
    page = client.get("/privacy/diabetes")
    assert page.status_code == 200
    text = page.text
    assert re.search(r'id="spent">0\.4<', text)
    assert re.search(r'id="remaining">0\.6<', text)
    chart = re.search(r'id="chart-spent">(<svg\b.*?</svg>)', text, re.S)
    assert chart is not None
    svg = ET.fromstring(chart.group(1))
    assert "epsilon spent" in ET.tostring(svg, encoding="unicode")
    charges = text.split('id="charges"', 1)[1].split("</table>", 1)[0]
    assert charges.count("<tr>") == 3  # header + 2 charges, oldest first
    assert charges.index(">count<") < charges.index("mean(")
    assert "<script>" not in charges
    assert "&lt;script&gt;" in charges
    assert charges.count(">Laplace<") == 2


def test_untouched_budget_has_no_chart_and_says_so(client: Any, spent: None) -> None:
    text = client.get("/privacy/wine").text
    assert 'id="chart-spent"' not in text
    assert "Nothing charged yet" in text


def test_budgets_api_matches_the_ledger(client: Any, spent: None, platform: Platform) -> None:
    listed = client.get("/api/v1/privacy/budgets").json()
    assert listed["total"] == 2
    by_name = {b["dataset"]: b for b in listed["items"]}
    ledger = privacy.budget("diabetes", database=platform.db)
    assert by_name["diabetes"]["spent"] == pytest.approx(ledger.spent)
    assert by_name["diabetes"]["charges"] == 2
    one = client.get("/api/v1/privacy/budgets/diabetes").json()
    assert [c["what"] for c in one["charges"]] == ["count", "mean(<script>age</script>)"]
    assert one["charges"][-1]["epsilon_after"] == pytest.approx(ledger.spent)


def test_dataset_without_a_budget_is_a_json_404_and_a_page_404(client: Any) -> None:
    answer = client.get("/api/v1/privacy/budgets/nope")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    assert "set_budget" in answer.json()["error"]["message"]
    page = client.get("/privacy/nope")
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    assert "<h1>Privacy budgets</h1>" in client.get("/privacy").text
    assert "No dataset has a privacy budget yet" in client.get("/privacy").text
