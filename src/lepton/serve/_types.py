"""Input and output types for handlers: ``Image``, ``Tensor`` and ``Prediction``.

They are pydantic-aware, so a handler annotated with them gets validation, OpenAPI
schemas and JSON encoding for free::

    @lp.handler
    def classify(self, image: lp.Image) -> lp.Prediction: ...
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

__all__ = ["MAX_IMAGE_PIXELS", "Image", "Prediction", "Tensor"]

MAX_IMAGE_PIXELS = 40_000_000
"""Images with more pixels are refused before they are decoded (decompression bombs)."""

_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class Image:
    """A decoded PNG or JPEG image.

    In JSON it travels as a base64 string (or a ``data:image/...;base64,`` URL); in a
    ``multipart/form-data`` upload or a raw ``image/png`` / ``image/jpeg`` body, as bytes.

    Attributes:
        pil: The decoded :class:`PIL.Image.Image`.
    """

    __slots__ = ("pil",)

    def __init__(self, pil: Any) -> None:
        self.pil = pil

    @classmethod
    def from_bytes(cls, data: bytes) -> Image:
        """Decode PNG or JPEG bytes; anything else is a ``ValueError`` that names the fix."""
        from PIL import Image as PILImage
        from PIL import UnidentifiedImageError

        if not any(data.startswith(magic) for magic in _MAGIC):
            raise ValueError("not a PNG or JPEG image; send PNG or JPEG bytes (or base64)")
        try:
            pil = PILImage.open(io.BytesIO(data))
            if pil.width * pil.height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"image of {pil.width}x{pil.height} pixels is over the limit of "
                    f"{MAX_IMAGE_PIXELS:,}; send a smaller image"
                )
            pil.load()
        except PILImage.DecompressionBombError:
            raise ValueError(
                f"the image is over the limit of {MAX_IMAGE_PIXELS:,} pixels; send a smaller one"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"the image could not be decoded ({exc}); send a valid file") from None
        return cls(pil)

    @classmethod
    def from_base64(cls, text: str) -> Image:
        """Decode a base64 string or a ``data:`` URL."""
        if text.startswith("data:"):
            _, _, text = text.partition(",")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("an image must be base64 (or a data: URL) in JSON") from None
        return cls.from_bytes(data)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return int(self.pil.width), int(self.pil.height)

    def to_tensor(
        self, *, channels: int | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """A ``(C, H, W)`` float tensor in ``[0, 1]``.

        Args:
            channels: 1 (grayscale) or 3 (RGB); default: the image's own.
            size: ``(height, width)`` to resize to (bilinear); default: unchanged.
        """
        pil = self.pil
        mode = {1: "L", 3: "RGB"}.get(channels or 0, "L" if pil.mode in ("L", "1", "I") else "RGB")
        pil = pil.convert(mode)
        if size is not None and (pil.height, pil.width) != tuple(size):
            pil = pil.resize((size[1], size[0]))
        array = np.asarray(pil, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)

    def to_png(self) -> bytes:
        """Encode as PNG bytes."""
        buffer = io.BytesIO()
        self.pil.save(buffer, format="PNG")
        return buffer.getvalue()

    def __repr__(self) -> str:
        return f"Image({self.pil.width}x{self.pil.height}, mode={self.pil.mode})"

    @classmethod
    def _validate(cls, value: Any) -> Image:
        if isinstance(value, Image):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(bytes(value))
        if isinstance(value, str):
            return cls.from_base64(value)
        raise ValueError("an image must be base64 text in JSON, or PNG/JPEG bytes")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda image: base64.b64encode(image.to_png()).decode("ascii")
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "format": "byte",
            "description": "PNG or JPEG: base64 or a data: URL in JSON, raw bytes in uploads",
        }


def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"a tensor must be a number or a rectangular nested list ({exc})"
        ) from None


class _TensorSchema:
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _to_tensor,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda t: t.tolist()),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "description": "a number or a rectangular nested list of numbers (float32)",
            "anyOf": [{"type": "number"}, {"type": "array", "items": {}}],
        }


Tensor = Annotated[torch.Tensor, _TensorSchema()]
"""A float32 ``torch.Tensor`` that travels as nested JSON lists."""


class Prediction(BaseModel):
    """What a classifier or regressor answers for one input.

    Attributes:
        label: The predicted class (its name when the model knows names).
        score: The probability of ``label``.
        probabilities: Every class's probability, in class order.
        values: A regressor's outputs.
    """

    model_config = ConfigDict(frozen=True)

    label: int | str | None = None
    score: float | None = None
    probabilities: list[float] | None = None
    values: list[float] | None = None
