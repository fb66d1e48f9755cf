"""The architecture, checked statically: no import cycles, and no import points up a layer.

Every module under ``src/lepton`` is parsed with :mod:`ast`; nothing is imported. Every
import of a lepton module counts, lazy ones inside functions too; imports under
``if TYPE_CHECKING:`` do not (they never run). The checker is tested on a small planted
package first, so a checker that finds nothing cannot make the real-tree tests pass.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "lepton"
FACADE = "lepton"

# Lowest first. A module may import its own layer or a lower one. The articles' alias
# modules (tf_dataset, tf_model, tf_train, recommender) sit in the layer of what they alias.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "config", "_fs", "_procs", "_context", "_version", "_wire", "_callable", "_hooks"),
    ("data", "models", "storage", "tf_dataset", "tf_model"),
    ("train", "tracking", "tf_train"),
    ("registry",),
    (
        "tune", "compress", "explain", "privacy", "federated", "recommend", "graph", "text",
        "vision", "monitor", "apps", "recommender",
    ),
    ("serve",),
    ("platform",),
    ("cli",),
)  # fmt: skip
RANK: dict[str, int] = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# Stricter than its layer: the data layer stands on the leaves alone.
CEILING: dict[str, int] = {"data": 0}
# Inside the platform, the engines never reach into their front ends.
BOUNDARIES: tuple[tuple[str, str], ...] = (
    ("lepton.platform.jobs", "lepton.platform.api"),
    ("lepton.platform.jobs", "lepton.platform.web"),
    ("lepton.platform.deployments", "lepton.platform.api"),
    ("lepton.platform.deployments", "lepton.platform.web"),
)
# `import lepton` runs the public facade, which pulls in data, models, train and, lazily,
# registry, serve, storage and tracking: only the layers above all of them may use it.
FACADE_USERS: frozenset[str] = frozenset({"platform", "cli"})

Graph = dict[str, set[str]]
Edge = tuple[str, str]


# --- the checker -------------------------------------------------------------------------


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` bodies (the ``else:`` runs)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _from_base(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` reads from, relative levels resolved."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The lepton modules that module ``name`` (at ``path``) imports, anywhere in its body.

    ``from pkg import sub`` counts as an import of ``pkg.sub`` when that is a module, else of
    ``pkg``; ``importlib.import_module("...")`` with a literal name counts too.
    """
    known = set(modules)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return {target for target in found if target in known and target != name}


def import_graph(root: Path) -> Graph:
    """Module -> the package's modules it imports, for the package at ``root``."""
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module, sorted.

    Tarjan's algorithm, iterative so a deep package cannot hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return sorted(cycles)


def top_level(module: str) -> str | None:
    """``lepton.data._dataset`` -> ``data``; the facade ``lepton`` has none."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def unlayered_modules(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Modules whose top-level name is in no layer."""
    return sorted(m for m in graph if (top := top_level(m)) is not None and top not in RANK)


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[Edge]:
    """Imports of a higher layer than the importer's (or than its ceiling), sorted."""
    found: list[Edge] = []
    for importer, targets in graph.items():
        source = top_level(importer)
        if source is None or source not in RANK:
            continue
        ceiling = CEILING.get(source, RANK[source])
        for target in targets:
            dest = top_level(target)
            if dest is not None and dest != source and dest in RANK and RANK[dest] > ceiling:
                found.append((importer, target))
    return sorted(found)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def boundary_violations(graph: Mapping[str, Iterable[str]]) -> list[Edge]:
    """Imports that cross one of :data:`BOUNDARIES`, sorted."""
    return sorted(
        (importer, target)
        for importer, targets in graph.items()
        for target in targets
        for inner, outer in BOUNDARIES
        if _within(importer, inner) and _within(target, outer)
    )


def facade_imports(graph: Mapping[str, Iterable[str]]) -> list[Edge]:
    """Imports of the facade from outside :data:`FACADE_USERS`, sorted."""
    return sorted(
        (importer, FACADE)
        for importer, targets in graph.items()
        if FACADE in targets and importer != FACADE and top_level(importer) not in FACADE_USERS
    )


def _listing(edges: Iterable[Edge]) -> str:
    return "\n".join(f"  {a} -> {b}" for a, b in edges)


# --- the real tree -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Graph:
    found = import_graph(SRC)
    # A wrong SRC would give an empty graph in which every rule holds.
    assert {"lepton", "lepton.errors", "lepton.data"} <= found.keys()
    assert found["lepton"], "the facade imports nothing: the parser is broken"
    return found


def test_every_module_is_in_a_layer(graph: Graph) -> None:
    unknown = unlayered_modules(graph)
    assert not unknown, (
        "these modules' top-level names are in no layer; add them to LAYERS in "
        f"tests/unit/test_layers.py (and to SPEC.md's architecture): {unknown}"
    )


