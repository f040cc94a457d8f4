"""One exception family for everything kdecode rejects.

Every error is a :class:`KdecodeError`, itself a :class:`ValueError` (bad input is a bad
value, not an I/O failure: a missing file still raises the usual ``FileNotFoundError``).
Messages start with the source's name (path or ``<bytes>``) and say why it was rejected.
"""
from __future__ import annotations


class KdecodeError(ValueError):
    """Base class of every kdecode error."""

    def __init__(self, source: str | None, reason: str):
        self.source = source or "<input>"
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class UnsupportedJpegError(KdecodeError):
    """Input kdecode cannot decode: 12-bit, lossless or hierarchical JPEG, or not
    a JPEG at all (:class:`NotAJpegError`)."""


class NotAJpegError(UnsupportedJpegError):
    """The input is not a JPEG file at all (empty, no SOI marker: a PNG, random bytes...)."""


class CorruptJpegError(KdecodeError):
    """The JPEG is truncated or its markers / entropy-coded data are damaged."""


class ImageTooLargeError(KdecodeError):
    """The header claims more pixels than the configured limit (checked before any allocation)."""
