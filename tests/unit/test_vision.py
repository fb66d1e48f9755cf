"""lepton.vision: digit scenes from real MNIST, the CenterNet-style detector trained with
lp.fit, decoding and NMS, COCO mAP and annotations, and classification augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lepton as lp
from lepton.errors import AnnotationError, NotFittedError, VisionError
from lepton.vision import (
    INK,
    Augment,
    CutMix,
    Detector,
    MixUp,
    RandomMix,
    Scenes,
    batched_nms,
    decode,
    detection_dataset,
    digit_scenes,
    label_smoothing,
    load_coco,
    mean_average_precision,
    save_coco,
    tta_predict,
)
from lepton.vision._augment import _shift
from lepton.vision._ops import nms_torch, torchvision_or_none
from lepton.vision._scenes import _scaled_digit

C = 10  # digit classes


@pytest.fixture(scope="module")
def scenes() -> Scenes:
    return digit_scenes("train", n=12, seed=3, size=48, digits=(2, 3), digit_size=(12, 24))


# -- digit scenes -------------------------------------------------------------------------


def test_scenes_are_deterministic_by_seed(scenes: Scenes) -> None:
    again = digit_scenes("train", n=12, seed=3, size=48, digits=(2, 3), digit_size=(12, 24))
    other = digit_scenes("train", n=12, seed=4, size=48, digits=(2, 3), digit_size=(12, 24))
    assert torch.equal(scenes.images, again.images)
    assert all(torch.equal(a, b) for a, b in zip(scenes.boxes, again.boxes, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(scenes.labels, again.labels, strict=True))
    assert not torch.equal(scenes.images, other.images)
    assert scenes.images.shape == (12, 1, 48, 48)
    assert all(1 <= len(b) <= 3 for b in scenes.boxes)
    assert sum(len(b) for b in scenes.boxes) > 12  # several digits per scene


def test_boxes_are_tight_around_the_ink(scenes: Scenes) -> None:
    for image, boxes in zip(scenes.images, scenes.boxes, strict=True):
        ink = image[0] > INK
        covered = torch.zeros_like(ink)
        for x1, y1, x2, y2 in boxes.long().tolist():
            covered[y1:y2, x1:x2] = True
            # every edge of the box touches ink (the digit's own ink stays on the canvas)
            assert ink[y1, x1:x2].any()
            assert ink[y2 - 1, x1:x2].any()
            assert ink[y1:y2, x1].any()
            assert ink[y1:y2, x2 - 1].any()
        assert not (ink & ~covered).any(), "ink outside every box"


def test_test_scenes_use_only_test_digits() -> None:
    test = lp.data.load("mnist", split="test")
    train = lp.data.load("mnist", split="train")
    assert test.targets is not None
    one = digit_scenes("test", n=6, seed=0, size=48, digits=(1, 1), digit_size=(16, 28))
    assert one.name == "mnist-scenes-test"
    for image, boxes, labels, sources in zip(
        one.images, one.boxes, one.labels, one.sources, strict=True
    ):
        (idx,) = sources.tolist()
        assert int(labels[0]) == int(test.targets[idx])
        x1, y1, x2, y2 = boxes[0].long().tolist()
        pasted = image[0, y1:y2, x1:x2]
        from_test = _scaled_digit(test.features[idx, 0], y2 - y1)
        from_train = _scaled_digit(train.features[idx, 0], y2 - y1)
        assert from_test is not None
        assert torch.equal(pasted, from_test)
        assert (
            from_train is None
            or from_train.shape != pasted.shape
            or not torch.equal(pasted, from_train)
        )


def test_bad_scene_options_are_refused() -> None:
    with pytest.raises(VisionError, match="split must be 'train' or 'test'"):
        digit_scenes("val", n=2)
    with pytest.raises(VisionError, match="multiple of 4"):
        digit_scenes("train", n=2, size=30)
    with pytest.raises(VisionError, match="digit_size"):
        digit_scenes("train", n=2, size=32, digit_size=(10, 40))
    with pytest.raises(VisionError, match="x1 < x2"):
        Scenes(torch.zeros(1, 1, 8, 8), [torch.tensor([[4.0, 4.0, 2.0, 6.0]])],
               [torch.tensor([0])], ["a"])  # fmt: skip
    with pytest.raises(VisionError, match="label outside"):
        Scenes(torch.zeros(1, 1, 8, 8), [torch.tensor([[1.0, 1.0, 2.0, 6.0]])],
               [torch.tensor([3])], ["a"])  # fmt: skip


# -- decoding, NMS, mAP --------------------------------------------------------------------


def _output(peaks: list[tuple[int, int, int, float, float, float]], grid: int = 16) -> torch.Tensor:
    """A hand-built network output: heatmap logits -9 except at ``(class, y, x)`` peaks
    with logit ``score``, box size ``(w, h)`` cells and offset 0.5."""
    out = torch.zeros(1, C + 4, grid, grid)
    out[:, :C] = -9.0
    for c, y, x, score, w, h in peaks:
        out[0, c, y, x] = score
        out[0, C:, y, x] = torch.tensor([w, h, 0.5, 0.5])
    return out


def test_decode_turns_peaks_into_boxes() -> None:
    out = _output([(3, 5, 4, 4.0, 4.0, 6.0), (7, 12, 10, 2.0, 2.0, 2.0)])
    (boxes, scores, labels), = decode(out, 4, score_threshold=0.3)  # fmt: skip
    assert labels.tolist() == [3, 7]
    # centre (4.5, 5.5) cells, size (4, 6) cells, stride 4 -> pixels
    assert torch.allclose(boxes[0], torch.tensor([10.0, 10.0, 26.0, 34.0]))
    assert torch.allclose(boxes[1], torch.tensor([38.0, 46.0, 46.0, 54.0]))
    assert torch.allclose(scores, torch.sigmoid(torch.tensor([4.0, 2.0])))
    # below the threshold: gone
    (boxes, _, _), = decode(out, 4, score_threshold=0.95)  # fmt: skip
    assert len(boxes) == 1


def test_nms_drops_a_same_class_duplicate_but_keeps_other_classes() -> None:
    # two big boxes of class 2, one cell apart diagonally is a 3x3 neighbour: put them
    # two cells apart so both survive the max-pool and only NMS can remove one
    out = _output([(2, 8, 8, 5.0, 8.0, 8.0), (2, 8, 10, 3.0, 8.0, 8.0), (5, 8, 6, 1.0, 8.0, 8.0)])
    (_, scores, labels), = decode(out, 4, score_threshold=0.3, iou_threshold=0.5)  # fmt: skip
    assert labels.tolist() == [2, 5]
    assert torch.allclose(scores, torch.sigmoid(torch.tensor([5.0, 1.0])))
    (_, _, labels), = decode(out, 4, score_threshold=0.3, iou_threshold=0.9)  # fmt: skip
    assert sorted(labels.tolist()) == [2, 2, 5]  # IoU 0.6 < 0.9: nothing suppressed


def test_plain_nms_matches_torchvision_or_hand_result() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 20], dim=1)
    scores = torch.rand(60, generator=g)
    idxs = torch.randint(0, 3, (60,), generator=g)
    kept = nms_torch(boxes, scores, idxs, 0.4)
    tv = torchvision_or_none()
    if tv is not None:
        assert kept.tolist() == tv.ops.batched_nms(boxes, scores, idxs, 0.4).tolist()
    assert torch.equal(kept, batched_nms(boxes, scores, idxs, 0.4))
    # the invariant: no two kept boxes of one class overlap by more than the threshold
    from lepton.vision import box_iou

    for c in range(3):
        k = kept[idxs[kept] == c]
        iou = box_iou(boxes[k], boxes[k]).fill_diagonal_(0)
        assert float(iou.max()) <= 0.4
    assert len(kept) < 60


def test_map_is_one_for_the_truth_and_drops_for_loose_boxes() -> None:
    truth = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 34.0]])]
    labels = [torch.tensor([1, 4])]
    exact = [(truth[0], torch.tensor([0.9, 0.8]), labels[0])]
    assert mean_average_precision(exact, truth, labels)["map"] == pytest.approx(1.0)
    # shifted one pixel: IoU 0.68 and 0.72, above 0.5 and below 0.75
    loose = [(truth[0] + 1.0, torch.tensor([0.9, 0.8]), labels[0])]
    m = mean_average_precision(loose, truth, labels)
    assert m["map_50"] == pytest.approx(1.0)
    assert m["map_75"] == 0.0
    assert 0.3 < m["map"] < 0.6
    wrong = [(truth[0], torch.tensor([0.9, 0.8]), torch.tensor([4, 1]))]
    assert mean_average_precision(wrong, truth, labels)["map_50"] == 0.0


# -- the detector through lp.fit -----------------------------------------------------------


def test_detector_trained_through_fit_finds_the_digits_of_its_scenes() -> None:
    torch.manual_seed(0)
    few = digit_scenes("train", n=6, seed=0, size=32, digits=(1, 2), digit_size=(12, 20))
    ds = detection_dataset(few, C)
    assert ds.targets is not None
    assert ds.targets.shape == (6, C + 4, 8, 8)
    det = Detector(width=16, blocks=1)
    with pytest.raises(NotFittedError, match="call fit"):
        det.predict(few.images)
    # 60 steps of the whole handful (about 15 s on one thread of a busy 2-core box)
    det.fit(few, epochs=60, batch_size=6, lr=5e-3, schedule=None, num_threads=1)
    assert det.result is not None
    assert len(det.result.history) == 60
    assert det.result.history[-1].train["loss"] < det.result.history[0].train["loss"] / 5
    metrics = det.evaluate(few)
    assert metrics["map_50"] >= 0.8, metrics
    boxes, scores, labels = det.predict(few.images[0])[0]
    assert boxes.shape[1] == 4
    assert len(boxes) == len(scores) == len(labels)
    assert sorted(labels.tolist()) == sorted(few.labels[0].tolist())
    with pytest.raises(VisionError, match=r"takes images \(N, 1, H, W\)"):
        det.predict(torch.zeros(1, 3, 32, 32))


# -- COCO annotations ----------------------------------------------------------------------


def test_coco_round_trip(scenes: Scenes, tmp_path: Path) -> None:
    path = save_coco(scenes.subset(range(4)), tmp_path / "coco")
    back = load_coco(tmp_path / "coco", path)
    assert back.classes == scenes.classes
    assert torch.allclose(back.images, scenes.images[:4], atol=0.5 / 255 + 1e-6)
    for i in range(4):
        assert torch.equal(back.boxes[i], scenes.boxes[i])
        assert torch.equal(back.labels[i], scenes.labels[i])


def test_coco_loader_maps_category_ids_skips_crowds_and_resizes(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (20, 10)).save(tmp_path / "a.png")
    Image.new("L", (40, 20)).save(tmp_path / "b.png")
    doc = {
        "images": [{"id": 7, "file_name": "a.png"}, {"id": 9, "file_name": "b.png"}],
        "categories": [{"id": 30, "name": "cat"}, {"id": 12, "name": "dog"}],
        "annotations": [
            {"image_id": 7, "category_id": 30, "bbox": [1, 2, 4, 6]},
            {"image_id": 9, "category_id": 12, "bbox": [10, 4, 8, 8]},
            {"image_id": 9, "category_id": 30, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        ],
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match="differ in size"):
        load_coco(tmp_path, ann)
    got = load_coco(tmp_path, ann, size=(20, 40))
    assert got.classes == ["dog", "cat"]  # by category id: 12, 30
    assert got.images.shape == (2, 1, 20, 40)
    assert got.labels[0].tolist() == [1]
    assert got.labels[1].tolist() == [0]
    assert got.boxes[0].tolist() == [[2.0, 4.0, 10.0, 16.0]]  # scaled x2
    assert got.boxes[1].tolist() == [[10.0, 4.0, 18.0, 12.0]]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 2]}]},
            "width or height",
        ),
        ({"annotations": [{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 2]}]}, "image_id 5"),
        (
            {"annotations": [{"image_id": 1, "category_id": 8, "bbox": [0, 0, 1, 2]}]},
            "category_id 8",
        ),
        ({"annotations": [{"image_id": 1, "category_id": 1, "bbox": "0 0 1 2"}]}, r"\[x, y, width"),
        ({"images": [{"id": 1, "file_name": "missing.png"}]}, "missing"),
        ({"categories": None}, "not COCO detection JSON"),
    ],
)
def test_coco_loader_refuses_bad_annotations(
    tmp_path: Path, change: dict[str, object], match: str
) -> None:
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    doc: dict[str, object] = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [],
    } | change
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match=match):
        load_coco(tmp_path, ann)


# -- classification augmentation --------------------------------------------------------------


def test_augment_draws_per_image_crops_and_erases() -> None:
    torch.manual_seed(0)
    digit = lp.data.load("mnist", split="test").features[:1]  # (1, 1, 28, 28)
    batch = digit.repeat(32, 1, 1, 1)
    shifted = Augment(padding=2)(batch)
    assert shifted.shape == batch.shape
    distinct = {tuple(img.flatten().tolist()) for img in shifted}
    assert len(distinct) > 5  # one crop per image, not one per batch
    moves = [_shift(digit, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    for img in shifted:  # each image is the digit moved by at most 2 pixels each way
        assert any(torch.equal(img, moved[0]) for moved in moves)
    erased = Augment(padding=0, erasing=1.0)(batch)
    assert bool((erased.sum(dim=(1, 2, 3)) <= batch.sum(dim=(1, 2, 3))).all())
    assert bool(((erased == 0) & (batch > 0)).any())
    flipped = Augment(padding=0, hflip=True)(batch)
    n_flipped = sum(torch.equal(img, digit[0].flip(-1)) for img in flipped)
    assert 0 < n_flipped < 32
    with pytest.raises(VisionError, match="erasing is a probability"):
        Augment(erasing=2.0)


def test_mixup_and_cutmix_give_soft_targets_that_sum_to_one() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    y = torch.arange(16) % 10
    for mix in (MixUp(10), CutMix(10), RandomMix(10)):
        xm, ym = mix(x, y)
        assert xm.shape == x.shape
        assert ym.shape == (16, 10)
        assert torch.allclose(ym.sum(1), torch.ones(16))
    xm, ym = CutMix(10, alpha=1.0)(x, y)
    changed = (xm != x).flatten(1).any(1).float().mean()
    assert float(changed) > 0
    assert float(ym.max(1).values.min()) < 1.0


def test_fit_trains_with_augmentation_mixing_and_smoothing() -> None:
    train = lp.data.load("mnist", split="train").subset(range(1280))
    test = lp.data.load("mnist", split="test").subset(range(500))
    calls: list[tuple[int, ...]] = []
    mix = RandomMix(10, p=0.5)

    def counting(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(tuple(x.shape))
        return mix(x, y)

    model = lp.models.ConvNet(num_classes=10, num_filters=[8, 16], dropout=0.1)
    result = lp.fit(model, train.with_transform(Augment(padding=2, erasing=0.25)), epochs=2,
                    batch_size=64, lr=3e-3, loss=label_smoothing(0.1), batch_transform=counting,
                    seed=0, quiet=True, num_threads=1)  # fmt: skip
    assert len(calls) == 2 * 20
    assert calls[0] == (64, 1, 28, 28)
    assert 0.0 < result.history[-1].train["accuracy"] <= 1.0
    assert lp.evaluate(model, test)["accuracy"] > 0.5  # chance: 0.1
    probs = tta_predict(model, test.features[:50], shift=1)
    assert probs.shape == (50, 10)
    assert torch.allclose(probs.sum(1), torch.ones(50))