def test_no_import_cycles(graph: Graph) -> None:
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (break each by moving the shared code down):\n" + (
        "\n".join("  " + " <-> ".join(cycle) for cycle in cycles)
    )


def test_no_upward_imports(graph: Graph) -> None:
    upward = upward_imports(graph)
    assert not upward, (
        "imports that point up the layer order (move the imported code down, or pass it "
        "in from above):\n" + _listing(upward)
    )


def test_platform_engines_never_import_its_front_ends(graph: Graph) -> None:
    crossing = boundary_violations(graph)
    assert not crossing, (
        "lepton.platform.jobs and .deployments must not import .api or .web:\n" + _listing(crossing)
    )


def test_only_the_top_layers_import_the_facade(graph: Graph) -> None:
    users = facade_imports(graph)
    assert not users, (
        f"only {sorted(FACADE_USERS)} may `import lepton`; import the module that defines "
        "the name instead (for __version__: lepton._version):\n" + _listing(users)
    )


# --- the checker on a planted package ----------------------------------------------------


def plant(root: Path, files: Mapping[str, str]) -> Path:
    """Writes a fake ``lepton`` package under ``root`` and returns its folder."""
    package = root / "lepton"
    for relative, source in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return package


@pytest.fixture
def planted(tmp_path: Path) -> Graph:
    return import_graph(
        plant(
            tmp_path,
            {
                "__init__.py": "from lepton import data\nfrom lepton.train import fit\n",
                "errors.py": """
                    def hint():
                        import lepton.cli  # planted: lazy and upward
                        return lepton.cli
                """,
                "config.py": """
                    from typing import TYPE_CHECKING
                    if TYPE_CHECKING:
                        from lepton.serve import Service  # never runs: not an import
                    else:
                        from lepton import errors  # runs
                """,
                "data/__init__.py": "from lepton.data._dataset import Dataset\n",
                "data/_dataset.py": "from ..models import MLP  # planted: data above layer 0\n",
                "models/__init__.py": "from . import _mlp\n",
                "models/_mlp.py": "import lepton\n",  # planted: the facade, from layer 1
                "train/__init__.py": "from lepton.train._fit import fit\n",
                "train/_fit.py": "from lepton.train import _loop\n",
                "train/_loop.py": "from lepton.train._fit import fit  # planted: a cycle\n",
                "serve/__init__.py": "",
                "cli/__init__.py": "import lepton\nimport importlib\n"
                "importlib.import_module('lepton.serve')\n",
                "platform/__init__.py": "",
                "platform/jobs/__init__.py": "",
                "platform/jobs/_run.py": "from lepton.platform.web import _pages  # planted\n",
                "platform/web/__init__.py": "from . import _pages\n",
                "platform/web/_pages.py": "from lepton.platform import jobs\n",
                "mystery/__init__.py": "",  # planted: in no layer
            },
        )
    )


def test_checker_builds_the_graph_with_lazy_relative_and_literal_imports(planted: Graph) -> None:
    assert planted["lepton.errors"] == {"lepton.cli"}  # inside a function
    assert planted["lepton.config"] == {"lepton.errors"}  # TYPE_CHECKING body skipped
    assert planted["lepton.data._dataset"] == {"lepton.models"}  # `from ..models`
    assert planted["lepton.models"] == {"lepton.models._mlp"}  # `from . import _mlp`
    # `from lepton.train import _loop` is the submodule, not the package's __init__
    assert planted["lepton.train._fit"] == {"lepton.train._loop"}
    assert planted["lepton.cli"] == {"lepton", "lepton.serve"}  # import_module("...")
    assert planted["lepton"] == {"lepton.data", "lepton.train"}


def test_checker_finds_the_planted_cycle(planted: Graph) -> None:
    assert find_cycles(planted) == [
        # through the facade: models._mlp imports `lepton`, which imports data -> models
        ["lepton", "lepton.data", "lepton.data._dataset", "lepton.models", "lepton.models._mlp"],
        ["lepton.train._fit", "lepton.train._loop"],
    ]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_checker_finds_the_planted_upward_imports(planted: Graph) -> None:
    assert upward_imports(planted) == [
        ("lepton.data._dataset", "lepton.models"),  # data's ceiling is layer 0
        ("lepton.errors", "lepton.cli"),
    ]


def test_checker_finds_the_planted_boundary_crossing(planted: Graph) -> None:
    assert boundary_violations(planted) == [
        ("lepton.platform.jobs._run", "lepton.platform.web._pages")
    ]


def test_checker_finds_the_planted_facade_import(planted: Graph) -> None:
    assert facade_imports(planted) == [("lepton.models._mlp", "lepton")]  # not cli's


def test_checker_finds_the_module_in_no_layer(planted: Graph) -> None:
    assert unlayered_modules(planted) == ["lepton.mystery"]
