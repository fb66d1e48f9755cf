"""A model artifact may reference nothing outside itself.

ONNX tensors can keep their bytes in "external data" files that onnxruntime would read
from the serving machine; every place ONNX allows such a tensor is tried here, at
registration and at load (bytes written straight into the artifact store, as if they had
slipped past registration). PyTorch versions are checked through their manifest, which
may name only the version's own weights file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lepton as lp
from lepton import registry
from lepton.errors import IntegrityError, UnsafeFormatError
from lepton.registry._artifact_check import ARTIFACT_FILES
from lepton.registry._load import LOADERS
from lepton.serve._model import ModelService
from lepton.storage import artifact_store, open_database
from lepton.storage.schema import ModelVersionRow

SECRET = b"admin-token-0123456789abcdef"
REFUSED = r"ONNX model refers to external data \(.+\); export it with all tensors inside the file"


@pytest.fixture
def onnx() -> Any:
    return pytest.importorskip("onnx", reason="ONNX support is the lepton[onnx] extra (in dev)")


@pytest.fixture
def secret_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a secret file, as a server's would."""
    folder = tmp_path / "server-cwd"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(folder)
    return folder


# -- models ----------------------------------------------------------------------------


def external(name: str, location: str = "secret.txt", *, flag: bool = True) -> Any:
    """A uint8 tensor whose bytes live in ``location`` (``flag``: data_location too)."""
    from onnx import TensorProto

    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[len(SECRET)])
    if flag:
        tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _model(
    nodes: list[Any],
    initializers: tuple[Any, ...] | list[Any] = (),
    out_shape: list[int] | None = None,
    **extra: Any,
) -> Any:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [len(SECRET)])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, out_shape or [len(SECRET)])],
        list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **extra)


def _leak(location: str, flag: bool = True) -> Any:
    from onnx import helper

    return _model(
        [helper.make_node("Identity", ["w"], ["y"])], [external("w", location, flag=flag)]
    )


def initializer_relative() -> Any:
    return _leak("secret.txt")


def initializer_absolute() -> Any:
    return _leak(str(Path.cwd() / "secret.txt"))


def initializer_dotdot() -> Any:
    return _leak("../server-cwd/secret.txt")


def initializer_location_without_flag() -> Any:
    return _leak("secret.txt", flag=False)


def initializer_flag_without_location() -> Any:
    model = _leak("secret.txt")
    del model.graph.initializer[0].external_data[:]
    return model


def sparse_initializer() -> Any:
    from onnx import helper

    indices = helper.make_tensor("w_idx", 7, [1], [0])  # INT64
    sparse = helper.make_sparse_tensor(external("w_values"), indices, [len(SECRET)])
    model = _model([helper.make_node("Identity", ["x"], ["y"])])
    model.graph.sparse_initializer.append(sparse)
    return model


def constant_value() -> Any:
    from onnx import helper

    return _model([helper.make_node("Constant", [], ["y"], value=external("w"))])


def constant_sparse_value() -> Any:
    from onnx import helper

    indices = helper.make_tensor("idx", 7, [1], [0])
    sparse = helper.make_sparse_tensor(external("w"), indices, [len(SECRET)])
    return _model([helper.make_node("Constant", [], ["y"], sparse_value=sparse)])


def tensors_attribute() -> Any:
    from onnx import helper

    node = helper.make_node("Identity", ["x"], ["y"])
    node.attribute.append(helper.make_attribute("extra", [external("")]))  # TENSORS, unnamed
    return _model([node])


def _branch(name: str) -> Any:
    from onnx import TensorProto, helper

    return helper.make_graph(
        [helper.make_node("Identity", ["w"], [f"{name}_out"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.UINT8, [len(SECRET)])],
        [external("w")],
    )


def if_subgraph() -> Any:
    from onnx import TensorProto, helper

    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    node = helper.make_node(
        "If", ["cond"], ["y"], then_branch=_branch("then"), else_branch=_branch("else")
    )
    return _model([node], [cond])


def _body(name: str, inputs: list[Any], carried: list[str]) -> Any:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", [c], [f"{c}_out"]) for c in carried]
    nodes.append(helper.make_node("Identity", ["w"], [f"{name}_out"]))
    outputs = [helper.make_tensor_value_info(f"{c}_out", TensorProto.BOOL, []) for c in carried]
    outputs.append(helper.make_tensor_value_info(f"{name}_out", TensorProto.UINT8, [len(SECRET)]))
    return helper.make_graph(nodes, name, inputs, outputs, [external("w")])


def loop_body() -> Any:
    from onnx import TensorProto, helper

    inputs = [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("c", TensorProto.BOOL, []),
    ]
    trips = helper.make_tensor("trips", TensorProto.INT64, [], [1])
    node = helper.make_node("Loop", ["trips", ""], ["y"], body=_body("body", inputs, ["c"]))
    return _model([node], [trips], out_shape=[1, len(SECRET)])


def scan_body() -> Any:
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("xi", TensorProto.UINT8, [])]
    node = helper.make_node("Scan", ["x"], ["y"], body=_body("body", inputs, []), num_scan_inputs=1)
    return _model([node], out_shape=[len(SECRET), len(SECRET)])


