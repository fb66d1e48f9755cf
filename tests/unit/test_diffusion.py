"""Image generation (``lp.vision.Generator``): the noise schedule's closed form, the
networks' shapes, training through ``lp.fit`` on real MNIST images, seeded DDIM and VAE
sampling, the registry round trip, the served ``/sample`` route, the dashboard gallery,
and the quality measures (Frechet distance, label accuracy)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lepton as lp
from helpers import run_app
from lepton.errors import NotFittedError, VisionError
from lepton.serve._by_model import service_for_model
from lepton.serve._generate_image import GeneratorService
from lepton.vision._diffusion import NoiseSchedule
from lepton.vision._quality import _frechet
from lepton.vision._unet import UNet
from lepton.vision._vae import CVAE

ROWS = 256  # real MNIST training images for the tiny models


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: on a busy 2-core box, two threads spin and run 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist_small() -> lp.data.Dataset:
    return lp.data.load("mnist", split="train").subset(slice(0, ROWS))


@pytest.fixture(scope="session")
def tiny_ddpm(mnist_small: lp.data.Dataset) -> lp.vision.Generator:
    gen = lp.vision.Generator(
        mnist_small.classes or 10, kind="ddpm", channels=(8, 16), timesteps=100
    )
    return gen.fit(mnist_small, epochs=3, batch_size=64, lr=3e-3, num_threads=1)


@pytest.fixture(scope="session")
def tiny_vae(mnist_small: lp.data.Dataset) -> lp.vision.Generator:
    gen = lp.vision.Generator(mnist_small.classes or 10, kind="vae", hidden=(64, 32), latent=4)
    return gen.fit(mnist_small, epochs=8, batch_size=32, lr=3e-3, num_threads=1)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_q_sample_follows_the_closed_form(kind: str) -> None:
    s = NoiseSchedule(1000, kind)
    a = s.alphas_bar
    assert a.shape == (1000,)
    assert bool((a[1:] < a[:-1]).all())
    assert 0.99 < float(a[0]) < 1
    assert float(a[-1]) < 1e-3
    assert torch.allclose(a, torch.cumprod(1 - s.betas.double(), 0).float(), atol=1e-6)
    torch.manual_seed(0)
    t = torch.tensor([10, 500, 900])
    x0 = torch.full((3, 20_000), 0.7)
    xt = s.q_sample(x0, t, torch.randn_like(x0))
    # mean sqrt(a_t) * x0, variance 1 - a_t
    assert torch.allclose(xt.mean(1), a[t].sqrt() * 0.7, atol=0.03)
    assert torch.allclose(xt.var(1), 1 - a[t], atol=0.03)
    with pytest.raises(VisionError, match="kind in"):
        NoiseSchedule(1000, "quadratic")


def test_networks_keep_the_image_shape() -> None:
    unet = UNet(num_classes=10, channels=(8, 16))
    x = torch.randn(3, 1, 28, 28)
    out = unet(x, torch.tensor([0, 50, 999]), torch.tensor([1, 2, 10]))  # 10: "no class"
    assert out.shape == (3, 1, 28, 28)
    vae = CVAE(num_classes=10, hidden=(32, 16), latent=4)
    mu, logvar = vae.encode(x.sigmoid(), torch.tensor([0, 1, 2]))
    assert mu.shape == logvar.shape == (3, 4)
    assert vae(mu, torch.tensor([0, 1, 2])).shape == (3, 1, 28, 28)
    with pytest.raises(VisionError, match="multiple of 4"):
        UNet(image_size=30)
    with pytest.raises(VisionError, match="unknown generator kind"):
        lp.vision.Generator(kind="gan")
    with pytest.raises(VisionError, match="bad option"):
        lp.vision.Generator(kind="vae", channels=(8, 16))


def test_training_through_fit_lowers_the_loss(
    tiny_ddpm: lp.vision.Generator, tiny_vae: lp.vision.Generator
) -> None:
    for gen in (tiny_ddpm, tiny_vae):
        assert gen.result is not None
        losses = [r.train["loss"] for r in gen.result.history]
        assert all(math.isfinite(v) for v in losses)
        assert losses[-1] < 0.8 * losses[0], (gen.kind, losses)


def test_sampling_is_seeded_and_gives_the_classes_asked_for(
    tiny_ddpm: lp.vision.Generator, tiny_vae: lp.vision.Generator
) -> None:
    for gen in (tiny_ddpm, tiny_vae):
        a = gen.sample(5, label=3, steps=2, seed=7)
        assert a.shape == (5, 1, 28, 28)
        assert a.dtype == torch.uint8
        assert torch.equal(a, gen.sample(5, label="3", steps=2, seed=7))  # a name, same class
        assert not torch.equal(a, gen.sample(5, label=3, steps=2, seed=8))
        assert not torch.equal(a, gen.sample(5, label=4, steps=2, seed=7))
        assert gen.label_indices(4, None) == [0, 1, 2, 3]
        assert gen.label_indices(2, [9, 1]) == [9, 1]
        with pytest.raises(VisionError, match="unknown label"):
            gen.sample(1, label="cat")
        with pytest.raises(VisionError, match="1 <= n"):
            gen.sample(0)
    typical = tiny_vae.sample(3, label=1, seed=0, temperature=0.0)  # every code at the mean
    assert torch.equal(typical[0], typical[1])
    assert torch.equal(typical[0], typical[2])
    with pytest.raises(VisionError, match="temperature >= 0"):
        tiny_vae.sample(1, temperature=-1)
    with pytest.raises(NotFittedError, match="not trained"):
        lp.vision.Generator(kind="vae").sample(1)


def test_png_grid(tiny_vae: lp.vision.Generator) -> None:
    images = tiny_vae.sample(7, seed=0)
    grid = Image.open(io.BytesIO(tiny_vae.to_png(images, columns=4)))
    assert grid.size == (4 * 28, 2 * 28)
    assert grid.mode == "L"
    one = Image.open(io.BytesIO(lp.vision.to_png(images[0])))
    assert one.size == (28, 28)
    assert np.asarray(one).flatten().tolist() == images[0, 0].flatten().tolist()


def test_registry_round_trip_draws_the_same_images(
    tiny_ddpm: lp.vision.Generator, tiny_vae: lp.vision.Generator
) -> None:
    for gen, name in ((tiny_ddpm, "digits-ddpm"), (tiny_vae, "digits-vae")):
        version = gen.register(name, dataset=None)
        assert version.manifest["architecture"]["name"] in ("image-diffusion", "image-vae")
        back = lp.vision.Generator.load(f"{name}:1")
        assert back.kind == gen.kind
        assert back.classes == gen.classes
        assert torch.equal(back.sample(3, label=2, steps=3, seed=1),
                           gen.sample(3, label=2, steps=3, seed=1))  # fmt: skip
    lp.register(lp.models.MLP(in_features=4, num_classes=3), "not-a-generator")
    with pytest.raises(VisionError, match="expected an image generator"):
        lp.vision.Generator.load("not-a-generator:1")


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_sample_route_answers_pngs(tiny_vae: lp.vision.Generator) -> None:
    tiny_vae.register("served-gen")
    service = service_for_model("served-gen:1")
    assert isinstance(service, GeneratorService)

    async def scenario(client: Any, _app: Any) -> list[Any]:
        return [
            await client.post("/sample", json={"n": 3, "label": 5, "seed": 2}),
            await client.post("/sample", json={"n": 3, "label": 5, "seed": 2}),
            await client.get("/info"),
            await client.post("/sample", json={"n": 2, "label": "cat"}),
            await client.post("/sample", json={"n": 1000}),
        ]

    first, again, info, unknown, too_many = run_app(service, scenario)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["labels"] == ["5", "5", "5"]
    assert body["model"] == "served-gen:1"
    assert [_decode(b).size for b in body["images"]] == [(28, 28)] * 3
    assert _decode(body["grid"]).size == (3 * 28, 28)
    assert again.json()["images"] == body["images"]
    expected = tiny_vae.sample(3, label=5, seed=2)[0, 0].flatten().tolist()
    assert np.asarray(_decode(body["images"][0])).flatten().tolist() == expected
    assert info.json()["kind"] == "vae"
    assert info.json()["image_shape"] == [1, 28, 28]
    assert unknown.status_code == 400
    assert "unknown label" in unknown.json()["error"]["message"]
    assert too_many.status_code in (400, 422)


def test_gallery_page_shows_samples(client: Any, tiny_vae: lp.vision.Generator) -> None:
    empty = client.get("/gallery")
    assert empty.status_code == 200
    assert "No image generator registered" in empty.text
    tiny_vae.register("gallery-gen")
    page = client.get("/gallery", params={"label": "7", "n": 5, "seed": 1, "temperature": 0.8})
    assert page.status_code == 200
    assert page.text.count('src="data:image/png;base64,') == 5
    assert page.text.count('alt="generated 7"') == 5
    assert 'href="/gallery"' in page.text  # in the nav
    bad = client.get("/gallery", params={"model": "nope:1"})
    assert "not a registered image generator" in bad.text


def test_frechet_distance_and_label_accuracy(mnist_small: lp.data.Dataset) -> None:
    torch.manual_seed(0)
    feats = torch.randn(500, 6)
    assert _frechet(feats, feats) == pytest.approx(0, abs=1e-6)
    shift = torch.tensor([1.0, -2.0, 0, 0, 0, 0])
    assert _frechet(feats, feats + shift) == pytest.approx(5.0, rel=1e-6)  # ||shift||^2
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    lp.fit(classifier, mnist_small, epochs=15, batch_size=32, lr=3e-3, quiet=True, num_threads=1)
    test = lp.data.load("mnist", split="test").subset(slice(0, 400))
    assert test.targets is not None
    real = (test.features * 255).round().to(torch.uint8)
    accuracy = lp.vision.label_accuracy(real, test.targets, classifier)
    assert accuracy > 0.7
    assert lp.vision.label_accuracy(real, (test.targets + 1) % 10, classifier) < 0.2
    halves = lp.vision.frechet_distance(real[:200], real[200:], classifier)
    noise = torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8)
    assert lp.vision.frechet_distance(real[:200], noise, classifier) > 5 * halves
    with pytest.raises(VisionError, match="one label per image"):
        lp.vision.label_accuracy(real, test.targets[:3], classifier)


def test_sample_quality_judges_samples_beside_two_real_halves(
    tiny_vae: lp.vision.Generator, mnist_small: lp.data.Dataset
) -> None:
    judge = lp.models.build("convnet", num_classes=10, num_filters=[8, 16], dropout=0.0)
    lp.fit(judge, mnist_small, epochs=6, batch_size=32, lr=3e-3, quiet=True, num_threads=1)
    test = lp.data.load("mnist", split="test").subset(slice(0, 400))
    assert test.targets is not None
    figures = lp.vision.sample_quality(tiny_vae, test, judge, n=200, seed=3, temperature=0.8)
    assert set(figures) == {"label_accuracy", "frechet_distance", "frechet_floor",
                            "real_label_accuracy", "ms_per_image"}  # fmt: skip
    # the same figures by hand: samples of every class in turn, the two real halves
    asked = torch.arange(200) % 10
    fake = tiny_vae.sample(200, label=asked.tolist(), seed=3, temperature=0.8)
    real = (test.features * 255).round().to(torch.uint8)
    assert figures["label_accuracy"] == lp.vision.label_accuracy(fake, asked, judge)
    assert figures["frechet_distance"] == pytest.approx(
        lp.vision.frechet_distance(fake, real[:200], judge)
    )
    assert figures["frechet_floor"] == pytest.approx(
        lp.vision.frechet_distance(real[200:], real[:200], judge)
    )
    assert figures["real_label_accuracy"] == lp.vision.label_accuracy(
        real[200:], test.targets[200:], judge
    )
    assert figures["frechet_floor"] < figures["frechet_distance"]  # a tiny VAE is no data
    assert figures["real_label_accuracy"] > 0.6
    assert figures["ms_per_image"] > 0
    with pytest.raises(VisionError, match="needs >= 800 labelled test images"):
        lp.vision.sample_quality(tiny_vae, test, judge, n=400)


def test_the_gallery_submits_a_generate_job_and_keeps_what_was_typed(
    client: Any, platform: Any
) -> None:
    page = client.get("/gallery")
    assert 'id="submit-generate"' in page.text
    assert 'name="rows" type="number" min="100" max="60000" value="60000"' in page.text  # defaults
    origin = {"origin": "http://127.0.0.1:8000"}
    refused = client.post("/gallery/train", data={"rows": "10", "epochs": "2"}, headers=origin)
    assert refused.status_code == 422
    assert "rows: Input should be greater than or equal to 100" in refused.text
    assert 'name="rows" type="number" min="100" max="60000" value="10"' in refused.text  # kept
    made = client.post("/gallery/train", data={"rows": "500", "epochs": "2", "model": "vae",
                                                "register_as": "gallery-gen"},
                       headers=origin, follow_redirects=False)  # fmt: skip
    assert made.status_code == 303
    job = platform.jobs.get(int(made.headers["location"].rsplit("/", 1)[1]))
    assert (job.kind, job.spec["rows"], job.spec["register"]) == ("generate", 500, "gallery-gen")
    assert job.spec["judge_epochs"] == 3  # the recipe's default, untouched by the form
