"""``@lp.handler``: a typed method becomes an HTTP route.

The request body is a JSON object with one field per parameter (``{"inputs": ...}`` for
``def predict(self, inputs: ...)``), or, when the only parameter is a pydantic model,
that model itself (as in FastAPI). A batched handler takes and returns lists: each
request carries one element, and the handler sees the batch.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

from lepton.errors import ConfigError
from lepton.serve._types import Image

__all__ = ["HandlerOptions", "Route", "build_route", "handler"]

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__lepton_handler__"


@dataclass(frozen=True)
class HandlerOptions:
    """How a handler is served (validated when the decorator runs)."""

    batch_size: int = 1
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    timeout_s: float = 30.0
    path: str | None = None
    method: str = "POST"
    workers: int = 1
    check: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1, e.g. @lp.handler(batch_size=32)"),
            (self.max_wait_ms >= 0, "max_wait_ms must be >= 0, e.g. max_wait_ms=5"),
            (self.max_queue >= 1, "max_queue must be >= 1, e.g. max_queue=1024"),
            (self.timeout_s > 0, "timeout_s must be > 0, e.g. timeout_s=30"),
            (self.workers >= 1, "workers must be >= 1, e.g. workers=2"),
            (self.method in ("GET", "POST"), "method must be 'GET' or 'POST'"),
            (self.path is None or self.path.startswith("/"), "path must start with '/'"),
            (self.check is None or self.check.isidentifier(), "check names a method, e.g. "
             "check='check_input'"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"@lp.handler: {message}")

    @property
    def batched(self) -> bool:
        return self.batch_size > 1


@overload
def handler(fn: F, /) -> F: ...
@overload
def handler(
    *,
    batch_size: int = 1,
    max_wait_ms: float = 5.0,
    max_queue: int = 1024,
    timeout_s: float = 30.0,
    path: str | None = None,
    method: str = "POST",
    workers: int = 1,
    check: str | None = None,
) -> Callable[[F], F]: ...
def handler(fn: Any = None, /, **options: Any) -> Any:
    """Mark a :class:`~lepton.Service` method as an HTTP route.

    Args:
        batch_size: Above 1, the route is dynamically batched: the method takes lists
            (one element per request) and returns a list of the same length.
        max_wait_ms: The longest a request waits for others to join its batch. The wait
            is adaptive: it ends early when the arrival rate cannot fill the batch.
        max_queue: Requests waiting beyond this answer 503 with ``Retry-After`` at once.
        timeout_s: Per-request deadline (a client may ask for less with the
            ``X-Request-Timeout`` header, in seconds); past it the answer is 504.
        path: The route's path; default ``/<method name>``.
        method: ``"POST"`` (default) or ``"GET"`` for handlers without parameters.
        workers: Threads running a synchronous, unbatched handler concurrently.
        check: The name of a method of the service called with each request's own
            arguments (one element each, not lists) before the request joins a batch;
            it raises :class:`~lepton.errors.RequestError` (400) or
            :class:`~lepton.errors.ShapeError` (422) to refuse that request alone.

    A batched handler that raises is called again on halves of its batch, down to
    single requests, so that only the requests it fails on fail: with a plain
    exception, a 422 when others of the batch succeeded, else a 500.

    Example:
        >>> import lepton as lp
        >>> class Echo(lp.Service):
        ...     @lp.handler(batch_size=8, max_wait_ms=2)
        ...     def upper(self, text: list[str]) -> list[str]:
        ...         return [t.upper() for t in text]
    """
    spec = HandlerOptions(**options)

    def mark(f: F) -> F:
        if not callable(f):
            raise ConfigError("@lp.handler decorates methods of an lp.Service")
        setattr(f, _ATTR, spec)
        return f

    return mark(fn) if fn is not None else mark


def handler_options(fn: Any) -> HandlerOptions | None:
    """The options ``@lp.handler`` recorded on ``fn``, if any."""
    return getattr(fn, _ATTR, None)


@dataclass
class Route:
    """A handler, with everything the server needs to call it."""

    name: str
    path: str
    method: str
    fn: Callable[..., Any]
    options: HandlerOptions
    params: list[str]
    request: TypeAdapter[Any] | None
    body_is_model: bool
    response: TypeAdapter[Any]
    stream: bool = False
    text_stream: bool = False
    is_async: bool = False
    image_fields: list[str] = field(default_factory=list)
    request_schema: type[BaseModel] | None = None
    check: Callable[..., Any] | None = None

    def arguments(self, body: Any) -> dict[str, Any]:
        """The keyword arguments for one request, from its validated body."""
        if self.body_is_model:
            return {self.params[0]: body}
        return {name: getattr(body, name) for name in self.params}


def _element(annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin not in (list, collections.abc.Sequence, collections.abc.Iterable):
        raise ConfigError(
            f"{where} must be annotated list[...] because the handler is batched "
            f"(e.g. `inputs: list[list[float]]` and `-> list[dict[str, float]]`)"
        )
    args = typing.get_args(annotation)
    return args[0] if args else Any


def _stream_item(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    iterators = (
        collections.abc.Iterator,
        collections.abc.Iterable,
        collections.abc.Generator,
        collections.abc.AsyncIterator,
        collections.abc.AsyncIterable,
        collections.abc.AsyncGenerator,
    )
    if origin in iterators:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return Any


def build_route(owner: type, name: str, fn: Callable[..., Any], options: HandlerOptions) -> Route:
    """Read ``fn``'s signature and type hints into a :class:`Route`."""
    where = f"{owner.__name__}.{name}"
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ConfigError(f"{where}: cannot resolve its type hints ({exc})") from None
    signature = inspect.signature(fn)
    params = [p for p in list(signature.parameters.values())[1:]]  # drop self
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigError(f"{where}: *args/**kwargs cannot be request fields; name them")
        if p.name not in hints:
            raise ConfigError(f"{where}: parameter {p.name!r} needs a type annotation")
    stream = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    if stream and options.batched:
        raise ConfigError(f"{where}: a streaming (generator) handler cannot be batched")
    if options.method == "GET" and params:
        raise ConfigError(f"{where}: a GET handler takes no parameters; use POST")
    if options.check is not None and not callable(getattr(owner, options.check, None)):
        raise ConfigError(f"{where}: check={options.check!r} is not a method of {owner.__name__}")
    returns = hints.get("return", Any)
    if options.batched:
        types = {p.name: _element(hints[p.name], f"{where}({p.name})") for p in params}
        if not params:
            raise ConfigError(f"{where}: a batched handler needs at least one parameter")
        returns = _element(returns, f"{where} return") if "return" in hints else Any
    else:
        types = {p.name: hints[p.name] for p in params}
    item = _stream_item(returns) if stream else returns

    request: TypeAdapter[Any] | None = None
    schema: type[BaseModel] | None = None
    body_is_model = False
    only = types[params[0].name] if len(params) == 1 else None
    if isinstance(only, type) and issubclass(only, BaseModel):
        request, schema, body_is_model = TypeAdapter(only), only, True
        image_fields = [n for n, f in only.model_fields.items() if _is_image(f.annotation)]
    elif params:
        fields: dict[str, Any] = {
            p.name: (types[p.name], ... if p.default is p.empty else p.default) for p in params
        }
        schema = create_model(  # type: ignore[call-overload]
            f"{owner.__name__}{name.title().replace('_', '')}Request",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            **fields,
        )
        request = TypeAdapter(schema)
        image_fields = [p.name for p in params if _is_image(types[p.name])]
    else:
        image_fields = []
    return Route(
        name=name,
        path=options.path or f"/{name}",
        method=options.method,
        fn=fn,
        options=options,
        params=[p.name for p in params],
        request=request,
        body_is_model=body_is_model,
        response=TypeAdapter(item, config=None),
        stream=stream,
        text_stream=stream and item is str,
        is_async=inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn),
        image_fields=image_fields,
        request_schema=schema,
    )


def _is_image(annotation: Any) -> bool:
    if annotation is Image:
        return True
    return any(a is Image for a in typing.get_args(annotation))
