"""The newest dashboard pages in a real browser (Debian's Chromium, through Playwright)
against a real ``lepton server``, in one session: a tiny TF-IDF classifier, an index and
an FAQ assistant registered through the SDK and the assistant deployed; on ``/text`` a
chat answer streamed into the page by ``static/lepton.js``, a search and a
classification; ``/datasets`` with a registered dataset's versions and the diff of two;
an alert rule added on ``/alerts`` firing on the deployment's page (and seen by
``lepton alerts list --firing``).

And ``/vision`` and ``/gallery``: a small digit detector (``lp.vision.Detector``, seconds
on a few hundred real MNIST digit scenes) and a small class-conditional VAE
(``lp.vision.Generator``, seconds on 4,096 real MNIST images) registered through the SDK
and deployed through the API; a held-out scene of test-split digits uploaded on
``/vision``, its boxes drawn on the image and listed as the deployment's ``/detect``
answers; images of one class on ``/gallery``, the draws of the deployment's ``/sample``.

Screenshots are kept in ``test-artifacts/dashboard/solutions-*.png`` and ``vision-*.png``.
"""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from browser import Pages, Platform, skip_without_chromium, until
from PIL import Image, ImageColor
from typer.testing import CliRunner

import lepton as lp
from lepton.cli._alerts import alerts_app
from lepton.serve._vision import _PALETTE
from lepton.vision import box_iou, digit_scenes

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
SCENE: dict[str, Any] = {"size": 32, "digit_size": (12, 20)}  # 32x32 scenes, 12-20 px digits


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


# -- /vision and /gallery ---------------------------------------------------------------


def _digits() -> lp.data.Dataset:
    """The generator's training images: 4,096 real MNIST digits."""
    return lp.data.load("mnist", split="train").subset(slice(0, 4096))


def _looks_like(images: torch.Tensor) -> list[int]:
    """The digit each ``(N, 784)`` image in [0, 1] looks like: the most common class of
    its 5 nearest training images."""
    digits = _digits()
    assert digits.targets is not None
    nearest = torch.cdist(images, digits.features.flatten(1)).topk(5, largest=False).indices
    found: list[int] = torch.mode(digits.targets[nearest], 1).values.tolist()
    return found


def _deploy(platform: Platform, name: str) -> None:
    made = httpx.post(f"{platform.url}/api/v1/deployments", timeout=30,
                      headers={"Authorization": f"Bearer {platform.admin_token}"},
                      json={"name": name, "model": f"{name}:1"})  # fmt: skip
    assert made.status_code == 201, made.text


