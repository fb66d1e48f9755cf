"""Build models by name: the registry behind ``build``, ``model_spec`` and manifests.

A class decorated with :func:`register_model` records the arguments it was built with,
so any instance can be written to a JSON manifest (``model_spec``) and rebuilt from it
(``build``) with identical parameter names and shapes.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from lepton.errors import UnknownModelError

__all__ = [
    "available_models",
    "build",
    "model_defaults",
    "model_parameters",
    "model_spec",
    "register_model",
]

_M = TypeVar("_M", bound=type[nn.Module])
_REGISTRY: dict[str, type[nn.Module]] = {}
_CONFIG_ATTR = "_lepton_config"
_NAME_ATTR = "_lepton_model_name"


def _jsonable(value: Any) -> Any:
    """Turn tuples into lists (recursively) so a config reads the same after JSON."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def register_model(name: str) -> Callable[[_M], _M]:
    """Register an ``nn.Module`` class under ``name`` so ``build(name, ...)`` can make it.

    The class's ``__init__`` is wrapped to record its bound arguments (defaults
    included); :func:`model_spec` returns them. Arguments should be JSON-serialisable.

    Args:
        name: Lowercase registry name, unique across Lepton.

    Returns:
        A class decorator that returns the class unchanged apart from the recording.

    Example:
        >>> @register_model("tiny")
        ... class Tiny(nn.Module):
        ...     def __init__(self, width: int = 4) -> None:
        ...         super().__init__()
        ...         self.fc = nn.Linear(width, 2)
    """
    if not name or name != name.lower():
        raise UnknownModelError(
            f"Model names must be non-empty and lowercase, got {name!r}; "
            f"use register_model({name.lower()!r})."
        )

    def decorator(cls: _M) -> _M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise UnknownModelError(
                f"A model named {name!r} is already registered ({_REGISTRY[name].__name__}); "
                "choose another name for register_model()."
            )
        original_init = cls.__init__
        signature = inspect.signature(original_init)

        @functools.wraps(original_init)
        def recording_init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            if type(self) is cls:  # a registered subclass records its own arguments
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                config = {k: _jsonable(v) for k, v in bound.arguments.items() if k != "self"}
                object.__setattr__(self, _CONFIG_ATTR, config)

        cls.__init__ = recording_init  # type: ignore[method-assign]
        setattr(cls, _NAME_ATTR, name)
        _REGISTRY[name] = cls
        return cls

    return decorator


def _signature_text(cls: type[nn.Module]) -> str:
    """``Name(arg: type = default, ...)`` with annotations shown as written."""
    parts = []
    for param in inspect.signature(cls).parameters.values():
        text = param.name
        if param.annotation is not param.empty:
            annotation = param.annotation
            if not isinstance(annotation, str):  # a string under `from __future__ import ...`
                annotation = inspect.formatannotation(annotation)
            text += f": {annotation}"
        if param.default is not param.empty:
            text += f" = {param.default!r}"
        parts.append(text)
    return f"{cls.__name__}({', '.join(parts)})"


def available_models() -> list[str]:
    """Return the sorted names that :func:`build` accepts."""
    return sorted(_REGISTRY)


def model_parameters(name: str) -> list[str]:
    """Return the constructor argument names of the registered model ``name``.

    Raises:
        UnknownModelError: The name is unknown.
    """
    return list(inspect.signature(_lookup(name)).parameters)


def model_defaults(name: str) -> dict[str, Any]:
    """The constructor defaults of the registered model ``name`` (arguments without one
    are left out).

    Raises:
        UnknownModelError: The name is unknown.
    """
    return {
        key: param.default
        for key, param in inspect.signature(_lookup(name)).parameters.items()
        if param.default is not inspect.Parameter.empty
    }


def _lookup(name: str) -> type[nn.Module]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownModelError(
        f"No model named {name!r}.{hint} Known models: {', '.join(available_models())}."
    )


