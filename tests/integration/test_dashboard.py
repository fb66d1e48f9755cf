"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real
``lepton server``: sign in, add a user and a token, train, register, deploy, predict, and
read the metrics, all by clicking; plus the refusals (no cookie, another origin).

Screenshots of every page visited are kept in ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import ARTIFACTS, Pages, Platform, skip_without_chromium
from browser import until as _until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled", "lost")

skip_without_chromium()


def _digit_png(path: Path) -> int:
    """A real MNIST test digit as a PNG; returns its label."""
    from PIL import Image

    import lepton as lp

    x, y = lp.data.load("mnist", split="test")[0]
    pixels = (x.squeeze(0).clamp(0, 1) * 255).round().byte().numpy()
    Image.fromarray(pixels, mode="L").save(path)
    return int(y)


def test_the_whole_flow_clicked_through_the_dashboard(
    platform: Platform, browser: Any, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Pages(context.new_page(), "flow")
    page = tab.page
    url = platform.url
    admin = {"authorization": f"Bearer {platform.admin_token}"}

    # Sign in with the one-time link: it lands on the overview with an HttpOnly cookie.
    page.goto(platform.login_link())
    assert page.url == f"{url}/"
    assert page.locator("h1").inner_text() == "Overview"
    cookie = next(c for c in context.cookies() if c["name"] == "lepton_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    tab.shot("overview")

    # A user and a token, made on /users; the secret shows once and works.
    page.click("nav >> text=Users")
    page.fill("#create-user input[name=name]", "alice")
    page.select_option("#create-user select[name=role]", "editor")
    page.click("#create-user button")
    assert re.search(r"/users/\d+$", page.url)
    user_page = page.url
    page.fill("#create-token input[name=name]", "laptop")
    page.click("#create-token button")
    secret = page.locator("#token-secret").inner_text().strip()
    assert secret.startswith("lp_")
    me = httpx.get(f"{url}/api/v1/me", headers={"authorization": f"Bearer {secret}"})
    assert me.json()["name"] == "alice"
    assert me.json()["role"] == "editor"
    tab.shot("user-token")
    page.reload()  # the form answered with a redirect: a reload shows it no more
    assert secret not in page.content()
    assert (
        len(
            httpx.get(
                f"{url}/api/v1/users/{user_page.rsplit('/', 1)[1]}/tokens", headers=admin
            ).json()["items"]
        )
        == 1
    )  # and made no second token
    page.goto(user_page)  # visited again, the page shows no secret
    assert secret not in page.content()
    assert "laptop" in page.locator("#tokens").inner_text()

    # A tiny training job, submitted on /jobs, watched live until it succeeds.
    page.click("nav >> text=Jobs")
    assert "No jobs yet" in page.content()
    tab.shot("jobs-empty")
    page.select_option("#submit-job select[name=model]", "mlp")
    page.select_option("#submit-job select[name=data]", "mnist")
    page.fill("#submit-job input[name=epochs]", "2")
    page.fill("#submit-job input[name=limit]", "512")
    page.click("#submit-job button")
    assert re.search(r"/jobs/\d+$", page.url)
    job_id = int(page.url.rsplit("/", 1)[1])
    ended = ", ".join(f'[data-job-state="{s}"]' for s in TERMINAL)
    page.locator(ended).wait_for(timeout=180_000)  # the page reloads itself at the end
    log = page.locator("#job-log")
    _until(lambda: log.inner_text() != "loading…", 30, "the log never loaded")
    state = page.get_attribute("[data-job-state]", "data-job-state")
    assert state == "succeeded", log.inner_text()
    assert "epoch" in log.inner_text()
    tab.shot("job-succeeded")

    # Register it from the job page: the version page shows metrics, lineage and its card.
    page.fill("#register-job input[name=name]", "mnist-mlp")
    page.click("#register-job button")
    assert page.url.endswith("/models/mnist-mlp/1")
    body = page.locator("main").inner_text()
    assert "Lineage" in body
    assert "mnist" in body
    assert "fingerprint" in body
    assert f"job #{job_id}" in body
    assert "Model card" in body
    tab.shot("model-version")
    page.select_option("select[name=stage]", "production")
    page.click("text=Set stage")
    assert "production" in page.locator("table.kv").first.inner_text() + page.content()
    stage = httpx.get(f"{url}/api/v1/models/mnist-mlp/versions/1", headers=admin).json()
    assert stage["stage"] == "production"

    # A second, long job, cancelled from its page: its process stops, its state says so.
    page.click("nav >> text=Jobs")
    page.select_option("#submit-job select[name=model]", "mlp")
    page.select_option("#submit-job select[name=data]", "mnist")
    page.fill("#submit-job input[name=epochs]", "200")
    page.click("#submit-job button")
    long_job = int(page.url.rsplit("/", 1)[1])
    job_api = f"{url}/api/v1/jobs/{long_job}"
    _until(lambda: httpx.get(job_api, headers=admin).json()["state"] == "running", 60,
           "the long job never started")  # fmt: skip
    page.reload()
    page.click("text=Cancel job")
    page.locator('[data-job-state="cancelled"]').wait_for(timeout=60_000)
    tab.shot("job-cancelled")
    cancelled = httpx.get(job_api, headers=admin).json()
    assert cancelled["state"] == "cancelled"
    page.goto(f"{url}/models/mnist-mlp/1")
    page.click("nav >> text=Models")
    tab.shot("models")
    page.click("text=mnist-mlp")
    tab.shot("model")

    # The run it came from draws its curves as inline SVG.
    page.goto(f"{url}/models/mnist-mlp/1")
    page.click("a:has-text('run #')")
    assert re.search(r"/runs/\d+$", page.url)
    assert page.locator(".charts svg polyline").count() >= 1
    tab.shot("run")
    page.click("nav >> text=Runs")
    tab.shot("runs")
    page.click("nav >> text=Datasets")
    assert "mnist-mlp:1" in page.locator("main").inner_text()
    tab.shot("datasets")

    # Deploy it from /deployments (the form blocks until the deployment has started).
    page.click("nav >> text=Deployments")
    page.fill("#create-deployment input[name=name]", "digits")
    page.fill("#create-deployment input[name=model]", "mnist-mlp:1")
    page.click("#create-deployment button", timeout=150_000)
    page.wait_for_url(f"{url}/deployments/digits", timeout=150_000)
    tab.shot("deployment-new")

    # Try it: upload a real MNIST digit; the answer is a digit.
    png = tmp_path / "digit.png"
    _digit_png(png)
    page.set_input_files("#try-it input[name=image]", str(png))
    page.click("#try-it button")
    label = page.locator("#predicted-label").inner_text(timeout=60_000)
    assert label in {str(d) for d in range(10)}, page.locator("main").inner_text()

    for _ in range(2):  # a little more traffic, for the chart
        time.sleep(1)
        page.set_input_files("#try-it input[name=image]", str(png))
        page.click("#try-it button")
        page.locator("#predicted-label").wait_for()

    # The live figures count the requests, and the chart is redrawn from the metrics API.
    requests = page.locator("[data-metric=requests_total]")
    _until(lambda: requests.inner_text().isdigit() and int(requests.inner_text()) >= 3, 30,
           "the metrics never counted the predictions")  # fmt: skip
    time.sleep(2)  # one more poll of the page's script
    assert page.locator("#chart-rps svg polyline").count() == 1
    tab.shot("deployment-predicted")
    page.click("nav >> text=Deployments")
    tab.shot("deployments")
    page.click("nav >> text=Overview")
    assert "POST /jobs" in page.locator("main").inner_text()  # the audit log, for admins
    tab.shot("overview-after")
    page.click("nav >> text=Audit")
    page.select_option("#audit-filter select[name=actor]", "admin")
    page.click("#audit-filter button")
    assert page.url.endswith("/audit?actor=admin")
    audit = page.locator("#audit").inner_text()
    assert "POST /jobs/{job_id}/register" in audit
    assert "POST /users/{user_id}/tokens" in audit
    tab.shot("audit")

    # No secret ever reached a page: neither the session nor the admin token.
    for path in ("/", "/users", "/users/1", f"/jobs/{job_id}", "/deployments/digits", "/studies"):
        page.goto(f"{url}{path}")
        html = page.content()
        assert cookie["value"] not in html
        assert platform.admin_token not in html
    assert not tab.errors, tab.errors

    # Scale to 2 replicas, stop, start, delete: each by its button, each seen in the API.
    page.goto(f"{url}/deployments/digits")
    page.fill("#scale input[name=replicas]", "2")
    page.click("#scale button", timeout=150_000)
    _until(lambda: _deployment(url, admin)["state"] == "ready", 120, "never scaled")
    assert _deployment(url, admin)["replicas"] == 2
    page.set_input_files("#try-it input[name=image]", str(png))
    page.click("#try-it button")
    assert page.locator("#predicted-label").inner_text(timeout=60_000) == label
    page.click("#lifecycle >> text=Stop", timeout=60_000)
    assert _deployment(url, admin)["desired"] == "stopped"
    assert "Start" in page.locator("#lifecycle").inner_text()
    page.click("#lifecycle >> text=Start", timeout=150_000)
    _until(lambda: _deployment(url, admin)["state"] == "ready", 120, "never restarted")
    page.once("dialog", lambda dialog: dialog.accept())  # "Delete deployment digits?"
    page.click("#lifecycle >> text=Delete", timeout=60_000)
    assert page.url == f"{url}/deployments"
    assert httpx.get(f"{url}/api/v1/deployments/digits", headers=admin).status_code == 404
    assert not tab.errors, tab.errors

    # Signing out ends the session: the next page asks to sign in again.
    page.click("text=Sign out")
    assert page.url == f"{url}/login-help"
    page.goto(f"{url}/jobs")
    assert page.url == f"{url}/login-help"
    context.close()


def _deployment(url: str, headers: dict[str, str]) -> Any:
    return httpx.get(f"{url}/api/v1/deployments/digits", headers=headers).json()


def test_without_a_session_pages_ask_to_sign_in_and_the_api_says_401(
    platform: Platform, browser: Any
) -> None:
    context = browser.new_context()
    tab = Pages(context.new_page(), "signed-out")
    for path in ("/", "/jobs", "/users"):
        tab.page.goto(f"{platform.url}{path}")
        assert tab.page.url == f"{platform.url}/login-help"
        assert "lepton server --login-link" in tab.page.content()
    tab.shot("sign-in")
    assert not tab.errors, tab.errors
    used = tab.page.goto(f"{platform.url}/login?token=lp_not-a-real-token")
    assert used.status == 401
    assert "used, expired or wrong" in tab.page.content()
    tab.shot("sign-in-expired")
    assert httpx.get(f"{platform.url}/api/v1/jobs").status_code == 401
    context.close()


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (
            f'<!doctype html><form method="post" action="{self.target}/jobs">'
            '<input name="model" value="mlp"><input name="data" value="mnist">'
            '<button id="go">win a prize</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_a_cross_origin_form_post_with_a_valid_cookie_is_refused(
    platform: Platform, browser: Any
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(platform.login_link())
    cookie = next(c for c in context.cookies() if c["name"] == "lepton_session")
    headers = {"authorization": f"Bearer {platform.admin_token}"}
    before = httpx.get(f"{platform.url}/api/v1/jobs", headers=headers).json()["total"]

    # Another port of 127.0.0.1 is the same *site* (the Strict cookie goes along) but
    # another *origin*: only the Origin check stands between it and the dashboard.
    _AttackerPage.target = platform.url
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.click("#go")
        assert answer.value.status == 403
        assert "cross-site request refused" in page.content()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "cross-site-refused.png"))
    finally:
        attacker.shutdown()

    # The same with a script: a foreign Origin (or none) with the valid cookie is 403.
    jar = {"lepton_session": cookie["value"]}
    for origin in ({"origin": "http://evil.example"}, {}):
        refused = httpx.post(
            f"{platform.url}/jobs", data={"model": "mlp", "data": "mnist"}, cookies=jar,
            headers=origin,
        )  # fmt: skip
        assert refused.status_code == 403
    after = httpx.get(f"{platform.url}/api/v1/jobs", headers=headers).json()["total"]
    assert after == before
    context.close()


def test_the_explain_panel_shows_a_heatmap_beside_the_prediction(
    platform: Platform, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upload an MNIST digit (28x28) to a model of 8x8 digits: the panel resizes it as
    the version records, and the browser shows the prediction and the heatmap image."""
    import torch

    import lepton as lp

    monkeypatch.setenv("LEPTON_HOME", str(platform.home))  # the server's registry
    torch.manual_seed(0)
    train = lp.data.load("digits", split="train")
    model = lp.models.MLP(in_features=64, num_classes=10, hidden=[32])
    lp.fit(model, train, epochs=3, batch_size=64, lr=1e-2, quiet=True, seed=0)
    version = lp.register(model, "digits-explain", dataset=train)
    png = tmp_path / "digit.png"
    _digit_png(png)

    tab = Pages.signed_in(browser, platform, "explain")
    page = tab.page
    page.goto(f"{platform.url}/models/digits-explain")
    page.click("#compare-link")
    assert page.locator("#compare-versions td.format").first.inner_text() == "pytorch fp32"
    tab.shot("compare")
    page.goto(f"{platform.url}/models/{version.name}/{version.version}")
    page.set_input_files("#explain-form input[name=image]", str(png))
    page.select_option("#explain-form select[name=method]", "integrated_gradients")
    page.click("#explain-form button")
    heatmap = page.locator("#explain-heatmap")
    heatmap.wait_for(timeout=60_000)
    assert page.locator("#explained-label").inner_text() in [str(d) for d in range(10)]
    assert heatmap.evaluate("img => img.complete && img.naturalWidth") > 8  # decoded, drawn
    box = heatmap.bounding_box()
    assert box is not None
    assert box["width"] > 8
    tab.shot("explained")
    assert tab.errors == []  # no CSP refusal of the data: image, no script error
    page.context.close()


def test_the_graph_page_trains_searches_predicts_and_draws_a_neighbourhood(
    platform: Platform, browser: Any
) -> None:
    """Submit a ``graph`` job from /graph, then on the registered embedding's page: find an
    entity, predict its links, see its neighbourhood drawn and the entities like it."""
    from lepton.graph import load_triples

    try:
        nations = load_triples("nations")
    except Exception as exc:  # DataSourceMissingError: pykeen's files are not installed
        pytest.skip(f"Nations is not installed: {exc}")
    tab = Pages.signed_in(browser, platform, "graph")
    page = tab.page
    page.goto(f"{platform.url}/graph")
    page.select_option("#submit-graph select[name=dataset]", "nations")
    page.select_option("#submit-graph select[name=model]", "distmult")
    page.fill("#submit-graph input[name=dim]", "8")
    page.fill("#submit-graph input[name=epochs]", "2")
    page.fill("#submit-graph input[name=register_as]", "nations-kg")
    page.click("#submit-graph button")
    assert re.search(r"/jobs/\d+$", page.url), page.url
    ended = ", ".join(f'[data-job-state="{s}"]' for s in TERMINAL)
    page.locator(ended).wait_for(timeout=180_000)
    log = page.locator("#job-log")
    _until(lambda: log.inner_text() != "loading…", 30, "the log never loaded")
    assert page.get_attribute("[data-job-state]", "data-job-state") == "succeeded", log.inner_text()
    tab.shot("job")

    page.goto(f"{platform.url}/graph")
    row = page.locator("#graph-models tbody tr").first
    assert row.locator("td").nth(2).inner_text() == "distmult"
    row.locator("a").click()
    assert page.url.endswith("/models/nations-kg/1/graph"), page.url
    page.fill("#search-entities input[name=q]", "US")  # labels match case-insensitively
    page.click("#search-entities button")
    hits = page.locator("#entity-hits li").all_inner_texts()
    assert "usa" in hits, hits
    page.locator("#entity-hits a", has_text="usa").click()
    page.select_option("#predict-link select[name=relation]", "economicaid")
    page.fill("#predict-link input[name=k]", "5")
    page.click("#predict-link button")
    tails = page.locator("#links tbody tr")
    assert tails.count() == 5
    known = {t for h, r, t in nations.labels(nations.all) if (h, r) == ("usa", "economicaid")}
    shown = [tails.nth(i).locator("td").nth(1).inner_text() for i in range(5)]
    marked = [tails.nth(i).locator("td").nth(3).inner_text() for i in range(5)]
    assert [m == "yes" for m in marked] == [s in known for s in shown]  # "known" is the truth
    svg = page.locator("#neighbourhood svg")
    assert svg.count() == 1
    assert svg.locator("text", has_text="usa").count() >= 1
    similar = page.locator("#similar tbody tr")
    assert similar.count() > 0
    assert "usa" not in similar.all_inner_texts()[0].split()  # itself is not "like" itself
    tab.shot("entity")
    # an entity in the neighbourhood is a link to its own page
    page.locator("#neighbourhood a").first.click()
    assert "entity=" in page.url
    assert tab.errors == []
    page.context.close()
