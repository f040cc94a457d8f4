"""A short run of the mutation fuzzer (tests/fuzz_reader.py); the long run is done by hand:
``python tests/fuzz_reader.py --n 100000``. KDECODE_FUZZ_N sets the length of this one."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_reader  # noqa: E402
from native_support import skip_without_native  # noqa: E402

skip_without_native()  # the fuzzer targets the native reader (through jpeglib it would take minutes)


def test_mutated_jpegs_decode_or_raise_kdecode_errors():
    summary = fuzz_reader.fuzz(int(os.environ.get("KDECODE_FUZZ_N", 3000)), seed=2)
    assert summary["failures"] == []
    # The mutations reach both outcomes: a fuzzer that only ever fails the SOI check tests nothing.
    assert summary["outcomes"].get("ok", 0) > summary["inputs"] // 20
    assert summary["outcomes"].get("CorruptJpegError", 0) > summary["inputs"] // 4