def nested_subgraph() -> Any:
    from onnx import TensorProto, helper

    inner = helper.make_node("If", ["cond"], ["then_out"], then_branch=_branch("inner"),
                             else_branch=_branch("inner2"))  # fmt: skip
    outer = helper.make_graph(
        [inner], "then", [], [helper.make_tensor_value_info("then_out", TensorProto.UINT8, None)]
    )
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=outer, else_branch=_branch("e"))
    return _model([node], [cond])


def local_function() -> Any:
    from onnx import helper

    body = helper.make_node("Constant", [], ["out"], value=external("w"))
    function = helper.make_function(
        "local", "leak", [], ["out"], [body], [helper.make_opsetid("", 17)]
    )
    model = _model(
        [helper.make_node("leak", [], ["y"], domain="local")],
        functions=[function],
    )
    model.opset_import.append(helper.make_opsetid("local", 1))
    return model


def training_initializer() -> Any:
    from onnx import helper

    model = _model([helper.make_node("Identity", ["x"], ["y"])])
    model.training_info.add().initialization.CopyFrom(_branch("init"))
    return model


EXTERNAL_DATA: dict[str, Callable[[], Any]] = {
    fn.__name__: fn
    for fn in (
        initializer_relative,
        initializer_absolute,
        initializer_dotdot,
        initializer_location_without_flag,
        initializer_flag_without_location,
        sparse_initializer,
        constant_value,
        constant_sparse_value,
        tensors_attribute,
        if_subgraph,
        loop_body,
        scan_body,
        nested_subgraph,
        local_function,
        training_initializer,
    )
}


def a_valid_model() -> Any:
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.arange(len(SECRET), dtype=np.uint8), "w")
    return _model([helper.make_node("Add", ["x", "w"], ["y"])], [w])


def assert_says_nothing_about_files(message: str, folder: Path) -> None:
    for leak in (str(folder), "secret", "/", "..", "exist", "bytes", str(len(SECRET))):
        assert leak not in message


def slip_into_store(
    name: str, data: bytes, manifest_change: Callable[[dict[str, Any]], None]
) -> str:
    """Register a valid version, then swap its stored file and manifest, as a tamperer
    with write access to the store and database could: the loader must still refuse."""
    if name.startswith("onnx"):
        path = Path.cwd() / f"{name}.onnx"
        path.write_bytes(a_valid_model().SerializeToString())
        version = registry.register_onnx(path, name)
        path.unlink()
    else:
        version = lp.register(lp.models.MLP(in_features=4, num_classes=3, hidden=[8]), name)
    kind_file = ARTIFACT_FILES[version.manifest["kind"]]
    info = artifact_store().put(f"models/{name}/{version.version}/{kind_file}", data)
    with open_database().session() as s:
        row = s.get(ModelVersionRow, _row_id(s, name))
        assert row is not None
        manifest = copy.deepcopy(row.manifest)
        manifest["files"] = {kind_file: {"sha256": info.sha256, "size": info.size}}
        manifest_change(manifest)
        row.manifest = manifest
    return version.ref


def _row_id(session: Any, name: str) -> int:
    from sqlalchemy import select

    return int(session.scalar(select(ModelVersionRow.id).where(ModelVersionRow.model_name == name)))


# -- ONNX ------------------------------------------------------------------------------


