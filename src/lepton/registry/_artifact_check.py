"""One rule for every stored model: an artifact may reference nothing outside itself.

A registered version is one file in the artifact store (``model.safetensors`` or
``model.onnx``) plus a manifest. Two formats could otherwise point elsewhere:

* ONNX tensors may keep their bytes in *external data* files; onnxruntime resolves a
  relative location against the model's folder, or the working directory when it loads
  bytes, so an uploaded model could read any file of the serving machine.
  :func:`check_self_contained` walks every message of the model, whatever field holds it
  (initializers, sparse initializers, node attributes, subgraphs, functions, training
  info), and refuses any external reference. It runs at registration, at load and so
  before onnxruntime sees a byte (:class:`~lepton.registry._onnx_runtime.OnnxModule`).
* A manifest lists the version's files; :func:`artifact_file` accepts exactly the one
  file its kind stores, so no name can reach outside the version's store prefix.

Refusals never say where a reference points, whether it exists or how large it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from lepton.errors import IntegrityError, LeptonError, RegistryError, UnsafeFormatError

__all__ = [
    "ARTIFACT_FILES",
    "artifact_file",
    "check_self_contained",
    "need_onnx",
    "parse_onnx",
]

#: The single file each manifest ``kind`` stores in ``models/<name>/<version>/``.
ARTIFACT_FILES: dict[str, str] = {"pytorch": "model.safetensors", "onnx": "model.onnx"}

_FIX = (
    "export it with all tensors inside the file "
    "(onnx.save(model, path, save_as_external_data=False))"
)
# ONNX Runtime's EPContext node can name a cache file (embed_mode=0) to read at load.
_FILE_READING_OPS = frozenset({"EPContext"})


def need_onnx() -> Any:
    """The ``onnx`` and ``onnxruntime`` modules, or a message saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise LeptonError("ONNX support needs: pip install 'lepton[onnx]'") from None
    return onnx, onnxruntime


def _label(text: str) -> str:
    return repr(text[:80]) if text else "unnamed"


def _messages(root: Any) -> Iterator[tuple[Any, str]]:
    """Every protobuf message under ``root`` (itself included), with where it sits.

    Generic over the descriptor, so a field ONNX adds later is walked too.
    """
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        message, where = stack.pop()
        yield message, where
        kind = message.DESCRIPTOR.name
        if kind == "NodeProto":
            where = f"node {_label(message.name or message.op_type)}"
        elif kind == "AttributeProto":
            where = f"attribute {_label(message.name)} of {where or 'a node'}"
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if hasattr(value, "DESCRIPTOR"):  # one message
                children: Any = (value,)
            elif isinstance(value, Mapping):
                children = value.values()
            else:  # a repeated field
                children = value
            stack.extend((child, where) for child in children)


def check_self_contained(model: Any) -> None:
    """Refuse an ONNX ``ModelProto`` that references anything outside its own bytes.

    Raises:
        UnsafeFormatError: A tensor anywhere in the model keeps its data in an external
            file, or a node reads a file when loaded. The message names the tensor or
            node, never the file.
    """
    from onnx import TensorProto

    for message, where in _messages(model):
        kind = message.DESCRIPTOR.name
        if kind == "TensorProto" and (
            message.data_location == TensorProto.EXTERNAL or len(message.external_data) > 0
        ):
            name = f"tensor {_label(message.name)}" if message.name else f"tensor in {where}"
            raise UnsafeFormatError(f"ONNX model refers to external data ({name}); {_FIX}")
        if kind == "NodeProto" and message.op_type in _FILE_READING_OPS:
            raise UnsafeFormatError(
                f"ONNX model has a {message.op_type} node ({_label(message.name)}), which can "
                f"read another file; export the plain model, {_FIX}"
            )


def parse_onnx(data: bytes) -> Any:
    """Parse and validate ONNX bytes: self-contained first, then ``onnx.checker``.

    The self-containment check runs before the checker, which would otherwise look for
    external files and say whether they exist.

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        RegistryError: Not a valid ONNX model.
        UnsafeFormatError: It references something outside itself.
    """
    onnx, _ = need_onnx()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, and onnx's own errors
        raise RegistryError(
            f"the file is not a valid ONNX model ({type(exc).__name__}); export it again "
            f"with torch.onnx.export or your framework's ONNX converter"
        ) from None
    check_self_contained(model)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types
        raise RegistryError(
            f"the file is not a valid ONNX model ({exc}); export it again with "
            f"torch.onnx.export or your framework's ONNX converter"
        ) from None
    return model


def artifact_file(ref: str, manifest: Mapping[str, Any]) -> tuple[str, str, str]:
    """The one file a version's manifest may name, checked before anything is read.

    Returns:
        ``(kind, file name, sha256)``: the file lives at ``models/<name>/<version>/<file>``.

    Raises:
        IntegrityError: The manifest's kind is unknown, or it lists any file other than
            the one its kind stores (a path, ``..``, a second file), or no valid hash.
    """
    kind = manifest.get("kind", "pytorch")
    expected = ARTIFACT_FILES.get(kind) if isinstance(kind, str) else None
    if expected is None:
        raise IntegrityError(
            f"{ref}: its manifest has an unknown kind; this Lepton loads "
            f"{', '.join(sorted(ARTIFACT_FILES))} versions: upgrade Lepton or register the "
            f"model again"
        )
    files = manifest.get("files")
    entry = files.get(expected) if isinstance(files, Mapping) and len(files) == 1 else None
    sha256 = entry.get("sha256") if isinstance(entry, Mapping) else None
    if not (
        isinstance(sha256, str) and len(sha256) == 64 and set(sha256) <= set("0123456789abcdef")
    ):
        raise IntegrityError(
            f"{ref}: its manifest must list exactly its {expected} with a SHA-256, and lists "
            f"something else; the version was tampered with: register the model again"
        )
    return kind, expected, sha256
