"""``lepton vision``: computer vision on the command line. ``lepton vision detect train``
trains an object detector on scenes of real digits or your own COCO boxes (here, or as a
platform ``detect`` job), and ``lepton vision detect predict`` finds the objects in an
image with a registered detector (or a deployment of one) and draws them into a PNG."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.cli._serve import JSON_OPTION, TOKEN_FILE_OPTION, URL_OPTION, ask_deployment
from lepton.errors import ConfigError
from lepton.vision.recipe import DetectConfig

__all__ = ["detect_app", "vision_app"]

console = Console(highlight=False, soft_wrap=True)
DEFAULTS = DetectConfig.model_construct()  # the recipe's defaults, defined once
vision_app = typer.Typer(
    help="Computer vision (lp.vision): object detection on digit scenes or COCO boxes.",
    no_args_is_help=True,
)
detect_app = typer.Typer(
    help="Object detection: train a detector (locally or as a platform job) and find the "
    "objects in an image with a registered version or a deployment of it.",
    no_args_is_help=True,
)
vision_app.add_typer(detect_app, name="detect")


@detect_app.command("train")
def train(
    dataset: str = typer.Option(DEFAULTS.dataset, help="mnist or fashion-mnist: the objects."),
    train_scenes: int = typer.Option(DEFAULTS.train_scenes, help="Training scenes."),
    test_scenes: int = typer.Option(DEFAULTS.test_scenes, help="Held-out scenes (test digits)."),
    size: int = typer.Option(DEFAULTS.size, help="Scene side in pixels (a multiple of 4)."),
    width: int = typer.Option(DEFAULTS.width, help="The network's channels at stride 4."),
    blocks: int = typer.Option(DEFAULTS.blocks, help="Residual blocks at stride 4."),
    epochs: int = typer.Option(DEFAULTS.epochs, help="Passes over the training scenes."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help="Scenes per optimizer step."),
    lr: float = typer.Option(DEFAULTS.lr, help="Peak AdamW learning rate (one-cycle)."),
    score_threshold: float = typer.Option(
        DEFAULTS.score_threshold, help="Served detections score at least this (recorded)."
    ),
    seed: int = typer.Option(DEFAULTS.seed, help="Seeds the scenes, the weights and the order."),
    register: str | None = typer.Option(None, help="Register the detector under this name."),
    coco: tuple[Path, Path] | None = typer.Option(
        None,
        "--coco",
        help="IMAGES_DIR ANNOTATIONS_JSON: train on your own COCO boxes "
        "(resized to --size; here only, not with --submit).",
    ),
    submit: bool = typer.Option(
        False, "--submit", help="Run it as a `detect` job on the platform server instead."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="With --submit: stream the job's log until it ends."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
) -> None:
    """Train an object detector, measure mAP@0.5 and mAP@[.5:.95] on held-out scenes and
    (with --register) register it.

    Scenes of real MNIST digits (lp.vision.digit_scenes; the held-out ones use test-split
    digits only) or your COCO folder train a CenterNet-style detector with `lp.fit`. The
    run is tracked (`lepton runs show ID`). With --submit the same spec runs as a platform
    job (LEPTON_SERVER_URL; `lepton jobs show ID`).

    Example: `lepton vision detect train --epochs 4 --register digits-det`, then
    `lepton vision detect predict scene.png --model digits-det --out boxes.png`.
    """
    values: dict[str, Any] = {
        "dataset": dataset, "train_scenes": train_scenes, "test_scenes": test_scenes,
        "size": size, "width": width, "blocks": blocks, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "score_threshold": score_threshold, "seed": seed,
        "register": register,
    }  # fmt: skip
    config = DetectConfig.checked(**{k: v for k, v in values.items() if v is not None})
    if submit:
        if coco is not None:
            raise ConfigError(
                "--coco names files on this machine; a job cannot read them: train here "
                "(without --submit), or submit a digit-scene job"
            )
        from lepton.cli._jobs import _submit

        _submit({"kind": "detect", **config.model_dump(mode="json", by_alias=True)}, follow)
        return
    from lepton.registry import register as registrar
    from lepton.vision.recipe import run

    if as_json:
        print(json.dumps(run(config, registrar=registrar, coco=coco).to_json(), indent=2))
        return
    with console.status("making scenes") as status:

        def say(line: str) -> None:
            console.print(line)
            status.update("training" if line.startswith(("training", "epoch")) else line)

        result = run(config, registrar=registrar, coco=coco, say=say)
    console.print(f"{result.seconds:.1f} s in all ({result.train_seconds:.1f} s training); "
                  f"run: `lepton runs show {result.run_id}`")  # fmt: skip
    if result.registered:
        console.print(f"registered as {result.registered}: `lepton vision detect predict "
                      f"IMAGE --model {result.registered} --out boxes.png`")  # fmt: skip


def _detect(
    image: bytes, body: dict[str, Any], model: str | None, url: str | None,
    token_file: Path | None,
) -> dict[str, Any]:  # fmt: skip
    """``/detect``'s answer from a deployment (``url``) or a registered version here."""
    sent = {"image": base64.b64encode(image).decode("ascii"), **body}
    answer = ask_deployment("detect", sent, model, url, token_file, "detector")
    if answer is not None:
        return answer
    from lepton.serve._vision import DetectionService, DetectRequest

    assert model is not None
    service = DetectionService(model)
    service.setup()
    return service.detect(DetectRequest.model_validate(sent)).model_dump()


@detect_app.command("predict")
def predict(
    image: Path = typer.Argument(..., help="A PNG or JPEG image, of any size."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="A registered detector: name, name:VERSION or name@STAGE."
    ),
    url: str | None = URL_OPTION,
    token_file: Path | None = TOKEN_FILE_OPTION,
    score_threshold: float | None = typer.Option(
        None, help="Keep detections scoring at least this (default: the detector's)."
    ),
    max_detections: int | None = typer.Option(None, help="Most detections (default: its own)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the image with its boxes drawn into this PNG."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Find the objects in IMAGE: boxes (x1, y1, x2, y2 in IMAGE's pixels), classes and
    scores, best first; with --out, the image with its boxes drawn.

    Example: `lepton vision detect predict scene.png --model digits-det --out boxes.png`.
    """
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {image}: {exc.strerror}; name a PNG or JPEG file") from None
    body = {"score_threshold": score_threshold, "max_detections": max_detections}
    answer = _detect(data, {k: v for k, v in body.items() if v is not None}, model, url,
                     token_file)  # fmt: skip
    if out is not None:
        from lepton._fs import atomic_write_bytes
        from lepton.serve._vision import draw_detections

        atomic_write_bytes(out, draw_detections(data, answer))
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    table = Table(title=f"{len(answer['boxes'])} objects in {image.name} "
                  f"({answer['width']}x{answer['height']})", title_justify="left")  # fmt: skip
    for column in ("#", "class", "score", "x1", "y1", "x2", "y2"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for rank, (box, label, score) in enumerate(
        zip(answer["boxes"], answer["labels"], answer["scores"], strict=True), start=1
    ):
        table.add_row(str(rank), str(label), f"{score:.3f}", *(f"{v:.1f}" for v in box))
    console.print(table)
    if out is not None:
        console.print(f"drawn into {out}")