def test_the_relative_case_is_a_real_attack_on_plain_onnxruntime(
    onnx: Any, secret_dir: Path
) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(
        initializer_relative().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    assert bytes(session.run(None, {"x": np.zeros(len(SECRET), np.uint8)})[0]) == SECRET


@pytest.mark.parametrize("case", sorted(EXTERNAL_DATA))
def test_external_data_is_refused_at_register(onnx: Any, secret_dir: Path, case: str) -> None:
    path = secret_dir / "upload.onnx"
    path.write_bytes(EXTERNAL_DATA[case]().SerializeToString())
    with pytest.raises(UnsafeFormatError, match=REFUSED) as refused:
        registry.register_onnx(path, "leaky")
    assert_says_nothing_about_files(refused.value.message, secret_dir)
    assert "save_as_external_data=False" in refused.value.message
    assert registry.list_models() == []


@pytest.mark.parametrize("case", sorted(EXTERNAL_DATA))
def test_external_data_is_refused_at_load(onnx: Any, secret_dir: Path, case: str) -> None:
    ref = slip_into_store("onnx-leaky", EXTERNAL_DATA[case]().SerializeToString(), lambda m: None)
    with pytest.raises(UnsafeFormatError, match=REFUSED) as refused:
        lp.load_model(ref)
    assert_says_nothing_about_files(refused.value.message, secret_dir)
    with pytest.raises(UnsafeFormatError, match=REFUSED):
        registry.OnnxModule(EXTERNAL_DATA[case]().SerializeToString())


def test_the_model_service_refuses_before_onnxruntime_reads(onnx: Any, secret_dir: Path) -> None:
    ref = slip_into_store("onnx-served", initializer_relative().SerializeToString(), lambda m: None)
    service = ModelService(ref)
    with pytest.raises(UnsafeFormatError, match=REFUSED):
        service.setup()
    assert not hasattr(service, "model")


def test_file_reading_nodes_are_refused(onnx: Any, secret_dir: Path) -> None:
    from onnx import helper

    node = helper.make_node(
        "EPContext", ["x"], ["y"], domain="com.microsoft", embed_mode=0,
        ep_cache_context="secret.txt",
    )  # fmt: skip
    path = secret_dir / "ctx.onnx"
    path.write_bytes(_model([node]).SerializeToString())
    with pytest.raises(UnsafeFormatError, match=r"EPContext node .* can read another file") as exc:
        registry.register_onnx(path, "ctx")
    assert_says_nothing_about_files(exc.value.message, secret_dir)


def test_a_self_contained_model_still_registers_and_runs(onnx: Any, secret_dir: Path) -> None:
    path = secret_dir / "fine.onnx"
    path.write_bytes(a_valid_model().SerializeToString())
    version = registry.register_onnx(path, "fine")
    out = lp.load_model(version.ref)(torch.zeros(len(SECRET), dtype=torch.uint8))
    assert out.tolist() == list(range(len(SECRET)))


@pytest.mark.parametrize("files", [
    {"../../secret.txt": {}},
    {"/etc/passwd": {}},
    {"model.onnx": {}, "../model.onnx": {}},
    {"sub/model.onnx": {}},
])  # fmt: skip
def test_an_onnx_manifest_cannot_name_other_files(
    onnx: Any, secret_dir: Path, files: dict[str, Any]
) -> None:
    def change(manifest: dict[str, Any]) -> None:
        sha = manifest["files"]["model.onnx"]["sha256"]
        manifest["files"] = {name: {"sha256": sha} for name in files}

    ref = slip_into_store("onnx-manifest", a_valid_model().SerializeToString(), change)
    with pytest.raises(IntegrityError, match=r"must list exactly its model\.onnx") as exc:
        lp.load_model(ref)
    assert "secret" not in exc.value.message
    assert "passwd" not in exc.value.message


# -- PyTorch (safetensors + manifest) ----------------------------------------------------


@pytest.mark.parametrize("files", [
    {"../../secret.txt": {}},
    {"/etc/passwd": {}},
    {"model.safetensors": {}, "../../runs/1/other.safetensors": {}},
    {"weights/model.safetensors": {}},
    {},
])  # fmt: skip
def test_a_pytorch_manifest_cannot_name_other_files(
    secret_dir: Path, files: dict[str, Any]
) -> None:
    import safetensors.torch

    weights = safetensors.torch.save({"w": torch.zeros(2)})

    def change(manifest: dict[str, Any]) -> None:
        sha = manifest["files"]["model.safetensors"]["sha256"]
        manifest["files"] = {name: {"sha256": sha} for name in files}

    ref = slip_into_store("torch-manifest", weights, change)
    with pytest.raises(IntegrityError, match=r"must list exactly its model\.safetensors") as exc:
        lp.load_model(ref)
    assert "secret" not in exc.value.message
    assert "passwd" not in exc.value.message


def test_an_unknown_kind_is_refused(secret_dir: Path) -> None:
    def change(manifest: dict[str, Any]) -> None:
        manifest["kind"] = "../../plugin"

    ref = slip_into_store("torch-kind", b"{}", change)
    with pytest.raises(IntegrityError, match="unknown kind; this Lepton loads onnx, pytorch"):
        lp.load_model(ref)


# -- no format slips past ---------------------------------------------------------------

REFUSAL_TESTS: dict[str, list[Callable[..., None]]] = {
    "onnx": [
        test_external_data_is_refused_at_register,
        test_external_data_is_refused_at_load,
        test_an_onnx_manifest_cannot_name_other_files,
    ],
    "pytorch": [test_a_pytorch_manifest_cannot_name_other_files],
}


def test_every_loadable_kind_has_a_refusal_test() -> None:
    assert set(LOADERS) == set(ARTIFACT_FILES), "each loader needs its one file in ARTIFACT_FILES"
    missing = set(LOADERS) - set(REFUSAL_TESTS)
    assert not missing, f"artifact kinds {missing} have no refusal test here: add one"
