"""``lepton vision``: computer vision on the command line.

* ``lepton vision train``: ``lepton train`` plus augmentation (crops, flips, erasing,
  mixup/cutmix, label smoothing, TTA), here or as a platform ``classify`` job.
* ``lepton vision detect train`` trains an object detector on scenes of real digits or
  your own COCO boxes (here, or as a ``detect`` job); ``lepton vision detect predict``
  finds the objects in an image with a registered detector (or a deployment of one) and
  draws them into a PNG.
* ``lepton vision generate train`` trains a class-conditional generator (here, or as a
  ``generate`` job); ``lepton vision generate sample`` draws PNGs of a class from a
  registered version or a deployment of it."""

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
from lepton.serve._generate_image import SampleRequest
from lepton.vision.recipe import ClassifyConfig, DetectConfig, GenerateConfig

__all__ = ["detect_app", "generate_app", "vision_app"]

console = Console(highlight=False, soft_wrap=True)
DEFAULTS = DetectConfig.model_construct()  # the recipe's defaults, defined once
GENERATE = GenerateConfig.model_construct()
CLASSIFY = ClassifyConfig.model_construct()
SAMPLE = SampleRequest.model_fields  # what a deployment's /sample does by default
vision_app = typer.Typer(
    help="Computer vision (lp.vision): image classification with augmentation, object "
    "detection on digit scenes or COCO boxes, class-conditional image generation.",
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


# -- lepton vision train: classification with augmentation -----------------------------------

_AUGMENT: dict[str, tuple[Any, Any]] = {
    "padding": (int, "Random crop after padding by N pixels (0: none)."),
    "hflip": (bool, "Random left-right flips (clothes, not digits)."),
    "erasing": (float, "Probability of erasing a random rectangle."),
    "mixup": (float, "MixUp Beta alpha (0: off)."),
    "cutmix": (float, "CutMix Beta alpha (0: off; with mixup: one of the two per batch)."),
    "label_smoothing": (float, "Label-smoothing epsilon."),
    "tta": (bool, "Also report test-time-augmentation accuracy."),
}
_SUBMIT = {
    "submit": (bool, typer.Option(False, "--submit", help="Run it as a `classify` job instead.")),
    "follow": (bool, typer.Option(False, "--follow", "-f", help="With --submit: stream its log.")),
}
_LOCAL_ONLY = ("checkpoint_dir", "resume", "save")  # paths and files of this machine


def _classify(**values: Any) -> None:
    from lepton.cli._train import train_and_report, training_config
    from lepton.vision.recipe import ClassifyConfig, classify

    augment = {name: values.pop(name) for name in _AUGMENT}
    submit, follow = values.pop("submit"), values.pop("follow")
    if not submit:
        train_and_report(values, config_cls=ClassifyConfig, runner=classify, extra=augment)
        return
    if any(values[name] for name in _LOCAL_ONLY):
        raise ConfigError("--checkpoint-dir, --resume and --save name this machine's files; a "
                          "job keeps its own: leave them out with --submit")  # fmt: skip
    config = training_config(values, config_cls=ClassifyConfig, extra=augment)
    from lepton.cli._jobs import _submit

    _submit({"kind": "classify", **config.model_dump(mode="json", by_alias=True)}, follow)


def _classify_command() -> Any:
    """``lepton train``'s options plus the augmentation ones and --submit: one list of
    training options, kept in ``lepton train``."""
    import inspect

    from lepton.cli._train import train as plain_train

    base = inspect.signature(plain_train, eval_str=True)
    params = list(base.parameters.values())
    options = {
        name: (kind, typer.Option(getattr(CLASSIFY, name), help=text))
        for name, (kind, text) in _AUGMENT.items()
    } | _SUBMIT  # the recipe's defaults
    more = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                              annotation=kind)
            for name, (kind, option) in options.items()]  # fmt: skip
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params] + more

    def command(**values: Any) -> None:
        _classify(**values)

    command.__signature__ = base.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = """Train an image classifier with augmentation and report test metrics.

    `lepton train`'s options (model, data, epochs, ...) plus random crops, flips, erasing,
    mixup/cutmix, label smoothing and test-time augmentation, all off by default. With
    --submit the same spec runs as a platform `classify` job.

    Example: `lepton vision train -m resnet -d fashion-mnist --padding 2 --hflip
    --erasing 0.25 --label-smoothing 0.1 --tta --schedule onecycle --optimizer sgd --lr 0.1`.
    """
    return command


vision_app.command("train")(_classify_command())


# -- lepton vision generate: train a generator, draw samples ---------------------------------

generate_app = typer.Typer(
    help="Image generation: train a class-conditional generator (locally or as a platform "
    "job), then draw PNGs of a class with a registered version or a deployment of it.",
    no_args_is_help=True,
)
vision_app.add_typer(generate_app, name="generate")


