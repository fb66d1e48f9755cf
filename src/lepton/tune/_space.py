"""A typed search space: the same spec from Python, JSON and the command line.

Python::

    space = {
        "lr": Float(1e-4, 1e-1, log=True),
        "hidden": Int(32, 256, log=True),
        "optimizer": Categorical(["adamw", "sgd"], when={"sgd": {"momentum": Float(0.5, 0.99)}}),
    }

JSON (what the API and ``--space file.json`` take)::

    {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": true},
     "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"],
                   "when": {"sgd": {"momentum": {"type": "float", "low": 0.5, "high": 0.99}}}}}

Command line (one ``--param`` each; ``if`` makes it conditional)::

    lr=log(1e-4,1e-1)  hidden=int(32,256)  optimizer=choice(adamw,sgd)
    momentum=float(0.5,0.99) if optimizer=sgd

A conditional parameter is sampled only when its parent took that value (Optuna's
define-by-run spaces), so a trial's params hold exactly the parameters that mattered.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from lepton.errors import SearchSpaceError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "Categorical",
    "Float",
    "Int",
    "Param",
    "Space",
    "parse_param",
    "parse_space",
    "sample",
    "space_from_json",
    "space_to_json",
]

Choice: TypeAlias = str | int | float | bool | None
MAX_PARAMS = 64
MAX_GRID = 100_000


@dataclass(frozen=True)
class Float:
    """A real number in ``[low, high]``; ``log=True`` samples its logarithm uniformly;
    ``step`` makes it discrete."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        _numbers(self, self.low, self.high)
        if self.log and self.low <= 0:
            raise SearchSpaceError(f"log=True needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise SearchSpaceError("a parameter takes log=True or a step, not both")
        if self.step is not None and not self.step > 0:
            raise SearchSpaceError(f"step must be > 0, got {self.step}")


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (both included)."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)):
            raise SearchSpaceError(f"int bounds must be integers, got {self.low!r}, {self.high!r}")
        _numbers(self, self.low, self.high)
        if self.log and self.low < 1:
            raise SearchSpaceError(f"log=True needs low >= 1, got low={self.low}")
        if self.step < 1 or (self.log and self.step != 1):
            raise SearchSpaceError("an int step must be >= 1 (and 1 with log=True)")

    def values(self) -> list[int]:
        """Every value, for a grid."""
        return list(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True)
class Categorical:
    """One of ``choices``; ``when`` maps a choice to the sub-space sampled only when it is
    taken (``optimizer=sgd -> momentum``)."""

    choices: Sequence[Choice]
    when: Mapping[Choice, Mapping[str, Param]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        choices = list(self.choices)
        if not choices:
            raise SearchSpaceError("a categorical parameter needs at least one choice")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"choices must be distinct, got {choices}")
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            raise SearchSpaceError(f"choices must be strings, numbers, booleans or null: {choices}")
        object.__setattr__(self, "choices", tuple(choices))
        unknown = [k for k in self.when if k not in choices]
        if unknown:
            raise SearchSpaceError(f"`when` names {unknown}, which are not among {choices}")


Param: TypeAlias = Float | Int | Categorical
Space: TypeAlias = Mapping[str, Param]


def _numbers(param: Float | Int, low: float, high: float) -> None:
    kind = type(param).__name__
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)):
        raise SearchSpaceError(f"{kind} bounds must be finite numbers, got {low!r}, {high!r}")
    if low > high:
        raise SearchSpaceError(f"{kind} needs low <= high, got low={low}, high={high}")


def check_space(space: Space, *, where: str = "") -> dict[str, Param]:
    """Validate ``space`` (names, types, nesting) and return it as a plain dict.

    A name may appear in several branches of a ``Categorical`` (``dropout`` under both
    ``mlp`` and ``convnet``) when its range is the same in each, since only one branch
    is sampled; anywhere else a name must be unique.

    Raises:
        SearchSpaceError: An empty space, a bad name, a value that is not a parameter, or
            a name that repeats another one it could be sampled with.
    """
    if not isinstance(space, Mapping) or not space:
        raise SearchSpaceError(
            "a search space is a non-empty mapping of names to Float/Int/Categorical, e.g. "
            '{"lr": Float(1e-4, 1e-1, log=True)}'
        )
    if len(_names(space, {}, where)) > MAX_PARAMS:
        raise SearchSpaceError(f"a search space holds at most {MAX_PARAMS} parameters")
    return dict(space)


