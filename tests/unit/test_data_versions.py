"""Versioned datasets (``lp.data.register`` / ``load("name@N")`` / ``versions`` / ``diff``) and
``lp.data.load(path)``, on real data (iris, digits and MNIST slices) in this test's own
LEPTON_HOME: a real SQLite database and artifact store."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lepton as lp
from lepton.data import Dataset
from lepton.data._validate import read_checked_table
from lepton.errors import (
    DataFormatError,
    DatasetNotFoundError,
    DataSourceMissingError,
    InvalidRowsError,
)
from lepton.storage import Database, DatasetVersionStore, LocalArtifactStore


@pytest.fixture(scope="module")
def iris() -> Dataset:
    return lp.data.load("iris", split="all")


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return lp.data.load("mnist", split="test").subset(slice(0, 300))


def _same(a: Dataset, b: Dataset) -> None:
    assert a.features.dtype == b.features.dtype
    assert a.features.shape == b.features.shape
    assert a.features.numpy().tobytes() == b.features.numpy().tobytes()
    assert a.targets is not None
    assert b.targets is not None
    assert a.targets.numpy().tobytes() == b.targets.numpy().tobytes()
    assert (a.classes, a.feature_names, a.task) == (b.classes, b.feature_names, b.task)
    assert a.fingerprint() == b.fingerprint()


def test_same_content_is_the_same_version_and_loads_back_bit_for_bit(iris: Dataset) -> None:
    first = lp.data.register(iris, "iris-v")
    again = lp.data.register(iris.subset(slice(0, len(iris))), "iris-v")
    assert (first.ref, again.ref) == ("iris-v@1", "iris-v@1")
    assert first.format == "parquet"
    assert first.rows == 150
    assert [c["name"] for c in first.schema["columns"]] == iris.feature_names
    assert first.stats["class_counts"] == {"setosa": 50, "versicolor": 50, "virginica": 50}
    _same(lp.data.load("iris-v@1"), iris)
    _same(lp.data.load("iris-v@latest"), iris)
    _same(lp.data.load("iris-v"), iris)  # a bare registered name: its latest version
    assert [v.ref for v in lp.data.versions("iris-v")] == ["iris-v@1"]


def test_a_changed_row_is_a_new_version_and_the_diff_shows_it(iris: Dataset) -> None:
    lp.data.register(iris, "iris-d")
    x = iris.features.clone()
    x[7, 2] += 1.0
    changed = Dataset(x, iris.targets, classes=iris.classes, feature_names=iris.feature_names)
    second = lp.data.register(changed, "iris-d", derived_from="iris-d@1", steps=[{"op": "fix"}])
    assert second.ref == "iris-d@2"
    assert (second.derived_from, second.steps) == ("iris-d@1", [{"op": "fix"}])
    found = lp.data.diff("iris-d@1", "iris-d@2")
    assert (found.rows["added"], found.rows["removed"], found.rows["unchanged"]) == (1, 1, 149)
    assert found.rows["added_rows"] == [7]
    assert found.rows["removed_rows"] == [7]
    assert found.schema == []
    assert not found.identical
    assert found.distribution is not None
    assert {f["name"] for f in found.distribution["features"]} == set(iris.feature_names or [])
    assert "+1 added, -1 removed, 149 unchanged" in str(found)
    assert lp.data.diff("iris-d@1", "iris-d@1").identical


def test_diff_reports_schema_and_distribution_changes(iris: Dataset) -> None:
    names = iris.feature_names or []
    lp.data.register(iris, "iris-s")
    fewer = Dataset(
        iris.features[:, :3] * 3.0 + 1.0,
        iris.targets,
        classes=iris.classes,
        feature_names=names[:3],
    )
    lp.data.register(fewer, "iris-s")
    found = lp.data.diff("iris-s@1", "iris-s@2")
    assert found.schema == [f"column {names[3]!r} removed"]
    assert found.rows["removed"] == 150  # every value was rescaled
    assert found.distribution is not None
    assert set(found.distribution["drifted_features"]) == set(names[:3])
    assert any("3 columns both sides have" in n for n in found.notes)


def test_images_are_stored_as_npz_and_diffed_by_row(mnist: Dataset) -> None:
    v1 = lp.data.register(mnist, "mnist-slice")
    assert v1.format == "npz"
    assert v1.schema["features"]["shape"] == [1, 28, 28]
    _same(lp.data.load("mnist-slice@1"), mnist)
    grown = Dataset(
        torch.cat([mnist.features[10:], mnist.features[:5]]),
        torch.cat([mnist.targets[10:], mnist.targets[:5]]),  # type: ignore[index]
        classes=mnist.classes,
    )
    lp.data.register(grown, "mnist-slice")
    found = lp.data.diff("mnist-slice@1", "mnist-slice@2")
    assert (found.rows["added"], found.rows["removed"]) == (0, 5)  # 5 rows moved, 5 gone
    assert found.rows["removed_rows"] == [5, 6, 7, 8, 9]


def test_cleaning_lineage_and_the_runs_and_models_that_used_a_version(iris: Dataset) -> None:
    raw = iris.features.clone()
    raw[3, 1] = float("nan")
    dirty = Dataset(raw, iris.targets, classes=iris.classes, feature_names=iris.feature_names)
    v1 = lp.data.register(dirty, "iris-l")
    cleaned, report = lp.data.clean(dirty)
    v2 = lp.data.register(cleaned, "iris-l", derived_from=v1, steps=report)
    assert v2.derived_from == "iris-l@1"
    assert v2.steps[0]["op"] == "clean"
    assert v2.steps[0]["imputed"] == {"sepal width (cm)": 1}
    train = lp.data.load("iris-l@2")
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=4, num_classes=3, hidden=[8])
    with lp.start_run("uses-iris-l") as run:
        lp.fit(model, train, epochs=1, batch_size=64)
        lp.register(model, "iris-l-mlp", dataset=train)
    used = lp.data.versions("iris-l")[1].used_by
    assert {(u["run_id"], u["model"]) for u in used} == {(run.id, None), (None, "iris-l-mlp:1")}
    assert lp.data.versions("iris-l")[0].used_by == ()


def test_bad_references_and_names_say_what_to_do(iris: Dataset) -> None:
    with pytest.raises(DatasetNotFoundError, match="no registered dataset named 'nope'"):
        lp.data.load("nope@1")
    lp.data.register(iris, "iris-r")
    with pytest.raises(DatasetNotFoundError, match="has no version 9 \\(it has 1\\)"):
        lp.data.load("iris-r@9")
    with pytest.raises(DatasetNotFoundError, match="use 'name@VERSION' or 'name@latest'"):
        lp.data.load("iris-r@v2")
    with pytest.raises(lp.errors.DataError, match="invalid dataset name 'Bad Name'"):
        lp.data.register(iris, "Bad Name")
    with pytest.raises(DatasetNotFoundError, match="known datasets"):
        lp.data.load("no-such-thing")


def test_a_store_of_its_own_keeps_its_versions_apart(tmp_path: Path, iris: Dataset) -> None:
    db = Database(f"sqlite:///{tmp_path / 'other.db'}")
    db.upgrade()
    store = DatasetVersionStore(db, LocalArtifactStore(tmp_path / "artifacts"))
    mine = lp.data.register(iris, "iris-own", store=store)
    assert mine.ref == "iris-own@1"
    assert (tmp_path / "artifacts").exists()
    _same(lp.data.load_version("iris-own@1", store=store), iris)
    with pytest.raises(DatasetNotFoundError, match="no registered dataset named 'iris-own'"):
        lp.data.versions("iris-own")  # the default store never saw it


# -- lp.data.load(path) -----------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = {np.dtype("uint8"): 0x08}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(header + array.tobytes())


def test_load_reads_each_format_by_its_path(tmp_path: Path, iris: Dataset, mnist: Dataset) -> None:
    x, y = iris.features.numpy(), iris.targets.numpy()  # type: ignore[union-attr]
    names = iris.feature_names or []
    csv = tmp_path / "iris.csv"
    lines = [",".join([*names, "species"])]
    lines += [
        ",".join([*(repr(float(v)) for v in row), str(t)]) for row, t in zip(x, y, strict=True)
    ]
    csv.write_text("\n".join(lines) + "\n")
    from_csv = lp.data.load(str(csv))
    assert torch.equal(from_csv.features, iris.features)
    assert from_csv.targets is not None
    assert from_csv.targets.tolist() == iris.targets.tolist()  # type: ignore[union-attr]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({**{n: x[:, i] for i, n in enumerate(names)}, "species": y})
    pq.write_table(table, tmp_path / "iris.parquet")
    assert torch.equal(lp.data.load(str(tmp_path / "iris.parquet")).features, iris.features)
    np.savez(tmp_path / "iris.npz", x=x, y=y)
    assert torch.equal(lp.data.load(str(tmp_path / "iris.npz")).targets, iris.targets)  # type: ignore[arg-type]
    images = (mnist.features.numpy()[:, 0] * 255).round().astype(np.uint8)
    labels = mnist.targets.numpy().astype(np.uint8)  # type: ignore[union-attr]
    folder = tmp_path / "mnist"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte", images)
    _write_idx(folder / "train-labels-idx1-ubyte", labels)
    from_folder = lp.data.load(str(folder))
    from_file = lp.data.load(str(folder / "train-images-idx3-ubyte"))
    assert torch.equal(from_folder.features, mnist.features)
    assert torch.equal(from_file.targets, mnist.targets)  # type: ignore[arg-type]


def test_load_reads_an_image_folder_and_refuses_what_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    digits = lp.data.load("digits", split="all")
    root = tmp_path / "digits"
    for i in range(20):
        label = str(int(digits.targets[i]))  # type: ignore[index]
        (root / label).mkdir(parents=True, exist_ok=True)
        pixels = (digits.features[i, 0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(root / label / f"{i}.png")
    loaded = lp.data.load(str(root))
    assert len(loaded) == 20
    assert loaded.input_shape == (3, 8, 8)
    assert loaded.classes == sorted({str(int(t)) for t in digits.targets[:20]})  # type: ignore[index]
    monkeypatch.chdir(tmp_path)  # a bare word: the catalog's name first, then a folder here
    assert len(lp.data.load("digits", split="all")) == 1797
    root.rename(tmp_path / "my-digits")
    assert len(lp.data.load("my-digits")) == 20
    with pytest.raises(DataSourceMissingError, match="does not exist; check the path"):
        lp.data.load(str(tmp_path / "missing.csv"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match=r"extension Lepton does not read \('\.txt'\)"):
        lp.data.load(str(tmp_path / "notes.txt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFormatError, match="is a folder Lepton cannot read as a dataset"):
        lp.data.load(str(empty))


def test_a_table_with_bad_rows_lists_every_one_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n3,oops,y\n\n5,6\n7,8,\n9,10,x\n")
    with pytest.raises(InvalidRowsError, match="3 bad rows of 5") as caught:
        read_checked_table(bad, target="label")
    problems: list[dict[str, Any]] = caught.value.problems
    assert [(p["line"], p["column"]) for p in problems] == [(3, "b"), (5, None), (6, "label")]
    assert "line 3: column 'b': 'oops' is not a number" in caught.value.message


@pytest.mark.integration
def test_versions_and_lineage_on_each_database_backend(
    db: Database, tmp_path: Path, iris: Dataset
) -> None:
    """The migration's tables on SQLite and PostgreSQL: two versions, a use, and the
    downgrade that removes them."""
    store = DatasetVersionStore(db, LocalArtifactStore(tmp_path / "artifacts"))
    first = lp.data.register(iris, "iris-db", store=store)
    second = lp.data.register(iris.subset(slice(0, 100)), "iris-db", store=store)
    store.record_use(second.fingerprint, model="iris-db-mlp:1")
    assert [v.ref for v in lp.data.versions("iris-db", store=store)] == ["iris-db@1", "iris-db@2"]
    assert lp.data.version("iris-db@2", store=store).used_by[0]["model"] == "iris-db-mlp:1"
    assert lp.data.register(iris, "iris-db", store=store).ref == first.ref
    assert store.names()[0]["versions"] == 2
    db.downgrade("0005")
    db.upgrade()
    assert store.versions("iris-db") == []


def test_the_snippets_of_docs_data_md_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # the first snippet writes iris.npz
    for block in blocks:
        exec(compile(block, "docs/data.md", "exec"), {})
    assert [v.ref for v in lp.data.versions("iris-demo")][-1] == "iris-demo@3"


def test_the_cli_registers_lists_and_diffs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lepton.cli._data import data_app

    first, second, bad = tmp_path / "t1.csv", tmp_path / "t2.csv", tmp_path / "bad.csv"
    first.write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n")
    second.write_text("a,b,y\n1,2,0\n3,4,1\n5,7,0\n")
    bad.write_text("a,b,y\n1,2,0\n3,x,1\n5,6,0\n")
    runner = CliRunner()
    made = runner.invoke(data_app, ["register", str(first), "--name", "toy"])
    assert made.exit_code == 0, made.output
    assert "registered toy@1: 3 rows, parquet" in made.output
    again = runner.invoke(data_app, ["register", str(first), "--name", "toy"])
    assert "already registered as toy@1" in again.output
    runner.invoke(data_app, ["register", str(second), "--name", "toy", "--derived-from", "toy@1"])
    listed = json.loads(runner.invoke(data_app, ["versions", "toy", "--json"]).output)
    assert [(v["ref"], v["derived_from"]) for v in listed] == [("toy@1", None), ("toy@2", "toy@1")]
    diff = json.loads(runner.invoke(data_app, ["diff", "toy@1", "toy@2", "--json"]).output)
    assert (diff["rows"]["added_rows"], diff["rows"]["removed_rows"]) == ([2], [2])
    refused = runner.invoke(data_app, ["register", str(bad), "--name", "bad"])
    assert isinstance(refused.exception, InvalidRowsError)
    assert "line 3: column 'b': 'x' is not a number" in refused.exception.message
