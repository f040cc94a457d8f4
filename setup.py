"""Build the optional C extensions; where a compiler or headers are missing the build only
warns (``optional=True``), the package still installs and kdecode uses its torch code instead.

``kdecode._exactcpu``: the exact pixel stage on CPU (islow IDCT, fancy upsampling, colour), the
fast path of ``decode(model=None)`` on CPU; tests/test_exact_cpu.py checks it against the torch
reference ops.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kdecode._exactcpu",
            sources=["csrc/exact_cpu.c"],
            # -fwrapv: int32 overflow wraps like torch's int32 ops (Python's own flags have it too).
            extra_compile_args=["-O3", "-fwrapv"],
            optional=True,
        )
    ]
)
