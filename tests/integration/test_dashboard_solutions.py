"""The newest dashboard pages in a real browser (Debian's Chromium, through Playwright)
against a real ``lepton server``, in one session: a tiny TF-IDF classifier, an index and
an FAQ assistant registered through the SDK and the assistant deployed; on ``/text`` a
chat answer streamed into the page by ``static/lepton.js``, a search and a
classification; ``/datasets`` with a registered dataset's versions and the diff of two;
an alert rule added on ``/alerts`` firing on the deployment's page (and seen by
``lepton alerts list --firing``).

Screenshots are kept in ``test-artifacts/dashboard/solutions-*.png``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from browser import Pages, Platform, skip_without_chromium, until
from typer.testing import CliRunner

import lepton as lp
from lepton.cli._alerts import alerts_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

skip_without_chromium()

FAQ = [
    ("How do I register a model?", "Call lp.register(model, 'name'): it stores the weights."),
    ("How do I deploy a model?", "Run lepton deploy NAME: it serves the version over HTTP."),
]
GLOSSES = ["a small domesticated feline; a cat", "a motor vehicle with four wheels"]
REVIEWS = [
    ("a triumph, moving and funny", "fresh"),
    ("a delight from start to end", "fresh"),
    ("dull, long and lifeless", "rotten"),
    ("a tedious, lifeless mess", "rotten"),
]


def _register(platform: Platform) -> None:
    """The versions and dataset the pages show, registered through the SDK in the
    server's home (tiny data: seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(platform.home))
        lp.text.Assistant(FAQ, threshold=0.4).register("helpdesk")
        index = lp.text.Index("exact")
        index.add(GLOSSES)
        index.register("glosses")
        texts, labels = zip(*REVIEWS, strict=True)
        lp.text.TextClassifier(encoder="tfidf").fit(list(texts), list(labels)).register("reviews")
        iris = lp.data.load("iris", split="train")  # 120 rows
        lp.data.register(iris.subset(range(0, 100)), "tiny-iris")
        lp.data.register(iris.subset(range(10, 120)), "tiny-iris", derived_from="tiny-iris@1")


def test_text_chat_streams_datasets_diff_and_an_alert_fires_on_a_deployment(
    platform: Platform, browser: Any
) -> None:
    url, admin = platform.url, {"Authorization": f"Bearer {platform.admin_token}"}
    _register(platform)
    made = httpx.post(f"{url}/api/v1/deployments", headers=admin,
                      json={"name": "helpdesk", "model": "helpdesk:1"})  # fmt: skip
    assert made.status_code == 201, made.text  # it starts while the pages are read

    tab = Pages.signed_in(browser, platform, "solutions")
    page = tab.page

    # (a) /text: the chat answer streams into the page (no reload), search and classify
    page.goto(f"{url}/text")
    page.fill("#chat-form input[name=message]", "how can I put my model in the registry?")
    page.click("#chat-form button")
    said = page.locator("#turns li").last
    until(lambda: FAQ[0][1] in said.inner_text(), 60, "the streamed answer never appeared")
    assert page.url == f"{url}/text"  # lepton.js asked /text/chat: the page stayed
    assert said.inner_text().startswith("You: how can I put my model in the registry?")
    assert page.locator("#chat-form input[name=history]").count() == 1  # the next turn's context
    tab.shot("text-chat")
    page.fill("#search-form input[name=q]", "a kitten")
    page.click("#search-form button")
    assert GLOSSES[0] in page.locator("#hits tbody tr").first.inner_text()
    page.fill("#classify-form input[name=text]", "moving and funny")
    page.click("#classify-form button")
    assert page.locator("#predictions tbody td strong").inner_text() == "fresh"
    tab.shot("text-search-classify")

    # (b) /datasets: the registered dataset, its versions, and the diff of the two
    page.goto(f"{url}/datasets")
    page.click("#registered >> text=tiny-iris")
    assert page.url.startswith(f"{url}/datasets/tiny-iris")
    versions = page.locator("#versions").inner_text()
    assert "tiny-iris@1" in versions
    assert "tiny-iris@2" in versions
    tab.shot("dataset")
    page.click("#diff-form button")
    rows = page.locator("#diff-rows").inner_text()
    assert "100 → 110" in rows, rows
    assert re.search(r"added\s+20\b", rows), rows
    assert re.search(r"removed\s+10\b", rows), rows
    assert re.search(r"unchanged\s+90\b", rows), rows
    tab.shot("dataset-diff")

    # (c) a rule added on /alerts fires on the deployment, shown on its page
    page.goto(f"{url}/alerts")
    page.fill("#add-rule input[name=name]", "idle")
    page.select_option("#add-rule select[name=deployment]", "helpdesk")
    page.select_option("#add-rule select[name=metric]", "rps")
    page.select_option("#add-rule select[name=op]", "<")
    page.fill("#add-rule input[name=threshold]", "1000")
    page.click("#add-rule button")
    assert "idle" in page.locator("#rules").inner_text()

    def firing() -> bool:
        page.goto(f"{url}/deployments/helpdesk")
        table = page.locator("#deployment-alerts")
        return table.count() == 1 and "firing" in table.inner_text()

    until(firing, 150, "the rule never fired on the deployment's page (rules watch ready ones)")
    assert page.locator("#deployment-alerts .badge.firing").count() == 1
    # an assistant answers on /chat: its page says so, not an image upload for /predict
    assert page.locator("#try-it").count() == 0
    assert (
        "/api/v1/deployments/helpdesk/chat" in page.locator("#try-elsewhere + .hint").inner_text()
    )
    page.click("#try-elsewhere a")
    assert page.url == f"{url}/text"
    page.goto(f"{url}/deployments/helpdesk")
    assert "idle" in page.locator("#deployment-alerts").inner_text()
    assert "< 1,000" in page.locator("#deployment-alerts").inner_text() or "< 1000" in (
        page.locator("#deployment-alerts").inner_text()
    )
    tab.shot("deployment-alert")
    page.goto(f"{url}/alerts")
    assert "firing" in page.locator("#alerts").inner_text()

    token = platform.home / "admin-token"
    listed = CliRunner().invoke(
        alerts_app, ["list", "--firing", "--json", "--url", url, "--token-file", str(token)]
    )
    assert listed.exit_code == 0, listed.output
    assert [(a["rule"], a["deployment"]) for a in json.loads(listed.output)] == [
        ("idle", "helpdesk")
    ]
    assert tab.errors == []
    page.context.close()