@generate_app.command("train")
def generate_train(
    dataset: str = typer.Option(GENERATE.dataset, help="mnist or fashion-mnist."),
    model: str = typer.Option(
        GENERATE.model, "--model", "-m", help="vae (minutes on a CPU) or ddpm (wants a GPU)."
    ),
    rows: int = typer.Option(GENERATE.rows, help="Train on the first N training images."),
    epochs: int = typer.Option(GENERATE.epochs, help="Passes over the training images."),
    batch_size: int = typer.Option(GENERATE.batch_size, help="Images per optimizer step."),
    lr: float = typer.Option(GENERATE.lr, help="Peak AdamW learning rate (one-cycle)."),
    latent: int = typer.Option(GENERATE.latent, help="The VAE's code size."),
    samples: int = typer.Option(GENERATE.samples, help="Images generated to judge it."),
    judge_epochs: int = typer.Option(
        GENERATE.judge_epochs, help="Epochs of the judging ConvNet (0: do not judge)."
    ),
    seed: int = typer.Option(GENERATE.seed, help="Seeds the weights, the order and samples."),
    register: str | None = typer.Option(None, help="Register the generator under this name."),
    submit: bool = typer.Option(
        False, "--submit", help="Run it as a `generate` job on the platform server instead."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="With --submit: stream the job's log until it ends."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
) -> None:
    """Train a class-conditional image generator, judge its samples and (with --register)
    register it.

    A ConvNet trained on the same images judges the samples: how often it sees the class
    asked for, and the Frechet distance to real test images in its features beside the
    distance between two halves of the real test set (not the Inception FID).

    Example: `lepton vision generate train --epochs 20 --register mnist-gen`, then
    `lepton vision generate sample --model mnist-gen --label 7 --out sevens.png`.
    """
    from lepton.vision.recipe import GenerateConfig, generate

    config = GenerateConfig.checked(
        dataset=dataset, model=model, rows=rows, epochs=epochs, batch_size=batch_size, lr=lr,
        latent=latent, samples=samples, judge_epochs=judge_epochs, seed=seed, register=register,
    )  # fmt: skip
    if submit:
        from lepton.cli._jobs import _submit

        _submit({"kind": "generate", **config.model_dump(mode="json", by_alias=True)}, follow)
        return
    from lepton.registry import register as registrar

    if as_json:
        print(json.dumps(generate(config, registrar=registrar).to_json(), indent=2))
        return
    with console.status("training") as status:

        def say(line: str) -> None:
            console.print(line)
            status.update("judging" if line.startswith("judging") else "training")

        result = generate(config, registrar=registrar, say=say)
    console.print(f"{result.seconds:.1f} s in all ({result.train_seconds:.1f} s training); "
                  f"run: `lepton runs show {result.run_id}`")  # fmt: skip
    if result.registered:
        console.print(f"registered as {result.registered}: `lepton vision generate sample "
                      f"--model {result.registered} --label 3 --out threes.png`")  # fmt: skip


@generate_app.command("sample")
def generate_sample(
    model: str | None = typer.Option(
        None, "--model", "-m", help="A registered generator: name, name:VERSION or name@STAGE."
    ),
    url: str | None = URL_OPTION,
    token_file: Path | None = TOKEN_FILE_OPTION,
    n: int = typer.Option(8, "--n", "-n", help="How many images (at most 64)."),
    label: str | None = typer.Option(
        None, help="A class index or name (default: every class in turn)."
    ),
    seed: int = typer.Option(SAMPLE["seed"].default, help="The same seed, the same images."),
    steps: int = typer.Option(SAMPLE["steps"].default, help="DDIM steps (diffusion)."),
    guidance: float = typer.Option(
        SAMPLE["guidance"].default, help="Classifier-free guidance scale (diffusion)."
    ),
    temperature: float = typer.Option(
        SAMPLE["temperature"].default, help="Spread of the codes (VAE): below 1, more typical."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the images as one grid PNG here."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Draw N images of a class from a registered generator (or a deployment of one), as
    a grid PNG with --out.

    Example: `lepton vision generate sample --model mnist-gen --label 7 -n 16 --out 7.png`.
    """
    body: dict[str, Any] = {"n": n, "label": label, "seed": seed, "steps": steps,
                            "guidance": guidance, "temperature": temperature}  # fmt: skip
    answer = ask_deployment("sample", body, model, url, token_file, "generator")
    if answer is None:
        from lepton.serve._generate_image import GeneratorService

        assert model is not None
        service = GeneratorService(model)
        service.setup()
        answer = service.sample(SampleRequest.model_validate(body)).model_dump()
    if out is not None:
        from lepton._fs import atomic_write_bytes

        atomic_write_bytes(out, base64.b64decode(answer["grid"]))
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    console.print(f"{len(answer['images'])} images of {', '.join(sorted(set(answer['labels'])))} "
                  f"from {answer['model']} in {answer['seconds'] * 1000:.0f} ms")  # fmt: skip
    if out is not None:
        console.print(f"drawn into {out}")
