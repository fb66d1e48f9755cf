"""The dashboard in-process: pages render, errors are pages, forms validate, nothing
unescaped reaches the HTML (the browser tests are in tests/integration/test_dashboard.py)."""

from __future__ import annotations

import re
import time
from html import unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lepton.config import get_settings
from lepton.platform._app import Platform, create_app
from lepton.platform.web._charts import time_chart
from lepton.platform.web._markdown import render_markdown
from lepton.platform.web._render import ago, num
from lepton.tracking._plot import svg_string

BASE = "http://127.0.0.1:8000"
OURS = {"origin": BASE, "accept": "text/html"}


@pytest.fixture
def browser(platform: Platform) -> Any:
    """A client signed in as the admin with the dashboard cookie, like a browser."""
    platform.auth.bootstrap(get_settings().home)
    client = TestClient(create_app(platform), base_url=BASE)
    link = platform.auth.login_link_secret(platform.auth.admin_id())
    assert client.get(f"/login?token={link}", follow_redirects=False).status_code == 303
    return client


def _alert(html: str) -> str:
    found = re.search(r'class="notice error"[^>]*>(.*?)</p>', html, re.S)
    return found.group(1) if found else ""


def test_pages_render_for_a_signed_in_admin(browser: Any) -> None:
    for path in ("/", "/datasets", "/runs", "/models", "/jobs", "/deployments", "/users"):
        page = browser.get(path)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    assert "No jobs yet: submit one above." in browser.get("/jobs").text
    assert browser.get("/static/lepton.css").headers["content-type"].startswith("text/css")
    assert browser.get("/static/..%2f_app.py").status_code == 404


