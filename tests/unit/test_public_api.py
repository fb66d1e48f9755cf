"""The public surface is exact, and the error tree is one tree with stable codes."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import lepton as lp
import lepton.registry
import lepton.serve
import lepton.storage
import lepton.tracking
from lepton import errors
from lepton._fs import atomic_dir, atomic_write_bytes


def test_top_level_all_is_exact():
    assert sorted(lp.__all__) == sorted(
        [
            "Callback",
            "Client",
            "EarlyStopping",
            "FitResult",
            "LeptonError",
            "LinearRegression",
            "LogisticRegression",
            "Prediction",
            "Service",
            "Tensor",
            "__version__",
            "data",
            "errors",
            "evaluate",
            "fit",
            "handler",
            "Image",
            "load_model",
            "models",
            "register",
            "registry",
            "serve",
            "start_run",
            "storage",
            "tracking",
        ]
    )
    for name in lp.__all__:
        assert hasattr(lp, name), name


@pytest.mark.parametrize(
    "module",
    [
        lp.data,
        lp.models,
        lp.errors,
        lp.train,
        lepton.storage,
        lepton.tracking,
        lepton.registry,
        lepton.serve,
    ],
)
def test_subpackage_all_names_exist_and_are_public(module):
    for name in module.__all__:
        assert hasattr(module, name), f"{module.__name__}.{name}"
        assert not name.startswith("_")


def test_every_error_is_a_lepton_error_with_a_unique_code():
    classes = [
        obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, Exception)
    ]
    assert set(errors.__all__) == {c.__name__ for c in classes}
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert issubclass(cls, errors.LeptonError)
        assert cls.__doc__
        err = cls("how to fix it")
        assert err.message == "how to fix it"
        assert str(err) == "how to fix it"


def test_atomic_write_replaces_whole_file(tmp_path: Path):
    target = tmp_path / "a" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no temp files left


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "version-1"

    def crash() -> None:
        with atomic_dir(target) as tmp:
            (tmp / "weights.bin").write_bytes(b"partial")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash"):
        crash()
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"complete")
    assert (target / "weights.bin").read_bytes() == b"complete"
