"""Name -> model builder. A new model is one module plus one ``register`` call."""
from __future__ import annotations

from typing import Callable

from ..errors import KdecodeError
from .base import Decoder, ExactDecoder

_BUILDERS: dict[str, Callable[..., Decoder]] = {}
_ALIASES = {"exact": "exact", None: "exact"}


def register(name: str, builder: Callable[..., Decoder]) -> None:
    """Register ``builder(quality=None, device=None) -> Decoder`` under ``name``."""
    _BUILDERS[name] = builder


def list_models() -> list[str]:
    """Names accepted by ``load_model`` and ``decode(model=...)``."""
    return sorted(_BUILDERS)


def load_model(name: str, quality: int | None = None, device=None) -> Decoder:
    """Build model ``name`` with the weights trained nearest ``quality`` on ``device``."""
    key = _ALIASES.get(name, name)
    if key not in _BUILDERS:
        raise KdecodeError("model", f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _BUILDERS[key](quality=quality, device=device)


def resolve_model(name, device=None) -> str:
    """The registry name that ``decode(model=name)`` uses; ``"auto"`` picks the best shipped
    model for the device (the exact decode until restoring models are shipped)."""
    if name == "auto":
        return "exact"
    return _ALIASES.get(name, name)


register("exact", lambda quality=None, device=None: ExactDecoder())
