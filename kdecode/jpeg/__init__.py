"""Reading JPEG files: marker checks, coefficient readers, :class:`JpegCoefficients`."""
from .coefficients import Component, JpegCoefficients
from .markers import JpegHeader, parse_header
from .reader import (backend_info, read_coefficients, read_coefficients_batch, read_coefficients_from_bytes,
                     set_backend, settings)

__all__ = ["Component", "JpegCoefficients", "JpegHeader", "parse_header", "backend_info",
           "read_coefficients", "read_coefficients_batch", "read_coefficients_from_bytes", "set_backend",
           "settings"]
