"""The detector's platform parts: a registered ``lp.vision.Detector`` loaded back through
the registry alone, its served ``/detect`` and ``/info`` through the real ASGI app
in-process (boxes in the sent image's own pixels), the ``detect`` job spec, the Vision
dashboard page, and ``lepton vision detect predict`` drawing the boxes into a PNG.

One detector is trained once for the module on a handful of real MNIST digit scenes
(seconds on one thread) and registered in a home of the module's own.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

import lepton as lp
from lepton.config import get_settings
from lepton.errors import ConfigError, VisionError
from lepton.platform._app import Platform, ServerConfig, create_app
from lepton.platform.jobs._specs import DetectJob, JobRequest, JobSpec
from lepton.serve._by_model import SERVICES, service_for_model
from lepton.serve._vision import DETECTOR_ARCHITECTURES, DetectionService
from lepton.storage import open_database
from lepton.vision import CenterNet, Detector, Scenes, box_iou, digit_scenes
from lepton.vision.recipe import DetectConfig, ScenesRecord, run

BASE = "http://127.0.0.1:8000"
OURS = {"origin": BASE, "accept": "text/html"}

# -- the config and the job spec ------------------------------------------------------------


def test_the_job_spec_is_the_config_plus_its_kind() -> None:
    assert DetectJob().model_dump(exclude={"kind"}) == DetectConfig().model_dump()
    body = {"spec": {"kind": "detect", "epochs": 2, "width": 16, "register": "digits-det"}}
    req = JobRequest.model_validate(body)
    assert isinstance(req.spec, DetectJob)
    assert (req.spec.epochs, req.spec.width, req.spec.register_as) == (2, 16, "digits-det")
    assert req.spec.train_scenes == DetectConfig().train_scenes
    stored = req.spec.model_dump(mode="json", by_alias=True)
    assert stored["register"] == "digits-det"
    assert TypeAdapter(JobSpec).validate_python(stored) == req.spec


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"size": 30}, "multiple of 4"),
        ({"size": 8}, "size"),
        ({"dataset": "cifar10"}, "dataset"),
        ({"train_scenes": 2}, "train_scenes"),
        ({"width": 4}, "width"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"register": "Bad Name!"}, "register"),
        ({"coco": "/etc"}, "coco"),  # a server path is never a spec field
    ],
)
def test_the_spec_refuses_what_the_recipe_cannot_run(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        DetectJob.model_validate({"kind": "detect", **values})


def test_checked_config_errors_and_a_missing_registrar() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        DetectConfig.checked(epochs=0)
    with pytest.raises(ConfigError, match="registrar"):
        run(DetectConfig.checked(register="digits-det"))


# -- one detector, trained and registered ----------------------------------------------------


class Trained(NamedTuple):
    home: Path
    scenes: Scenes
    det: Detector


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    home = tmp_path_factory.mktemp("vision-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        mp.delenv("LEPTON_DATA_DIR", raising=False)
        torch.manual_seed(0)
        few = digit_scenes("train", n=6, seed=0, size=32, digits=(1, 2), digit_size=(12, 20))
        det = Detector(width=16, blocks=1, score_threshold=0.25)
        # the handful of scenes learnt by heart: enough boxes to check the served pixels
        det.fit(few, epochs=60, batch_size=6, lr=5e-3, schedule=None, num_threads=1)
        version = lp.register(det, "digits-det", metrics=det.evaluate(few),
                              dataset=ScenesRecord(few))  # fmt: skip
        assert version.ref == "digits-det:1"
        yield Trained(home, few, det)


@pytest.fixture
def home(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEPTON_HOME", str(trained.home))
    return trained.home


def test_a_registered_detector_loads_back_with_its_classes_size_and_thresholds(
    trained: Trained, home: Path
) -> None:
    version = lp.registry.resolve("digits-det:1")
    architecture = version.manifest["architecture"]
    assert architecture["name"] == "vision-centernet"
    config = architecture["config"]
    assert config["classes"] == [str(i) for i in range(10)]
    assert (config["input_size"], config["width"], config["blocks"]) == ([32, 32], 16, 1)
    assert (config["score_threshold"], config["iou_threshold"]) == (0.25, 0.5)
    assert version.manifest["input_schema"]["shape"] == [1, 32, 32]
    assert version.manifest["dataset"]["rows"] == 6
    assert set(version.manifest["files"]) == {"model.safetensors"}  # no pickle
    assert version.manifest["metrics"]["map_50"] >= 0.8
    assert isinstance(lp.load_model("digits-det:1"), CenterNet)
    back = Detector.load("digits-det:1")
    assert (back.classes, back.input_size, back.model.score_threshold) == (
        trained.det.classes, (32, 32), 0.25,
    )  # fmt: skip
    for ours, theirs in zip(
        back.predict(trained.scenes.images), trained.det.predict(trained.scenes.images), strict=True
    ):
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
    with pytest.raises(VisionError, match="vision-centernet"):
        Detector.from_model(lp.models.MLP(in_features=4, num_classes=3))  # type: ignore[arg-type]


# -- /detect in-process ----------------------------------------------------------------------


def _png(scene: torch.Tensor, size: tuple[int, int] | None = None) -> bytes:
    """One ``(1, H, W)`` scene as PNG bytes, resized to ``size`` = (width, height)."""
    from PIL import Image

    pil = Image.fromarray((scene[0] * 255).round().byte().numpy(), mode="L")
    if size is not None:
        pil = pil.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def _calls(app: Any, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """Each ``(method, path, request options)`` through the app in-process, in order."""

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [await c.request(m, path, **options) for m, path, options in calls]

    return asyncio.run(scenario())


def test_detect_answers_boxes_in_the_sent_images_own_pixels(trained: Trained, home: Path) -> None:
    service = service_for_model("digits-det:1")
    assert isinstance(service, DetectionService)
    assert SERVICES.keys() >= DETECTOR_ARCHITECTURES
    app = service.asgi()
    scene = trained.scenes.images[0]
    big = _png(scene, (96, 64))  # 3x as wide, 2x as tall as the 32x32 training scenes
    encoded = base64.b64encode(big).decode()
    json_answer, raw, upload, strict, bad, info = _calls(app, [
        ("POST", "/detect", {"json": {"image": encoded}}),
        ("POST", "/detect", {"content": big, "headers": {"content-type": "image/png"}}),
        ("POST", "/detect", {"files": {"image": ("s.png", big, "image/png")},
                             "data": {"max_detections": "1"}}),
        ("POST", "/detect", {"json": {"image": encoded, "score_threshold": 1.0}}),
        ("POST", "/detect", {"json": {"image": encoded, "score_threshold": 2}}),
        ("GET", "/info", {}),
    ])  # fmt: skip
    for answer in (json_answer, raw, upload, strict, info):
        assert answer.status_code == 200, answer.text
    found = json_answer.json()
    assert (found["width"], found["height"]) == (96, 64)
    assert raw.json() == found  # the same image as a raw body: the same answer
    truth = trained.scenes.boxes[0] * torch.tensor([3.0, 2.0, 3.0, 2.0])
    truth_labels = sorted(str(i) for i in trained.scenes.labels[0].tolist())
    assert sorted(found["labels"]) == truth_labels
    assert found["label_ids"] == [int(x) for x in found["labels"]]
    assert all(s >= 0.25 for s in found["scores"])  # the recorded threshold
    iou = box_iou(torch.tensor(found["boxes"]), truth)
    assert bool((iou.max(dim=1).values > 0.5).all()), (found["boxes"], truth)
    assert max(b[2] for b in found["boxes"]) > 32  # in the 96-pixel image, not the 32 one
    assert len(upload.json()["boxes"]) == 1
    assert upload.json()["boxes"][0] == found["boxes"][0]
    assert strict.json()["boxes"] == []
    assert bad.status_code == 422
    assert "score_threshold" in bad.text
    described = info.json()
    assert (described["ref"], described["input_size"], described["routes"]) == (
        "digits-det:1", [32, 32], ["/detect"],
    )  # fmt: skip


def test_detect_refuses_what_is_not_an_image(trained: Trained, home: Path) -> None:
    app = DetectionService("digits-det:1").asgi()
    (text,) = _calls(app, [("POST", "/detect", {"json": {"image": "bm90IGFuIGltYWdl"}})])
    assert text.status_code == 422
    assert "not a PNG or JPEG image" in text.text


# -- the CLI ---------------------------------------------------------------------------------


def test_the_cli_predict_writes_a_png_with_the_boxes(
    trained: Trained, home: Path, tmp_path: Path
) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from lepton.cli._app import app

    picture = tmp_path / "scene.png"
    picture.write_bytes(_png(trained.scenes.images[0], (64, 64)))
    out = tmp_path / "boxes.png"
    result = CliRunner().invoke(app, ["vision", "detect", "predict", str(picture), "--model",
                                      "digits-det:1", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{len(trained.scenes.boxes[0])} objects in scene.png (64x64)" in result.output
    drawn = Image.open(out)
    assert drawn.format == "PNG"
    assert drawn.mode == "RGB"
    assert drawn.size == (256, 256)  # a small image is enlarged to keep labels readable
    colours = {c for _, c in drawn.getcolors(maxcolors=100_000) or []}
    assert any(r != g or g != b for r, g, b in colours)  # boxes in colour on a grey scene
    both = CliRunner().invoke(app, ["vision", "detect", "predict", str(picture), "--model",
                                    "digits-det:1", "--url", "http://127.0.0.1:9"])  # fmt: skip
    assert isinstance(both.exception, ConfigError)
    assert "exactly one of --model REF or --url URL" in both.exception.message


# -- the dashboard page ----------------------------------------------------------------------


@pytest.fixture
def browser(home: Path) -> tuple[Any, Platform]:
    """A client signed in as the admin with the dashboard cookie, like a browser."""
    platform = Platform(open_database(), get_settings().home, ServerConfig(manage=False))
    platform.auth.bootstrap(get_settings().home)
    client = TestClient(create_app(platform), base_url=BASE)
    link = platform.auth.login_link_secret(platform.auth.admin_id())
    assert client.get(f"/login?token={link}", follow_redirects=False).status_code == 303
    return client, platform


def _alert(html: str) -> str:
    found = re.search(r'class="notice error"[^>]*>(.*?)</p>', html, re.S)
    return found.group(1) if found else ""


def test_the_vision_page_lists_detects_draws_and_keeps_what_was_typed(
    trained: Trained, browser: tuple[Any, Platform]
) -> None:
    client, platform = browser
    lp.register(lp.models.MLP(in_features=4, num_classes=3), "not-a-detector")
    listing = client.get("/vision")
    assert listing.status_code == 200
    assert 'href="/vision"' in listing.text  # the nav link
    assert "digits-det:1" in listing.text
    assert "not-a-detector" not in listing.text
    assert 'id="submit-detect"' in listing.text

    scene = client.get("/vision", params={"model": "digits-det:1", "scene": "3",
                                          "score_threshold": "0.2"})  # fmt: skip
    assert scene.status_code == 200, _alert(scene.text)
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', scene.text)
    assert 'name="score_threshold" value="0.2"' in scene.text  # kept
    assert scene.text.count("<script") == 1  # lepton.js only: the drawing is a PNG
    assert "style=" not in scene.text

    png = _png(trained.scenes.images[0], (64, 48))
    uploaded = client.post("/vision", data={"model": "digits-det:1"},
                           files={"image": ("s.png", png, "image/png")}, headers=OURS)  # fmt: skip
    assert uploaded.status_code == 200, _alert(uploaded.text)
    rows = re.findall(r"<tr><td>(\d)</td><td>", uploaded.text)
    assert sorted(rows) == sorted(str(i) for i in trained.scenes.labels[0].tolist())
    assert "64x48 pixels" in uploaded.text

    bad = client.post("/vision", data={"model": "digits-det:1", "score_threshold": "7"},
                      files={"image": ("s.png", png, "image/png")}, headers=OURS)  # fmt: skip
    assert bad.status_code == 422
    assert "score threshold is a number in [0, 1]" in _alert(bad.text)
    assert 'name="score_threshold" value="7"' in bad.text  # kept
    not_one = client.get("/vision", params={"model": "not-a-detector:1", "scene": "1"})
    assert "is not an object detector" in _alert(not_one.text)

    refused = client.post("/vision/train", data={"train_scenes": "3", "epochs": "2"},
                          headers=OURS)  # fmt: skip
    assert refused.status_code == 422
    assert "train_scenes: Input should be greater than or equal to 8" in _alert(refused.text)
    assert 'name="train_scenes" type="number" min="8" value="3"' in refused.text  # kept
    made = client.post("/vision/train", data={"epochs": "2", "register_as": "det"},
                       headers=OURS, follow_redirects=False)  # fmt: skip
    assert made.status_code == 303
    job = platform.jobs.get(int(made.headers["location"].rsplit("/", 1)[1]))
    assert (job.kind, job.spec["epochs"], job.spec["register"]) == ("detect", 2, "det")


# -- classification with augmentation: the recipe, the job, image folders ---------------------


def test_the_classify_spec_is_off_by_default_and_its_options_make_the_hooks() -> None:
    from lepton.platform.jobs._specs import ClassifyJob
    from lepton.vision import Augment, MixUp
    from lepton.vision.recipe import ClassifyConfig, _hooks

    off = ClassifyJob.model_validate({"kind": "classify"})
    assert (off.padding, off.hflip, off.erasing, off.mixup, off.cutmix) == (0, False, 0, 0, 0)
    assert (off.label_smoothing, off.tta, off.model) == (0, False, "convnet")
    assert _hooks(ClassifyConfig()) == {}  # every option off: a plain train job
    with pytest.raises(ValidationError, match="erasing"):
        ClassifyJob.model_validate({"kind": "classify", "erasing": 2})
    with pytest.raises(ConfigError, match="classification dataset"):
        _hooks(ClassifyConfig(model="mlp", data="diabetes", mixup=0.2))
    config = ClassifyConfig(model="mlp", data="digits", epochs=1, val="none", padding=1,
                            mixup=0.2, label_smoothing=0.1, tta=True)  # fmt: skip
    hooks = _hooks(config)
    assert isinstance(hooks["augment"], Augment)
    assert hooks["augment"].padding == 1
    assert isinstance(hooks["batch_transform"], MixUp)
    assert hooks["batch_transform"].alpha == 0.2


@pytest.mark.slow  # the digits load and a real (tiny) fit: about 40 s on a busy 2-core box
def test_classify_runs_the_train_recipe_with_the_hooks_and_logs_tta() -> None:
    from lepton.vision.recipe import ClassifyConfig, classify

    config = ClassifyConfig(model="mlp", data="digits", epochs=1, val="none", limit=300,
                            padding=1, mixup=0.2, label_smoothing=0.1, tta=True)  # fmt: skip
    outcome = classify(config, quiet=True)
    assert 0 <= outcome.metrics["tta_accuracy"] <= 1
    assert 0 < outcome.metrics["accuracy"] <= 1
    assert outcome.run_id is not None
    logged = lp.tracking.get_run(outcome.run_id).metrics
    assert logged["test_tta_accuracy"] == pytest.approx(outcome.metrics["tta_accuracy"])


def test_from_image_folder_augments_training_batches_on_the_fly(tmp_path: Path) -> None:
    from PIL import Image

    from lepton.vision import Augment

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(4):
            pixels = torch.zeros(12, 12, dtype=torch.uint8)
            pixels[3:9, 3 + i % 2 : 9] = 255
            Image.fromarray(pixels.numpy(), mode="L").save(tmp_path / label / f"{i}.png")
    plain = lp.data.from_image_folder(tmp_path, grayscale=True)
    shaken = lp.data.from_image_folder(tmp_path, grayscale=True, augment=Augment(erasing=1.0))
    assert torch.equal(shaken.features, plain.features)  # stored images stay as they are
    torch.manual_seed(0)
    (batch, _), *_ = list(shaken.batches(8, shuffle=False))
    (same, _), *_ = list(plain.batches(8, shuffle=False))
    assert batch.shape == same.shape == (8, 1, 12, 12)
    assert not torch.equal(batch, same)  # crops and erasing, drawn per batch
    assert batch.sum() < same.sum()  # an erased rectangle on every image
    (off, _), *_ = list(shaken.with_transform(None).batches(8, shuffle=False))
    assert torch.equal(off, same)


def test_the_vision_page_without_detectors_says_how_to_make_one(client: Any) -> None:
    page = client.get("/vision")
    assert page.status_code == 200
    assert "No object detector registered yet" in page.text
    assert "lepton vision detect train --register digits-det" in page.text
    assert 'id="detect-upload"' not in page.text  # nothing to pick yet
    refused = client.post("/vision", data={"model": ""}, headers=OURS)
    assert refused.status_code == 422
    assert "pick a detector first" in _alert(refused.text)
