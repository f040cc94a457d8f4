"""Model registry: every model is a decoder from coefficients to pixels.

``list_models()`` names what can be asked for; ``load_model(name, quality=None, device=None)``
returns a ready :class:`~kdecode.models.base.Decoder`. ``"exact"`` is the decoder with no
learned parameters (bit-exact with libjpeg-turbo / Pillow).
"""
from __future__ import annotations

from .base import Decoder, ExactDecoder
from .registry import list_models, load_model, register, resolve_model

__all__ = ["Decoder", "ExactDecoder", "list_models", "load_model", "register", "resolve_model"]
