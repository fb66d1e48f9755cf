"""The model registry on a real database and artifact store, over SQLite and PostgreSQL."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lepton as lp
from lepton import registry
from lepton.errors import IntegrityError, RegistryError, UnsafeFormatError
from lepton.storage import Database, artifact_store

pytestmark = pytest.mark.integration


def trained(seed: int = 0) -> tuple[torch.nn.Module, lp.data.Dataset, lp.FitResult]:
    torch.manual_seed(seed)
    train = lp.data.load("iris", split="train").standardize()
    model = lp.models.MLP(in_features=4, num_classes=3, hidden=[16])
    return model, train, lp.fit(model, train, epochs=3, quiet=True, seed=seed)


def test_register_load_stages_and_aliases(db: Database):
    model, train, result = trained()
    v1 = lp.register(model, "iris-mlp", metrics=result.metrics, dataset=train, database=db)
    assert (v1.ref, v1.state, v1.stage) == ("iris-mlp:1", "ready", None)
    manifest = v1.manifest
    assert manifest["architecture"] == lp.models.model_spec(model)
    assert manifest["dataset"]["fingerprint"] == train.fingerprint()
    assert manifest["input_schema"]["shape"] == [4]
    assert manifest["output_schema"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert manifest["preprocessing"][0]["op"] == "standardize"
    assert manifest["metrics"] == pytest.approx(result.metrics)
    assert registry.manifest_of("iris-mlp:1", database=db) == manifest

    loaded = lp.load_model("iris-mlp:1", database=db)
    x = train.features[:10]
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training

    other, _, _ = trained(seed=1)
    v2 = lp.register(other, "iris-mlp", dataset=train, database=db)
    assert v2.version == 2
    assert registry.resolve("iris-mlp", database=db).version == 2
    registry.set_stage("iris-mlp:1", "production", database=db)
    assert registry.resolve("iris-mlp@production", database=db).version == 1
    registry.set_alias("iris-mlp:2", "champion", database=db)
    registry.set_alias("iris-mlp:1", "champion", database=db)  # aliases move
    assert registry.resolve("iris-mlp@champion", database=db).version == 1
    assert registry.resolve("iris-mlp:1", database=db).aliases == ("champion",)
    assert [v.version for v in registry.list_versions("iris-mlp", database=db)] == [2, 1]
    assert registry.list_models(database=db) == [
        {"name": "iris-mlp", "versions": 2, "latest": 2, "description": ""}
    ]
    card = registry.model_card_text("iris-mlp:1", database=db)
    assert train.fingerprint() in card
    assert "| accuracy |" in card

    with pytest.raises(RegistryError, match="stage must be"):
        registry.set_stage("iris-mlp:1", "prod", database=db)
    with pytest.raises(RegistryError, match="not a stage name"):
        registry.set_alias("iris-mlp:1", "production", database=db)
    with pytest.raises(RegistryError, match="lepton models show iris-mlp"):
        registry.resolve("iris-mlp:7", database=db)
    with pytest.raises(RegistryError, match="invalid model name"):
        lp.register(model, "../evil", database=db)

    registry.delete_version("iris-mlp:2", database=db)
    assert registry.resolve("iris-mlp", database=db).version == 1


def test_tampered_weights_are_refused():
    model, train, _ = trained()
    lp.register(model, "tamper", dataset=train)
    store = artifact_store()
    store.put("models/tamper/1/model.safetensors", b"not the registered weights")
    with pytest.raises(IntegrityError, match="tampered"):
        lp.load_model("tamper:1")


def test_models_lepton_cannot_rebuild_are_refused():
    with pytest.raises(RegistryError, match="ONNX"):
        lp.register(torch.nn.Linear(3, 2), "plain-linear")


def test_register_inside_a_run_records_lineage():
    with lp.start_run("train-and-register") as run:
        model, train, result = trained()
        version = lp.register(model, "lineage", metrics=result.metrics, dataset=train)
    assert version.run_id == run.id
    assert version.manifest["run_id"] == run.id


class Exploit:
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.canary, "w"))


def test_pickles_are_refused_and_never_run(tmp_path: Path):
    canary = tmp_path / "CANARY"
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Exploit(str(canary))}))
    with pytest.raises(UnsafeFormatError, match="never loads pickles"):
        lp.load_model(str(evil))
    disguised = tmp_path / "weights.safetensors"
    disguised.write_bytes(evil.read_bytes())
    with pytest.raises(UnsafeFormatError, match="safetensors"):
        registry.check_not_pickle(disguised)
    torch.save({"w": torch.zeros(2)}, tmp_path / "zipped.weights")  # torch's zip-of-pickle
    with pytest.raises(UnsafeFormatError, match="pickle"):
        registry.check_not_pickle(tmp_path / "zipped.weights")
    assert not canary.exists()


REGISTER_AND_DIE = textwrap.dedent(
    """
    import os, time, torch
    import lepton as lp
    torch.manual_seed(0)
    small = lp.models.MLP(in_features=4, num_classes=3, hidden=[8])
    lp.register(small, "big", metrics={"accuracy": 0.5})
    print("v1", flush=True)
    real_fsync, calls = os.fsync, [0]
    def fsync(fd):
        calls[0] += 1
        if calls[0] == 1:  # inside the write of the large weights file
            print("blocked", flush=True)
            time.sleep(60)
        real_fsync(fd)
    os.fsync = fsync
    large = lp.models.MLP(in_features=4, num_classes=3, hidden=[2048, 2048])  # ~17 MB
    lp.register(large, "big")
    """
)


def test_kill_during_register_exposes_no_partial_version():
    proc = subprocess.Popen([sys.executable, "-c", REGISTER_AND_DIE], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "v1"
    assert proc.stdout.readline().strip() == "blocked"
    proc.kill()
    proc.wait(timeout=30)
    assert registry.resolve("big").version == 1  # the half-written version 2 is invisible
    assert [v.version for v in registry.list_versions("big")] == [1]
    pending = registry.list_versions("big", include_pending=True)
    assert [(v.version, v.state) for v in pending] == [(2, "pending"), (1, "ready")]
    assert artifact_store().verify() == []
    assert isinstance(lp.load_model("big"), torch.nn.Module)


def test_a_manifest_naming_files_outside_its_version_is_refused(db: Database) -> None:
    from sqlalchemy import select

    from lepton.storage.schema import ModelVersionRow

    model, train, _ = trained()
    version = lp.register(model, "escape", dataset=train, database=db)
    with db.session() as s:
        row = s.scalars(select(ModelVersionRow).where(ModelVersionRow.model_name == "escape")).one()
        entry = row.manifest["files"]["model.safetensors"]
        row.manifest = {**row.manifest, "files": {"../../../lepton.db": entry}}
    with pytest.raises(IntegrityError, match=r"must list exactly its model\.safetensors") as exc:
        lp.load_model(version.ref, database=db)
    assert "lepton.db" not in exc.value.message
