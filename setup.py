"""Build the optional native coefficient reader (kdecode._jpegnative) against libjpeg-turbo.

``optional=True``: where the libjpeg headers or library are missing the build only warns, the
package still installs, and kdecode falls back to the jpeglib reader (see kdecode.backend_info()).
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kdecode._jpegnative",
            sources=["csrc/jpegnative.c"],
            libraries=["jpeg"],
            optional=True,
        )
    ]
)