def _register_and_deploy(platform: Platform) -> None:
    """A VAE (deployed, so that it starts while the detector trains) and a detector, both
    trained on one thread in seconds and registered in the server's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(platform.home))
        torch.manual_seed(0)
        vae = lp.vision.Generator(10, kind="vae", hidden=(128, 64), latent=8)
        vae.fit(_digits(), epochs=8, batch_size=64, lr=5e-3, num_threads=1)
        vae.register("digits-gen", dataset=None)
        _deploy(platform, "digits-gen")
        torch.manual_seed(0)
        scenes = digit_scenes("train", n=400, seed=0, digits=(1, 2), **SCENE)
        det = lp.vision.Detector(width=16, blocks=1, score_threshold=0.3)
        det.fit(scenes, epochs=10, batch_size=16, lr=5e-3, num_threads=1)
        held_out = digit_scenes("test", n=32, seed=1, digits=(1, 2), **SCENE)
        lp.register(det.model, "digits-det", metrics=det.evaluate(held_out))
        _deploy(platform, "digits-det")


def _png(pixels: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    array = (pixels[0] * 255).round().byte().numpy()  # (H, W) of a (1, H, W) image
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _data_png(uri: str | None) -> Image.Image:
    assert uri is not None
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    picture.load()  # a decodable PNG, or this raises
    return picture


def _ready(platform: Platform, name: str) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {platform.admin_token}"}
    state: dict[str, Any] = {}

    def ready() -> bool:
        found = httpx.get(f"{platform.url}/api/v1/deployments/{name}", headers=admin, timeout=30)
        state.update(found.json())
        assert state.get("state") != "failed", state
        return state.get("state") == "ready"

    until(ready, 180, f"the deployment {name} never became ready: {state}")
    return state


def _ask(platform: Platform, name: str, route: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{platform.url}/api/v1/deployments/{name}/{route}", json=body,
                        headers={"Authorization": f"Bearer {platform.admin_token}"},
                        timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_vision_draws_the_boxes_of_an_upload_and_the_gallery_draws_a_class(
    platform: Platform, browser: Any
) -> None:
    url = platform.url
    _register_and_deploy(platform)
    tab = Pages.signed_in(browser, platform, "vision")
    page = tab.page

    # (a) /vision: a held-out scene (test-split digits) uploaded, its boxes drawn and listed
    scene = digit_scenes("test", n=1, seed=5, digits=(1, 1), **SCENE)
    truth_label = scene.classes[int(scene.labels[0][0])]
    upload = _png(scene.images[0])
    page.goto(f"{url}/vision")
    assert "digits-det:1" in page.locator("#detectors").inner_text()
    form = page.locator("#detect-upload")
    form.locator("select[name=model]").select_option("digits-det:1")
    form.locator("input[name=image]").set_input_files(
        files=[{"name": "scene.png", "mimeType": "image/png", "buffer": upload}]
    )
    form.locator("button").click()
    problem = page.locator("#detect-problem")
    assert problem.count() == 0, problem.all_inner_texts()
    rows = [row.inner_text().split("\t") for row in page.locator("#detection-rows tbody tr").all()]
    assert len(rows) >= 1, page.locator("#detections").inner_text()
    heading = page.locator("#detections h2").inner_text()
    assert heading.startswith(f"{len(rows)} objects · digits-det:1"), heading
    labels = [r[0] for r in rows]
    scores = [float(r[1]) for r in rows]
    boxes = torch.tensor([[float(v) for v in r[2:6]] for r in rows])
    assert set(labels) <= {str(d) for d in range(10)}, labels
    assert all(0.3 <= s <= 1 for s in scores), scores  # the detector's own threshold
    assert scores == sorted(scores, reverse=True), scores  # best first
    assert "32x32 pixels, score threshold 0.3" in page.locator("#detections .hint").inner_text()
    # the detector finds the held-out digit: the right class on a box around its ink
    iou = box_iou(boxes, scene.boxes[0])[:, 0]
    found = [lab for lab, o in zip(labels, iou.tolist(), strict=True) if o >= 0.5]
    assert truth_label in found, (truth_label, rows, scene.boxes[0].tolist())
    # the boxes are drawn on the upload: the grey scene, enlarged, with coloured frames
    drawn = _data_png(page.locator("#detected-image").get_attribute("src")).convert("RGB")
    assert drawn.size == (256, 256)
    rgb = np.asarray(drawn).astype(int)
    coloured = (np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])) > 30
    assert coloured.sum() > 100, coloured.sum()  # an upload in grey has none
    grey = np.asarray(Image.open(io.BytesIO(upload)).resize((256, 256), Image.Resampling.NEAREST))
    assert (rgb[..., 0][~coloured] == grey[~coloured]).mean() > 0.8  # the rest is the scene
    best = ImageColor.getrgb(_PALETTE[int(labels[0]) % len(_PALETTE)])
    assert (rgb == best).all(axis=-1).sum() > 50  # drawn over the weaker guesses, not under
    tab.shot("detections")

    # (b) /gallery: images of the class asked for, each a 28x28 PNG
    page.goto(f"{url}/gallery")
    gallery = page.locator("#gallery-form")
    gallery.locator("select[name=model]").select_option("digits-gen:1")
    gallery.locator("select[name=label]").select_option("7")
    gallery.locator("input[name=n]").fill("6")
    gallery.locator("input[name=seed]").fill("3")
    gallery.locator("input[name=temperature]").fill("0.8")
    gallery.locator("button").click()
    assert page.locator("[role=alert]").count() == 0, page.locator("[role=alert]").all_inner_texts()
    figures = page.locator("#gallery figure")
    assert figures.count() == 6
    assert page.locator("#gallery figcaption").all_inner_texts() == ["7"] * 6
    pictures = [_data_png(img.get_attribute("src")) for img in figures.locator("img").all()]
    assert [(p.size, p.mode) for p in pictures] == [((28, 28), "L")] * 6
    drawn_pixels = [np.asarray(p).astype(int) for p in pictures]
    assert all(p.max() > 128 for p in drawn_pixels)  # some ink in each
    assert len({p.tobytes() for p in drawn_pixels}) == 6  # six different draws
    drawn_sevens = torch.tensor(np.stack(drawn_pixels)).flatten(1).float() / 255
    looks = _looks_like(drawn_sevens)
    assert max(set(looks), key=looks.count) == 7, looks
    assert looks.count(7) >= 3, looks  # 4 of 6 when measured (chance: 1 in 10)
    tab.shot("gallery")

    # the deployments answer as the pages showed: /detect and /sample through the API
    _ready(platform, "digits-det")
    served = _ask(platform, "digits-det", "detect",
                  {"image": base64.b64encode(upload).decode()})  # fmt: skip
    assert served["labels"] == labels
    assert served["scores"] == pytest.approx(scores, abs=0.01)  # as the page rounds them
    flat = [v for box in served["boxes"] for v in box]
    assert flat == pytest.approx(boxes.flatten().tolist(), abs=0.06)  # the page shows 1 decimal
    _ready(platform, "digits-gen")
    sampled = _ask(platform, "digits-gen", "sample",
                   {"n": 6, "label": "7", "seed": 3, "temperature": 0.8})  # fmt: skip
    assert sampled["labels"] == ["7"] * 6
    for b64, shown in zip(sampled["images"], drawn_pixels, strict=True):
        same = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)))).astype(int)
        assert np.abs(same - shown).max() <= 1  # the same draws, up to float rounding
    assert tab.errors == []
    page.context.close()