def _names(space: Space, above: Mapping[str, Param], where: str) -> dict[str, Param]:
    """Every parameter of ``space`` and its branches, by name (checked on the way)."""
    here: dict[str, Param] = {}
    for name, param in space.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,63}", name):
            raise SearchSpaceError(f"bad parameter name {name!r}: use letters, digits, _ and .")
        if not isinstance(param, (Float, Int, Categorical)):
            raise SearchSpaceError(
                f"parameter {name!r} is {param!r}; use Float(...), Int(...) or Categorical(...)"
            )
        if name in above:
            raise SearchSpaceError(
                f"parameter {name!r} appears twice in the space{where}; give conditional "
                f"parameters distinct names"
            )
        here[name] = param
    below: dict[str, Param] = {}
    for param in here.values():
        if not isinstance(param, Categorical):
            continue
        for sub in param.when.values():
            for name, found in _names(sub, {**above, **here}, where).items():
                if below.get(name, found) != found:
                    raise SearchSpaceError(
                        f"parameter {name!r} appears in two branches with different ranges"
                        f"{where}; give it the same range in each, or distinct names"
                    )
                below[name] = found
    return {**here, **below}


def sample(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Draw one configuration from ``space`` through an Optuna trial (define-by-run: a
    conditional sub-space is drawn only when its parent takes that value)."""
    params: dict[str, Any] = {}
    for name, param in space.items():
        if isinstance(param, Float):
            params[name] = trial.suggest_float(
                name, param.low, param.high, log=param.log, step=param.step
            )
        elif isinstance(param, Int):
            params[name] = trial.suggest_int(
                name, param.low, param.high, log=param.log, step=param.step
            )
        else:
            choice = trial.suggest_categorical(name, list(param.choices))
            params[name] = choice
            sub = param.when.get(choice)
            if sub:
                params.update(sample(trial, sub))
    return params


def grid(space: Space) -> dict[str, list[Any]]:
    """The grid Optuna's ``GridSampler`` walks: every value of every parameter.

    Raises:
        SearchSpaceError: A continuous float, a conditional sub-space, or a grid larger
            than 100,000 points.
    """
    out: dict[str, list[Any]] = {}
    for name, param in space.items():
        if isinstance(param, Categorical):
            if param.when:
                raise SearchSpaceError(
                    f"grid search cannot walk the conditional sub-space of {name!r}; use "
                    f"sampler='tpe' or 'random'"
                )
            out[name] = list(param.choices)
        elif isinstance(param, Int):
            out[name] = param.values()
        elif param.step is not None:
            count = round((param.high - param.low) / param.step) + 1
            out[name] = [param.low + i * param.step for i in range(count)]
        else:
            raise SearchSpaceError(
                f"grid search needs a finite set for {name!r}: give Float a step, or use "
                f"Categorical([...])"
            )
    if math.prod(len(v) for v in out.values()) > MAX_GRID:
        raise SearchSpaceError(f"the grid has more than {MAX_GRID:,} points; narrow the space")
    return out


# -- JSON ---------------------------------------------------------------------------------
def space_to_json(space: Space) -> dict[str, Any]:
    """The JSON form of ``space`` (inverse of :func:`space_from_json`)."""
    out: dict[str, Any] = {}
    for name, param in space.items():
        if isinstance(param, Float):
            out[name] = {"type": "float", "low": param.low, "high": param.high, "log": param.log}
            if param.step is not None:
                out[name]["step"] = param.step
        elif isinstance(param, Int):
            out[name] = {
                "type": "int", "low": param.low, "high": param.high, "log": param.log,
                "step": param.step,
            }  # fmt: skip
        else:
            out[name] = {"type": "categorical", "choices": list(param.choices)}
            if param.when:
                out[name]["when"] = {
                    json.dumps(k) if not isinstance(k, str) else k: space_to_json(v)
                    for k, v in param.when.items()
                }
    return out


_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices", "when"},
}


def space_from_json(raw: Any) -> dict[str, Param]:
    """Parse and validate the JSON form (a dict, or a JSON string).

    Raises:
        SearchSpaceError: One message naming the parameter and what is wrong with it.
    """
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SearchSpaceError(f"the search space is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise SearchSpaceError(
            'a search space is a JSON object of parameters, e.g. {"lr": {"type": "float", '
            '"low": 0.0001, "high": 0.1, "log": true}}'
        )
    return check_space({name: _param_from_json(name, spec) for name, spec in raw.items()})


def _param_from_json(name: str, spec: Any) -> Param:
    if not isinstance(spec, dict) or spec.get("type") not in _FIELDS:
        raise SearchSpaceError(
            f"parameter {name!r}: give an object with a type of float, int or categorical"
        )
    kind = spec["type"]
    extra = sorted(set(spec) - _FIELDS[kind])
    if extra:
        raise SearchSpaceError(f"parameter {name!r}: unknown keys {extra} for type {kind!r}")
    try:
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list):
                raise SearchSpaceError("choices must be a list")
            when_raw = spec.get("when", {})
            if not isinstance(when_raw, dict):
                raise SearchSpaceError("when must map a choice to a sub-space")
            by_text = {c if isinstance(c, str) else json.dumps(c): c for c in choices}
            when: dict[Choice, dict[str, Param]] = {}
            for key, sub in when_raw.items():
                if key not in by_text:
                    raise SearchSpaceError(f"`when` names {key!r}, not one of the choices")
                when[by_text[key]] = space_from_json(sub)
            return Categorical(choices, when=when)
        if "low" not in spec or "high" not in spec:
            raise SearchSpaceError("low and high are required")
        if kind == "int":
            return Int(spec["low"], spec["high"], log=bool(spec.get("log", False)),
                       step=spec.get("step", 1))  # fmt: skip
        return Float(spec["low"], spec["high"], log=bool(spec.get("log", False)),
                     step=spec.get("step"))  # fmt: skip
    except SearchSpaceError as exc:
        raise SearchSpaceError(f"parameter {name!r}: {exc.message}") from None
    except TypeError as exc:
        raise SearchSpaceError(f"parameter {name!r}: {exc}") from None


# -- command line -------------------------------------------------------------------------
_PARAM = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<kind>float|log|int|intlog|choice)"
    r"\((?P<args>[^()]*)\)\s*(?:if\s+(?P<parent>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<value>\S+))?\s*$"
)
_HELP = (
    "write name=float(LOW,HIGH), log(LOW,HIGH), int(LOW,HIGH), intlog(LOW,HIGH) or "
    "choice(A,B,...), optionally followed by `if PARENT=VALUE`"
)


def _scalar(text: str) -> Choice:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text.lower(), text)


def parse_param(text: str) -> tuple[str, Param, tuple[str, Choice] | None]:
    """One ``--param`` value: the name, the parameter, and its condition if any.

    Example:
        >>> parse_param("momentum=float(0.5,0.99) if optimizer=sgd")[2]
        ('optimizer', 'sgd')
    """
    match = _PARAM.match(text)
    if match is None:
        raise SearchSpaceError(f"cannot read --param {text!r}: {_HELP}")
    name, kind = match["name"], match["kind"]
    args = [a for a in (s.strip() for s in match["args"].split(",")) if a]
    try:
        param: Param
        if kind == "choice":
            param = Categorical([_scalar(a) for a in args])
        elif len(args) != 2:
            raise SearchSpaceError(f"{kind}(...) takes two bounds, got {len(args)}")
        elif kind in ("int", "intlog"):
            param = Int(int(args[0]), int(args[1]), log=kind == "intlog")
        else:
            param = Float(float(args[0]), float(args[1]), log=kind == "log")
    except (SearchSpaceError, ValueError) as exc:
        reason = exc.message if isinstance(exc, SearchSpaceError) else str(exc)
        raise SearchSpaceError(f"--param {text!r}: {reason}") from None
    condition = (match["parent"], _scalar(match["value"])) if match["parent"] else None
    return name, param, condition


def parse_space(texts: Sequence[str]) -> dict[str, Param]:
    """A space from ``--param`` values; a conditional parameter joins the ``when`` of
    its parent, which must come earlier and be a ``choice``."""
    space: dict[str, Param] = {}
    nested: dict[str, dict[Choice, dict[str, Param]]] = {}
    for text in texts:
        name, param, condition = parse_param(text)
        if condition is None:
            space[name] = param
            continue
        parent, value = condition
        owner = space.get(parent)
        if not isinstance(owner, Categorical) or value not in owner.choices:
            raise SearchSpaceError(
                f"--param {text!r}: give `{parent}=choice(...)` with {value!r} among its "
                f"choices before a parameter that depends on it"
            )
        nested.setdefault(parent, {}).setdefault(value, {})[name] = param
    for parent, when in nested.items():
        owner = space[parent]
        assert isinstance(owner, Categorical)
        space[parent] = Categorical(owner.choices, when=when)
    return check_space(space)