def test_without_a_session_pages_redirect_and_the_api_says_401(platform: Platform) -> None:
    client = TestClient(create_app(platform), base_url=BASE)
    page = client.get("/jobs", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login-help"
    assert "lepton server --login-link" in client.get("/login-help").text
    assert client.get("/api/v1/jobs").status_code == 401
    used = client.get("/login?token=lp_wrong")
    assert used.status_code == 401
    assert "used, expired or wrong" in used.text


def test_errors_on_pages_are_pages_with_the_message(browser: Any) -> None:
    for path, status in (("/runs/999", 404), ("/models/ghost", 404), ("/jobs/7", 404)):
        page = browser.get(path, headers={"accept": "text/html"})
        assert page.status_code == status
        assert page.headers["content-type"].startswith("text/html")
        assert "Traceback" not in page.text
        assert _alert(page.text)
    assert browser.get("/runs/x").status_code == 422  # a bad path value, as a page too
    assert browser.get("/api/v1/runs/999").json()["error"]["code"] == "run_not_found"


def test_forms_show_validation_errors_and_keep_what_was_typed(
    browser: Any, platform: Platform
) -> None:
    bad = browser.post(
        "/jobs", data={"model": "nope", "data": "mnist", "epochs": "2"}, headers=OURS
    )
    assert bad.status_code == 422
    assert "unknown model" in _alert(bad.text)
    assert 'name="epochs" type="number" min="1" max="1000" value="2"' in bad.text
    worse = browser.post(
        "/jobs", data={"model": "mlp", "data": "mnist", "epochs": "x"}, headers=OURS
    )
    assert "epochs must be a whole number" in _alert(worse.text)
    tiny = {"model": "mlp", "data": "mnist", "memory_mb": "8", "cpus": "1"}
    refused = browser.post("/jobs", data=tiny, headers=OURS)
    assert refused.status_code == 422
    assert "memory_mb: Input should be greater than or equal to 16" in _alert(refused.text)
    assert 'name="memory_mb" type="number" min="16" value="8"' in refused.text
    made = browser.post(
        "/jobs",
        data={"model": "mlp", "data": "mnist", "epochs": "1", "limit": "64",
              "cpus": "0.5", "memory_mb": "512", "priority": "7"},
        headers=OURS,
        follow_redirects=False,
    )  # fmt: skip
    assert made.status_code == 303
    assert made.headers["location"] == "/jobs/1"
    slots = platform.jobs.get(1)
    assert (slots.cpus, slots.memory_mb, slots.priority) == (0.5, 512, 7)
    job = browser.get("/jobs/1").text
    assert 'data-job-state="queued"' in job
    assert 'data-log-url="/api/v1/jobs/1/logs"' in job
    not_json = browser.post("/jobs/spec", data={"spec": "{kind: tune"}, headers=OURS)
    assert not_json.status_code == 422
    assert "the spec is not JSON" in _alert(not_json.text)
    assert "{kind: tune</textarea>" in not_json.text  # what was typed, kept
    nothing = browser.post(
        "/jobs/spec", data={"spec": '{"kind": "compress", "model": "m:1", "quantize": null}'},
        headers=OURS,
    )  # fmt: skip
    assert "nothing to do: set quantize" in _alert(nothing.text)
    workers = (
        '{"kind": "tune", "workers": 2, '
        '"space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}}}'
    )
    assert "ask for cpus &gt;= 2" in _alert(
        browser.post("/jobs/spec", data={"spec": workers, "cpus": "1"}, headers=OURS).text
    )
    spec = '{"kind": "compress", "model": "mnist-convnet@production", "quantize": "dynamic"}'
    queued = browser.post(
        "/jobs/spec", data={"spec": spec, "memory_mb": "1024"}, headers=OURS,
        follow_redirects=False,
    )  # fmt: skip
    assert queued.status_code == 303
    compress = platform.jobs.get(int(queued.headers["location"].rsplit("/", 1)[1]))
    assert (compress.kind, compress.spec["quantize"], compress.memory_mb) == (
        "compress", "dynamic", 1024,
    )  # fmt: skip
    deploy = browser.post("/deployments", data={"name": "Bad Name", "model": "x"}, headers=OURS)
    assert deploy.status_code == 422
    assert "must be 1-63 characters" in _alert(deploy.text)


def test_a_cookie_post_from_another_origin_is_refused(browser: Any) -> None:
    form = {"name": "mallory", "role": "admin"}
    for headers in ({"origin": "http://evil.example"}, {}):
        refused = browser.post("/users", data=form, headers=headers)
        assert refused.status_code == 403
        assert "cross-site request refused" in refused.text
    assert "mallory" not in browser.get("/users").text


def _signed_in(platform: Platform, user_id: int) -> Any:
    client = TestClient(create_app(platform), base_url=BASE)
    link = platform.auth.login_link_secret(user_id)
    assert client.get(f"/login?token={link}", follow_redirects=False).status_code == 303
    return client


def _secret(html: str) -> str | None:
    found = re.search(r'id="token-secret">(lp_[^<]+)<', html)
    return found.group(1) if found else None


def test_a_new_token_is_shown_once(browser: Any, platform: Platform) -> None:
    made = browser.post("/users", data={"name": "alice"}, headers=OURS, follow_redirects=False)
    user_page = made.headers["location"]
    posted = browser.post(f"{user_page}/tokens", data={"name": "ci"}, headers=OURS,
                          follow_redirects=False)  # fmt: skip
    assert posted.status_code == 303  # so that a reload does not make a second token
    assert posted.headers["location"].startswith(f"{user_page}?new=")
    shown = browser.get(posted.headers["location"])
    secret = _secret(shown.text)
    assert secret is not None
    assert platform.auth.authenticate(secret) is not None
    assert _secret(browser.get(posted.headers["location"]).text) is None  # a reload: gone
    assert secret not in browser.get(user_page).text
    assert (get_settings().home / "admin-token").read_text().strip() not in shown.text
    assert len(platform.auth.list_tokens(int(user_page.rsplit("/", 1)[1]), 0, 10)[0]) == 1


def test_a_viewer_manages_its_own_tokens_and_no_one_else_s(
    browser: Any, platform: Platform
) -> None:
    vic = platform.auth.create_user("vic", "viewer")
    admin = platform.auth.admin_id()
    admin_tokens = platform.auth.list_tokens(admin, 0, 10)[1]
    viewer = _signed_in(platform, vic.id)
    assert f'href="/users/{vic.id}"' in viewer.get("/").text  # its name links to its tokens
    assert 'href="/users"' not in viewer.get("/").text
    posted = viewer.post(f"/users/{vic.id}/tokens", data={"name": "laptop"}, headers=OURS,
                         follow_redirects=False)  # fmt: skip
    own = viewer.get(posted.headers["location"])
    secret = _secret(own.text)
    assert secret is not None
    assert "Change role" not in own.text
    # An admin cannot reuse the viewer's one-time key to see the secret.
    assert _secret(browser.get(posted.headers["location"]).text) is None
    [token] = platform.auth.list_tokens(vic.id, 0, 10)[0]
    assert viewer.get(f"/users/{admin}").status_code == 403
    assert (
        viewer.post(f"/users/{admin}/tokens", data={"name": "x"}, headers=OURS).status_code == 403
    )
    assert viewer.post(f"/users/{admin}", data={"role": "viewer"}, headers=OURS).status_code == 403
    assert viewer.post(f"/tokens/{token.id}/revoke", headers=OURS).status_code == 200
    assert platform.auth.authenticate(secret) is None  # revoked
    assert platform.auth.list_tokens(admin, 0, 10)[1] == admin_tokens


def test_model_cards_render_a_safe_markdown_subset() -> None:
    html = render_markdown(
        "# m <b>\n\n_No description._ <script>alert(1)</script>\n\n## Model\n"
        "- `x<y>` and **bold**\n\n| metric | value |\n|---|---|\n| acc | 0.9 |\n"
        "\n```python\nimport <os>\n```\n| lone pipe"
    )
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<h2>m &lt;b&gt;</h2>" in html
    assert "<code>x&lt;y&gt;</code>" in html
    assert "<strong>bold</strong>" in html
    assert "<td>acc</td><td>0.9</td>" in html
    assert "<pre><code>import &lt;os&gt;</code></pre>" in html
    assert "<p>| lone pipe</p>" in html


def test_charts_are_svg_with_escaped_labels() -> None:
    now = time.time()
    chart = time_chart([(now - 5, 1.0), (now, 3.0)], title="<b>rps</b>", unit="req/s", now=now)
    assert chart.startswith("<svg")
    assert "<polyline" in chart
    assert "&lt;b&gt;rps&lt;/b&gt;" in chart
    assert chart.count("<circle") == 2
    empty = time_chart([], title="latency", unit="ms", now=now)
    assert "no requests yet" in empty
    curve = svg_string([("val_loss", [(1, 0.5), (2, 0.25)])], title="loss", y_label="loss")
    assert "<polyline" in curve
    assert curve.count("<circle") == 2


def test_numbers_and_times_are_human() -> None:
    assert num(1234567) == "1,234,567"
    assert num(0.123456) == "0.1235"
    assert num(None) == "—"
    assert num(2.0) == "2"
    assert ago(time.time() - 125) == "2 min ago"
    assert ago(None) == "—"


def test_the_audit_log_page_filters_and_pages(browser: Any, platform: Platform) -> None:
    for i in range(51):
        made = browser.post("/users", data={"name": f"user{i}"}, headers=OURS)
        assert made.status_code == 200
    refused = browser.post("/users", data={"name": "Bad Name!"}, headers=OURS)
    assert refused.status_code == 400
    page = browser.get("/audit")
    assert page.status_code == 200
    assert "52 entries" in page.text
    assert page.text.count('<td class="mono">POST /users</td>') == 50  # one page
    assert 'href="/audit?offset=50"' in page.text
    older = browser.get("/audit?offset=50").text
    assert older.count('<td class="mono">POST /users</td>') == 2
    only_refused = browser.get("/audit?refused=true").text
    assert "1 entry" in only_refused
    assert '<span class="badge failed">400</span>' in only_refused
    nobody = browser.get("/audit?actor=nobody").text
    assert "No entries match" in nobody
    assert "Audit" in browser.get("/").text  # in the admin's nav, and linked from the overview
    assert 'href="/audit"' in browser.get("/").text
    vic = platform.auth.create_user("vic", "viewer")
    viewer = _signed_in(platform, vic.id)
    assert viewer.get("/audit").status_code == 403
    assert 'href="/audit"' not in viewer.get("/").text


def test_runs_are_compared_side_by_side(browser: Any, platform: Platform) -> None:
    import lepton as lp

    ids = []
    for lr, losses in ((0.1, [2.0, 1.0, 0.5]), (0.01, [2.0, 1.8, 1.6])):
        with lp.start_run("fit", params={"lr": lr, "epochs": 3}, database=platform.db) as run:
            for step, loss in enumerate(losses):
                run.log_metric("val_loss", loss, step=step)
            run.log_metric("accuracy", 1 - losses[-1] / 4)
            ids.append(run.id)
    runs = browser.get("/runs").text
    assert f'name="id" value="{ids[0]}"' in runs  # a tick box per run, in a GET form
    page = browser.get(f"/runs/compare?id={ids[0]}&id={ids[1]}")
    assert page.status_code == 200, page.text
    params = re.search(r'<table id="compare-params">(.*?)</table>', page.text, re.S)
    assert params is not None
    assert "lr" in params.group(1)
    assert "epochs" not in params.group(1)  # the same in both: not a difference
    metrics = re.search(r'<table id="compare-metrics">(.*?)</table>', page.text, re.S)
    assert metrics is not None
    assert "0.5" in metrics.group(1)
    assert "1.6" in metrics.group(1)
    charts = re.search(r'id="compare-charts">(.*?)</section>', page.text, re.S)
    assert charts is not None
    assert charts.group(1).count("<polyline") >= 2  # one line per run on val_loss
    assert f"#{ids[0]}" in charts.group(1)
    one = browser.get(f"/runs/compare?id={ids[0]}")
    assert one.status_code == 400
    assert "pick 2 to 8 runs to compare" in one.text
    assert browser.get(f"/runs/compare?id={ids[0]}&id=999999").status_code == 404
    assert browser.get("/runs/compare?id=x&id=1").status_code == 422


def _digits_mlp(platform: Platform) -> tuple[Any, Any]:
    """A small MLP fit on the real digits data (8x8 images), registered as v1."""
    import torch

    import lepton as lp

    torch.manual_seed(0)
    train = lp.data.load("digits", split="train")
    model = lp.models.MLP(in_features=64, num_classes=10, hidden=[32])
    lp.fit(model, train, epochs=3, batch_size=64, lr=1e-2, quiet=True, seed=0)
    lp.register(model, "digits-mlp", dataset=train, database=platform.db)
    return model.eval(), lp.data.load("digits", split="test")


def _wait_measured(ref: str, file: str) -> None:
    from lepton.platform.web import _measure

    deadline = time.monotonic() + 120
    while _measure.state(ref, file)[0]:
        assert time.monotonic() < deadline, f"{file} of {ref} did not finish"
        time.sleep(0.05)
    assert _measure.state(ref, file)[1] is None, _measure.state(ref, file)[1]


def _cell(html: str, version: int, cls: str, batch: str | None = None) -> str:
    row = re.search(rf'<tr id="version-{version}">(.*?)</tr>', html, re.S)
    assert row is not None, html
    extra = rf' data-batch="{batch}"' if batch else ""
    cell = re.search(rf'<td class="[^"]*\b{cls}\b[^"]*"[^>]*{extra}>(.*?)</td>', row.group(1), re.S)
    assert cell is not None, row.group(1)
    return re.sub(r"<[^>]+>", "", cell.group(1)).strip()


def test_versions_are_compared_with_measured_figures_and_lineage(
    browser: Any, platform: Platform
) -> None:
    import lepton as lp
    from lepton import registry
    from lepton.platform.web import _measure

    _digits_mlp(platform)
    _, report = lp.compress.quantize(
        "digits-mlp:1", "static", calibration="digits", test="digits", database=platform.db
    )
    assert report.registered == "digits-mlp:2"
    assert 'href="/models/digits-mlp/compare"' in browser.get("/models/digits-mlp").text
    # a page about a model version still says which Lepton it is, not the version's repr
    footer = browser.get("/models/digits-mlp/1").text.split("<footer>")[1]
    assert footer.startswith(f"Lepton {lp.__version__} ·"), footer[:200]
    page = browser.get("/models/digits-mlp/compare")
    assert page.status_code == 200, page.text
    assert _cell(page.text, 1, "format") == "pytorch fp32"
    assert _cell(page.text, 2, "format") == "onnx int8 (static, qdq)"
    v1, v2 = (registry.resolve(f"digits-mlp:{n}", database=platform.db) for n in (1, 2))
    for v, row in ((v1, 1), (v2, 2)):
        size = sum(f["size"] for f in v.manifest["files"].values())
        assert f'data-bytes="{size}"' in page.text
        assert _cell(page.text, row, "latency", "1") == "not measured"
    # the compress step's own figures: int8 accuracy, and the original's on the same rows
    assert report.accuracy_after is not None
    assert report.accuracy_before is not None
    assert _cell(page.text, 2, "accuracy") == f"{100 * report.accuracy_after:.2f}%"
    assert _cell(page.text, 1, "accuracy") == f"{100 * report.accuracy_before:.2f}%"
    tree = re.search(
        r'<pre class="mono lineage-tree" id="lineage-tree">(.*?)</pre>', page.text, re.S
    )
    assert tree is not None
    lines = [line for line in tree.group(1).splitlines() if line.strip()]
    assert lines[0].startswith("v1  pytorch fp32")
    assert lines[1].startswith("└── v2  onnx int8 (static, qdq)  ← quantize static")

    started = browser.post("/models/digits-mlp/2/benchmark", headers=OURS, follow_redirects=False)
    assert started.status_code == 303
    _wait_measured("digits-mlp:2", _measure.BENCHMARK)
    bench = _measure.stored(v2, _measure.BENCHMARK)
    assert bench is not None
    assert bench["latency_ms"]["1"] > 0
    assert bench["latency_ms"]["64"] > 0
    page = browser.get("/models/digits-mlp/compare").text
    for b in ("1", "64"):
        assert _cell(page, 2, "latency", b) == f"{bench['latency_ms'][b]:.3f} ms"
    assert _cell(page, 1, "latency", "1") == "not measured"
    # the benchmark measures the int8 model on the same 359 test rows as compress did
    assert bench["test_rows"] == 359
    assert bench["accuracy"] == pytest.approx(report.accuracy_after, abs=1e-6)  # float32
    api = browser.get("/api/v1/models/digits-mlp/versions/2/figures").json()
    assert api["benchmark"] == bench
    assert api["importance"] is None
    assert api["registration"]["max_abs_diff"] == pytest.approx(report.max_abs_diff)
    viewer_cannot = browser.post("/models/digits-mlp/1/benchmark", headers={"accept": "text/html"})
    assert viewer_cannot.status_code == 403  # no Origin: a cross-site form is refused
    assert browser.get("/models/ghost/compare").status_code == 404


def _png(pixels: Any) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    array = (pixels.reshape(8, 8).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_explain_panel_returns_a_heatmap_for_an_uploaded_png(
    browser: Any, platform: Platform
) -> None:
    import base64
    import io

    import torch
    from PIL import Image

    model, test = _digits_mlp(platform)
    png = _png(test.features[0])
    from lepton.serve._types import Image as Decoded

    x = Decoded.from_bytes(png).to_tensor(channels=1, size=(8, 8))
    with torch.inference_mode():
        expected = int(model(x.unsqueeze(0)).argmax())
    page = browser.post(
        "/models/digits-mlp/1/explain",
        files={"image": ("digit.png", png, "image/png")},
        data={"method": "integrated_gradients"},
        headers=OURS,
    )
    assert page.status_code == 200, _alert(page.text)
    label = re.search(r'id="explained-label">(.*?)</span>', page.text)
    assert label is not None
    assert label.group(1) == str(expected)
    heatmap = re.search(r'id="explain-heatmap"[^>]*src="data:image/png;base64,([^"]+)"', page.text)
    assert heatmap is not None
    image = Image.open(io.BytesIO(base64.b64decode(heatmap.group(1))))
    assert image.format == "PNG"
    assert image.width > 8
    empty = browser.post("/models/digits-mlp/1/explain", data={"method": "saliency"}, headers=OURS)
    assert empty.status_code == 422
    assert "choose an image file" in _alert(empty.text)
    bad = browser.post(
        "/models/digits-mlp/1/explain",
        files={"image": ("x.png", b"not an image", "image/png")},
        headers=OURS,
    )
    assert bad.status_code == 422
    assert "not a PNG or JPEG" in _alert(bad.text)


def test_tabular_versions_explain_rows_and_show_global_importances(
    browser: Any, platform: Platform
) -> None:
    import torch

    import lepton as lp
    from lepton import registry
    from lepton.platform.web import _measure

    raw = lp.data.load("iris", split="train")
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=4, num_classes=3, hidden=[16])
    lp.fit(model, raw.standardize(), epochs=30, batch_size=16, lr=3e-2, quiet=True, seed=0)
    lp.register(model, "iris", dataset=raw.standardize(), database=platform.db)
    version = registry.resolve("iris:1", database=platform.db)
    page = browser.get("/models/iris/1").text
    assert "Not measured yet." in page
    row = ", ".join(f"{v:g}" for v in raw.features[0].tolist())
    answer = browser.post(
        "/models/iris/1/explain", data={"row": row, "method": "saliency"}, headers=OURS
    )
    assert answer.status_code == 200, _alert(answer.text)
    features = re.search(r'<table id="explain-features">(.*?)</table>', answer.text, re.S)
    assert features is not None
    assert features.group(1).count("<tr><td>") == 4
    assert "petal width (cm)" in features.group(1)  # named from the dataset
    assert 'id="explain-heatmap"' in answer.text  # the feature bars, as a PNG
    short = browser.post("/models/iris/1/explain", data={"row": "1, 2"}, headers=OURS)
    assert short.status_code == 422
    assert "[4]" in _alert(short.text)

    started = browser.post("/models/iris/1/importance", headers=OURS, follow_redirects=False)
    assert started.status_code == 303
    _wait_measured("iris:1", _measure.IMPORTANCE)
    stored = _measure.stored(version, _measure.IMPORTANCE)
    assert stored is not None
    assert stored["test_data"] == "iris"
    top = stored["features"][0]
    assert top["name"].startswith("petal")  # iris is told apart by its petals
    assert top["importance"] > 0.1  # shuffling them costs accuracy
    page = browser.get("/models/iris/1").text
    table = re.search(r'<table id="importance">(.*?)</table>', page, re.S)
    assert table is not None
    assert table.group(1).index(top["name"]) < table.group(1).index(stored["features"][1]["name"])
    assert "Global feature importance" in page  # the card's new section
    card = browser.get("/api/v1/models/iris/versions/1/card").json()["markdown"]
    assert f"| {top['name']} | {top['importance']:.4f} |" in card


# -- the Graph pages (lp.graph embeddings) --------------------------------------------------


def _graph_model(name: str = "tiny-kg") -> Any:
    """A tiny DistMult on hand-made triples, one entity label made to break HTML."""
    import lepton as lp
    from lepton.graph import Embedding, TripleSplits

    evil = '<script>alert("x")</script>'
    rows = [("alice", "knows", "bob"), ("bob", "knows", "carol"), ("carol", "likes", evil),
            ("alice", "likes", "carol"), (evil, "knows", "alice"),
            ("dave", "likes", "bob")]  # fmt: skip
    emb = Embedding("distmult", dim=4, epochs=3, num_threads=1).fit(
        TripleSplits.from_labels("tiny", rows)
    )
    assert emb.model is not None
    lp.register(emb.model, name, metrics={"mrr": 0.5, "hits@10": 1.0})
    return emb


def test_the_graph_pages_list_train_search_predict_and_draw(
    browser: Any, platform: Platform
) -> None:
    import html as html_lib

    import lepton as lp

    emb = _graph_model()
    lp.register(lp.models.MLP(in_features=4, num_classes=3), "not-a-graph")
    listing = browser.get("/graph")
    assert listing.status_code == 200
    assert "/models/tiny-kg/1/graph" in listing.text
    assert "not-a-graph" not in listing.text
    assert 'id="submit-graph"' in listing.text
    assert 'id="graphs-link"' in browser.get("/models").text
    assert 'id="graph-link"' in browser.get("/models/tiny-kg/1").text

    bad = browser.post("/graph", data={"dataset": "nations", "dim": "0"}, headers=OURS)
    assert bad.status_code == 422
    assert "dim: Input should be greater than or equal to 1" in _alert(bad.text)
    assert 'name="dim" type="number" min="1" value="0"' in bad.text  # kept
    made = browser.post(
        "/graph", data={"dataset": "umls", "model": "rotate", "epochs": "3", "register_as": "u"},
        headers=OURS, follow_redirects=False,
    )  # fmt: skip
    assert made.status_code == 303
    job = platform.jobs.get(int(made.headers["location"].rsplit("/", 1)[1]))
    assert (job.kind, job.spec["dataset"], job.spec["model"], job.spec["register"]) == (
        "graph", "umls", "rotate", "u",
    )  # fmt: skip
    assert browser.get(made.headers["location"]).status_code == 200  # the job's page

    page = browser.get("/models/tiny-kg/1/graph", params={"entity": "alice", "relation": "likes",
                                                          "k": 3, "q": "CAR"})  # fmt: skip
    assert page.status_code == 200, page.text
    text = page.text
    assert "<script>" not in text  # the evil label is escaped everywhere, the SVG too
    assert "&lt;script&gt;" in text
    assert re.search(r'<ul id="entity-hits">\s*<li><a [^>]*>carol</a>', text)  # search
    cells = re.findall(r"<tr><td>\d+</td><td><a [^>]*>(.*?)</a></td><td>", text.split(
        'id="links"', 1)[1].split("</table>", 1)[0])  # fmt: skip
    assert [html_lib.unescape(c) for c in cells] == [
        e for e, _ in emb.predict_tail("alice", "likes", k=3)
    ]
    svg = text.split('<div id="neighbourhood">', 1)[1].split("</svg>", 1)[0]
    assert svg.startswith("<svg")
    assert " style=" not in svg
    assert "<script" not in svg
    # alice's neighbours: bob and carol (out), the evil one (in), each a link to its view
    assert svg.count("<circle") == 4
    assert "entity=bob" in svg
    assert "entity=carol" in svg
    assert "→ knows" in svg
    assert "← knows" in svg
    unknown = browser.get("/models/tiny-kg/1/graph", params={"entity": "zed"})
    assert unknown.status_code == 200
    assert "entity &#39;zed&#39; is not known" in _alert(unknown.text)
    assert "is not an entity of this model" in unknown.text
    not_graph = browser.get("/models/not-a-graph/1/graph", headers={"accept": "text/html"})
    assert not_graph.status_code == 404
    assert "is not a graph embedding" in _alert(not_graph.text)


def _release_error(html: str) -> str:
    found = re.search(r'id="release-error">(.*?)</p>', html, re.S)
    return unescape(found.group(1)) if found else ""


def _stopped_iris(platform: Platform, versions: int = 1) -> None:
    """Deployment ``iris`` of a really registered (untrained) model's version 1, stopped:
    everything but a process."""
    import lepton as lp
    from lepton import registry
    from lepton.platform.deployments._store import DeploymentStore

    for _ in range(versions):
        lp.register(lp.models.MLP(in_features=4, num_classes=3, hidden=[4]), "tiny",
                    database=platform.db)  # fmt: skip
    store = DeploymentStore(platform.db, "127.0.0.1")
    store.insert(
        name="iris", model_ref="tiny:1", version=registry.resolve("tiny:1", database=platform.db),
        replicas=1, user="test", port_for=lambda taken: 8199,
    )  # fmt: skip
    store.update("iris", None, desired="stopped", state="stopped")


def test_the_release_panel_refuses_bad_input_and_releases_a_version(
    browser: Any, platform: Platform
) -> None:
    """A stopped deployment of a really registered model with two versions: no process is
    needed to release (the version is pinned for its next start); a canary needs one, so
    the core refuses it on a stopped deployment, and the page says so."""
    _stopped_iris(platform, versions=2)
    page = browser.get("/deployments/iris")
    assert page.status_code == 200
    assert "No canary: tiny:1 serves all the traffic" in page.text
    assert '<option value="tiny:2">' in page.text  # the other versions, to pick from
    assert '<option value="tiny:1">' not in page.text

    def refused(form: dict[str, str]) -> str:
        answer = browser.post("/deployments/iris/release", data=form, headers=OURS)
        assert answer.status_code == 422, answer.text
        for field, typed in form.items():  # what was typed is kept
            assert f'name="{field}"' in answer.text
            assert f'value="{typed}"' in answer.text
        assert platform.deployments.get("iris").version == 1  # nothing changed
        assert platform.deployments.canaries.of("iris") is None
        return _release_error(answer.text)

    assert refused({"model": "2", "share": "1.5"}) == "share: Input should be less than 1"
    assert "share: Input should be a valid number" in refused({"model": "2", "share": "ten"})
    assert "promote_after_s: Input should be greater than or equal to 0" in refused(
        {"model": "2", "share": "0.1", "promote_after_s": "-5"}
    )
    assert "promote after goes with a canary share" in refused(
        {"model": "2", "promote_after_s": "60"}
    )
    assert "deployment 'iris' is stopped; start it before a canary" in refused(
        {"model": "2", "share": "0.1"}
    )
    assert "tiny:9" in refused({"model": "9"})  # no such version: the registry's message
    assert platform.deployments.list()[1] == 1  # and no iris-canary was made

    done = browser.post("/deployments/iris/release", data={"model": "tiny:2"}, headers=OURS,
                        follow_redirects=False)  # fmt: skip
    assert done.status_code == 303, _release_error(done.text)
    assert done.headers["location"] == "/deployments/iris"
    assert platform.deployments.get("iris").ref == "tiny:2"
    page = browser.get("/deployments/iris")
    assert "No canary: tiny:2 serves all the traffic" in page.text
    assert '<option value="tiny:1">' in page.text

    for path in ("/deployments/iris/canary/promote", "/deployments/iris/canary/abort"):
        none = browser.post(path, headers=OURS)
        assert none.status_code == 404
        assert "deployment 'iris' has no canary" in unescape(_alert(none.text))
    assert browser.post("/deployments/nope/release", data={"model": "2"}, headers=OURS
                        ).status_code == 404  # fmt: skip
    viewer = _signed_in(platform, platform.auth.create_user("vera", "viewer").id)
    assert 'id="release-form"' not in viewer.get("/deployments/iris").text
    refused_viewer = viewer.post("/deployments/iris/release", data={"model": "1"}, headers=OURS)
    assert refused_viewer.status_code == 403
    assert platform.deployments.get("iris").ref == "tiny:2"


def test_the_deployment_page_charts_drift_over_time(
    browser: Any, platform: Platform, tmp_path: Any
) -> None:
    """Real drift reports of logged iris inputs (one feature moved), stored as the AIOps
    loop stores them, a report without a verdict between them: the page charts the share
    of features drifted over their span and lists them newest first, as the API does."""
    import json

    import lepton as lp
    from lepton.serve._predlog import PredictionLog, PredictionLogConfig

    _stopped_iris(platform)
    assert "Drift over time" not in browser.get("/deployments/iris").text  # none yet
    writer = PredictionLog(PredictionLogConfig(dir=str(tmp_path / "predictions"), rate=1.0))
    for row in lp.data.load("iris", split="test").features.tolist():
        writer.offer("/predict", json.dumps({"inputs": [*row[:3], row[3] + 3]}).encode(), b"{}")
    writer.close()
    lineage = {
        "dataset": {
            "name": "iris",
            "fingerprint": lp.data.load("iris", split="train").fingerprint(),
        }
    }
    watch, state = platform.deployments.aiops.drift, platform.deployments.aiops.state
    watch.check("iris", "tiny:1", lineage, tmp_path)
    report = watch.report("iris")
    assert report is not None
    assert report["drifted"]
    watch.check("iris", "tiny:0", {}, tmp_path)  # no lineage: a report without a verdict
    now = time.time()
    state.add_report("iris", {**report, "at": now - 700})  # the same report, 700 s earlier
    state.add_report("iris", {**report, "at": now})  # and now: newest is by time computed

    page = browser.get("/deployments/iris")
    assert page.status_code == 200
    chart = re.search(r'<div id="drift-history-chart">(.*?)</div>', page.text, re.S)
    assert chart is not None
    assert 'aria-label="Features drifted"' in chart.group(1)
    assert "-15 min" in chart.group(1)  # 700 s of history: an axis of 15 whole minutes
    points = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', chart.group(1))
    assert len(points) == 3  # the report without a verdict is not a point
    assert len({y for _, y in points}) == 1  # the same share each time
    table = re.search(r'<table class="table" id="drift-history">(.*?)</table>', page.text, re.S)
    assert table is not None
    rows = re.findall(r"<tr><td>(.*?)</tr>", table.group(1), re.S)
    assert len(rows) == 4
    share = len(report["drifted_features"]) / len(report["features"])
    assert f"of 4 ({num(100 * share)}%)" in rows[0]
    assert "x3 ks" in rows[0]
    assert "records no training dataset" in unescape(rows[1])
    assert "tiny:0" in rows[1]
    assert "30 vs 120" in rows[3]

    api = browser.get("/api/v1/deployments/iris/drift/history", params={"limit": 3}).json()
    assert [r["at"] for r in api][::2] == [now, report["at"]]  # newest first
    assert api[1]["error"]
    assert api[1]["drifted"] is None
    assert api[0]["share_drifted"] == share
    assert api[0]["top"][0]["name"] == "x3"
    assert browser.get("/api/v1/deployments/iris/drift/history?limit=0").status_code == 422
