"""Build the optional C extensions. ``optional=True``: where a compiler, the libjpeg headers or
the library are missing the build only warns, the package still installs, and kdecode falls back
(see ``kdecode.backend_info()``).

``kdecode._jpegnative``: the native coefficient reader on libjpeg-turbo (else jpeglib is used),
with the exact pixel stage compiled in, to decode a file's pixels while its blocks are read.
``kdecode._exactcpu``: the exact pixel stage on CPU (islow IDCT, fancy upsampling, colour), the
fast path of ``decode(model=None)`` on CPU; tests/test_exact_cpu.py checks it against the torch
reference ops (used where it is not built).
"""
import sys

from setuptools import Extension, setup

# The pixel stage's flags, for both modules that compile it: -fwrapv: int32 overflow wraps like
# torch's int32 ops (Python's own flags have it too); -pthread: one image's rows in bands, or its
# entropy decoding and its pixels, on several threads (older glibc needs the flag).
PIXEL_STAGE_FLAGS = dict(
    extra_compile_args=["-O3", "-fwrapv"] + ([] if sys.platform == "win32" else ["-pthread"]),
    extra_link_args=[] if sys.platform == "win32" else ["-pthread"],
)

setup(
    ext_modules=[
        Extension(
            "kdecode._jpegnative",
            sources=["csrc/jpegnative.c"],  # compiles csrc/exact_cpu.c in: read(..., pixels)
            depends=["csrc/exact_cpu.c"],
            libraries=["jpeg"],
            **PIXEL_STAGE_FLAGS,
            optional=True,
        ),
        Extension(
            "kdecode._exactcpu",
            sources=["csrc/exact_cpu.c"],
            **PIXEL_STAGE_FLAGS,
            optional=True,
        ),
    ]
)