def model_spec(model: nn.Module) -> dict[str, Any]:
    """Return the JSON-serialisable manifest ``{"name": ..., "config": {...}}`` of a model.

    Args:
        model: An instance of a class registered with :func:`register_model`.

    Returns:
        A dict that :func:`build` turns back into an equivalent, freshly initialised model.

    Raises:
        UnknownModelError: The model's class is not registered, or its arguments are
            not JSON-serialisable.
    """
    config = getattr(model, _CONFIG_ATTR, None)
    name = getattr(type(model), _NAME_ATTR, None)
    if config is None or name is None:
        raise UnknownModelError(
            f"{type(model).__name__} is not a registered model, so it has no spec; "
            "decorate its class with @lepton.models.register_model('name')."
        )
    spec = {"name": name, "config": dict(config)}
    try:
        json.dumps(spec)
    except TypeError as exc:
        raise UnknownModelError(
            f"The arguments of {type(model).__name__} are not JSON-serialisable ({exc}); "
            "build it from ints, floats, strings, bools, lists and dicts only."
        ) from exc
    return spec


def build(name_or_spec: str | Mapping[str, Any], **config: Any) -> nn.Module:
    """Build a registered model from its name and arguments, or from a spec.

    Args:
        name_or_spec: A registry name such as ``"convnet"``, or a spec
            ``{"name": "convnet", "config": {...}}`` as returned by :func:`model_spec`.
        **config: Constructor arguments; they override those in a spec.

    Returns:
        A freshly initialised ``nn.Module``.

    Raises:
        UnknownModelError: The name is unknown, or the arguments do not fit the model.

    Example:
        >>> model = build("convnet", num_classes=10)
        >>> twin = build(model_spec(model))
    """
    if isinstance(name_or_spec, Mapping):
        extra = set(name_or_spec) - {"name", "config"}
        name = name_or_spec.get("name")
        if extra or not isinstance(name, str):
            raise UnknownModelError(
                "A model spec is {'name': str, 'config': dict}, got keys "
                f"{sorted(name_or_spec)}; e.g. build({{'name': 'mlp', "
                "'config': {'in_features': 4, 'num_classes': 3}})."
            )
        config = {**dict(name_or_spec.get("config") or {}), **config}
    else:
        name = name_or_spec
    cls = _lookup(name)
    signature = inspect.signature(cls)
    try:
        signature.bind(**config)
    except TypeError as exc:
        raise UnknownModelError(
            f"Bad arguments for {name!r} ({exc}); the valid signature is {_signature_text(cls)}."
        ) from None
    try:
        return cls(**config)
    except (UnknownModelError, TypeError) as exc:
        raise UnknownModelError(f"{exc} The valid signature is {_signature_text(cls)}.") from exc


def respec(model: nn.Module, **changes: Any) -> bool:
    """Record changed constructor arguments of ``model`` after it was changed in place,
    if a model built with them is the same architecture (the same layer types and the
    same parameter and buffer shapes); otherwise leave its spec alone.

    DP-SGD uses it: Opacus replaces each BatchNorm with a GroupNorm, which is exactly
    ``norm="group"`` of the zoo's convolutional models, so the registered manifest
    rebuilds the model that was trained.

    Returns:
        Whether the spec now records ``changes``.
    """
    try:
        spec = model_spec(model)
    except UnknownModelError:
        return False
    try:
        rebuilt = build(spec, **changes)
    except (UnknownModelError, TypeError):
        return False

    def layout(m: nn.Module) -> tuple[list[type], dict[str, tuple[int, ...]]]:
        return [type(x) for x in m.modules()], {
            k: tuple(v.shape) for k, v in m.state_dict().items()
        }

    def groups(m: nn.Module) -> list[int]:
        return [x.num_groups for x in m.modules() if isinstance(x, nn.GroupNorm)]

    if layout(rebuilt) != layout(model) or groups(rebuilt) != groups(model):
        return False
    getattr(model, _CONFIG_ATTR).update(_jsonable(changes))
    return True
