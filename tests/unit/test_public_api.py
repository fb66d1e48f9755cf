"""The public surface is exact, and the error tree is one tree with stable codes."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

import lepton as lp
from lepton import errors
from lepton._fs import atomic_dir, atomic_write_bytes


def test_top_level_all_is_exact() -> None:
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
            "automl",
            "compress",
            "data",
            "errors",
            "evaluate",
            "explain",
            "federated",
            "fit",
            "graph",
            "handler",
            "Image",
            "load_model",
            "models",
            "monitor",
            "privacy",
            "recommend",
            "register",
            "registry",
            "serve",
            "start_run",
            "storage",
            "text",
            "tracking",
            "tune",
            "vision",
        ]
    )
    for name in lp.__all__:
        assert hasattr(lp, name), name


def test_lp_tune_is_the_package_and_the_function() -> None:
    from lepton.tune import Float, tune

    result = lp.tune(lambda p: (p["x"] - 1) ** 2, {"x": Float(0, 2)}, n_trials=3, study="facade")
    assert result.study == "facade"
    assert lp.tune.tune is tune
    assert lp.explain.explain is lp.explain.__dict__["explain"]
    assert callable(lp.explain)
    assert lp.tune.__doc__ is not None
    assert "Optuna" in lp.tune.__doc__


# --- every public package's __all__ is exact ---

SRC = Path(lp.__file__).parent


def public_packages() -> list[str]:
    """Every package under src/lepton with no private (``_x``) part in its name."""
    names = []
    for init in sorted(SRC.rglob("__init__.py")):
        parts = [SRC.name, *init.parent.relative_to(SRC).parts]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


PACKAGES = public_packages()


def foreign_names(init: Path) -> set[str]:
    """Names the module-level code of ``init`` imports from outside lepton (``Any``,
    ``FastAPI``, ``annotations``): helpers for the package's own code, not its API."""
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(init.read_text(encoding="utf-8"))]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found.update(
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.split(".")[0] != "lepton"
            )
        elif isinstance(node, ast.ImportFrom):
            if not node.level and (node.module or "").split(".")[0] != "lepton":
                found.update(a.asname or a.name for a in node.names)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            pending.extend(ast.iter_child_nodes(node))
    return found


def isort_style(name: str) -> tuple[int, list[int | str]]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, then Classes, then the
    rest, each in natural order (so the test and the linter never disagree)."""
    kind = 0 if len(name) > 1 and name.isupper() else 1 if name[:1].isupper() else 2
    return kind, [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def test_packages_are_discovered() -> None:
    # an empty list would parametrize the exactness test away
    assert {"lepton", "lepton.data", "lepton.models", "lepton.train"} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_package_all_is_exact(name: str) -> None:
    init = SRC.joinpath(*name.split(".")[1:], "__init__.py")
    if not ast.parse(init.read_text(encoding="utf-8")).body:
        pytest.skip(f"{name} is an empty container (its __init__.py defines nothing)")
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list; declare its public names"
    duplicates = sorted({n for n in exported if exported.count(n) > 1})
    assert not duplicates, f"{name}.__all__ names these twice: {duplicates}"
    absent = [n for n in exported if not hasattr(package, n)]
    assert not absent, f"{name}.__all__ names what the package lacks: {absent}"
    private = [n for n in exported if n.startswith("_") and not n.startswith("__")]
    assert not private, f"{name}.__all__ exports private names: {private}"
    public = {
        n
        for n, value in vars(package).items()
        if not n.startswith("_") and not isinstance(value, types.ModuleType)
    }
    unlisted = sorted(public - set(exported) - foreign_names(init))
    assert not unlisted, (
        f"{name} defines these public names outside __all__; add them to __all__ or "
        f"rename them with a leading underscore: {unlisted}"
    )
    assert exported == sorted(exported, key=isort_style), (
        f"{name}.__all__ is not sorted; `ruff check --select RUF022 --fix` sorts it"
    )


def test_every_error_is_a_lepton_error_with_a_unique_code() -> None:
    classes = [
        obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, Exception)
    ]
    assert classes
    assert set(errors.__all__) == {c.__name__ for c in classes}
    codes = [c.code for c in classes]  # type: ignore[attr-defined]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert issubclass(cls, errors.LeptonError)
        assert cls.__doc__
        err = cls("how to fix it")
        assert err.message == "how to fix it"
        assert str(err) == "how to fix it"


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no temp files left


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
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
