"""kdecode: JPEG decoding from DCT coefficients, with artifact removal while it decodes.

Public API: :func:`decode`, :func:`read_coefficients`, :func:`read_coefficients_batch`,
:func:`load_model`, :func:`list_models`, :data:`settings`, and the exception family rooted at
:class:`KdecodeError` (a ``ValueError``).
"""
from .decode import decode
from .errors import (CorruptJpegError, ImageTooLargeError, KdecodeError, NotAJpegError,
                     UnsupportedJpegError)
from .jpeg import JpegCoefficients, backend_info, read_coefficients, read_coefficients_batch, settings
from .models import list_models, load_model
from .batch import decode_batch, decode_iter

__version__ = "0.1.0"

__all__ = ["decode", "decode_batch", "decode_iter", "read_coefficients", "read_coefficients_batch",
           "JpegCoefficients", "load_model", "list_models", "settings", "backend_info", "KdecodeError",
           "CorruptJpegError", "ImageTooLargeError", "NotAJpegError",
           "UnsupportedJpegError", "__version__"]
