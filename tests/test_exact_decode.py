"""decode(model=None) must return exactly what Pillow returns: same mode, size and pixels."""
from __future__ import annotations

import importlib
import io

import numpy as np
import pytest
from PIL import Image

import kdecode
from conftest import corpus, encode, photo, shared_dir

CORPUS = corpus()


def pillow_decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def assert_same_as_pillow(data: bytes, name: str) -> None:
    ref = pillow_decode(data)
    out = kdecode.decode(data, model=None)
    assert out.mode == ref.mode, name
    assert out.size == ref.size, name
    diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(ref, dtype=np.int16)).max()
    assert diff == 0, f"{name}: max abs difference {diff}"


@pytest.mark.parametrize("name,data", CORPUS, ids=[n for n, _ in CORPUS])
def test_generated_corpus_bit_exact(name, data):
    assert_same_as_pillow(data, name)


def test_corpus_covers_the_spec():
    names = " ".join(n for n, _ in CORPUS)
    for part in ("gray", "4:4:4", "4:2:2", "4:2:0", "prog", "base", "1x1", "9x7", "17x33", "3x1000", "1500x2000"):
        assert part in names
    assert any("-o" in n for n, _ in CORPUS) and any("r" in n.split("-")[-1] for n, _ in CORPUS)
    qualities = {int(n.split("-q")[1].split("-")[0]) for n, _ in CORPUS}
    assert min(qualities) <= 10 and max(qualities) >= 90


def test_outputs_agree():
    data = encode(photo(37, 53, 1), quality=60, subsampling="4:2:0")
    pil = kdecode.decode(data, model=None)
    arr = kdecode.decode(data, model="exact", output="numpy")
    ten = kdecode.decode(data, model=None, output="torch")
    assert arr.dtype == np.uint8 and arr.shape == (37, 53, 3)
    assert ten.dtype.is_floating_point is False and tuple(ten.shape) == (3, 37, 53)
    assert np.array_equal(np.asarray(pil), arr)
    assert np.array_equal(ten.permute(1, 2, 0).numpy(), arr)
    gray = kdecode.decode(encode(photo(20, 30, 2, gray=True), quality=50), model=None, output="numpy")
    assert gray.shape == (20, 30)


@pytest.mark.parametrize("gray", [False, True])
def test_pil_image_behaves_like_pillows(gray, monkeypatch):
    # decode(output="pil") hands Pillow the decoded memory without a copy (Pillow's own 4-byte
    # RGB layout, or L): the image must act like Pillow's in every way a user sees, and the
    # copying fallback must give the same image.
    decode_module = importlib.import_module("kdecode.decode")  # the module (kdecode.decode is the function)
    data = encode(photo(29, 41, 3, gray=gray), quality=70)
    ref = pillow_decode(data)
    out = kdecode.decode(data, model=None)
    assert decode_module._pillow_maps_rgbx()  # this Pillow takes the no-copy path
    assert (out.mode, out.size, out.tobytes()) == (ref.mode, ref.size, ref.tobytes())
    assert out.getpixel((40, 28)) == ref.getpixel((40, 28))
    out.putpixel((0, 0), ref.getpixel((1, 1)))  # writable (Pillow copies a mapped image first)
    ref.putpixel((0, 0), ref.getpixel((1, 1)))
    assert out.tobytes() == ref.tobytes()
    buf = io.BytesIO()
    out.save(buf, "PNG")
    assert Image.open(buf).tobytes() == ref.tobytes()
    assert out.convert("RGB" if gray else "L").tobytes() == ref.convert("RGB" if gray else "L").tobytes()
    monkeypatch.setattr(decode_module, "_pillow_maps_rgbx", lambda: False)
    assert kdecode.decode(data, model=None).tobytes() == pillow_decode(data).tobytes()


def test_sources_path_bytes_fileobj(tmp_path):
    data = encode(photo(16, 24, 3), quality=75)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    a = kdecode.decode(str(path), model=None, output="numpy")
    b = kdecode.decode(path, model=None, output="numpy")
    c = kdecode.decode(io.BytesIO(data), model=None, output="numpy")
    d = kdecode.decode(data, model=None, output="numpy")
    assert all(np.array_equal(a, x) for x in (b, c, d))


def test_unknown_model_lists_models():
    with pytest.raises(kdecode.KdecodeError, match="exact"):
        kdecode.decode(encode(photo(8, 8)), model="no-such-model")


def test_auto_decodes():
    data = encode(photo(24, 40, 4), quality=30)
    out = kdecode.decode(data)
    assert out.size == (40, 24) and out.mode == "RGB"


def test_rare_samplings_bit_exact(tmp_path):
    """4:4:0 and 4:1:1 (not producible with Pillow) written through libjpeg by jpeglib."""
    jpeglib = pytest.importorskip("jpeglib")
    im = jpeglib.from_spatial(photo(37, 53, 5))
    for vh in (((2, 1), (1, 1), (1, 1)), ((1, 4), (1, 1), (1, 1))):
        im.samp_factor = np.array(vh)
        path = tmp_path / "s.jpg"
        im.write_spatial(str(path), qt=50)
        assert_same_as_pillow(path.read_bytes(), f"samp {vh}")


def _dataset_files(name):
    return sorted(p for p in shared_dir(name).rglob("*") if p.suffix.lower() in (".png", ".jpg"))


@pytest.mark.shared
@pytest.mark.parametrize("dataset", ["LIVE1_color", "Kodak24", "BSDS500"])
@pytest.mark.parametrize("quality", [10, 50, 90])
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_datasets_reencoded_bit_exact(dataset, quality, subsampling):
    for path in _dataset_files(dataset):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        assert_same_as_pillow(encode(rgb, quality=quality, subsampling=subsampling), f"{path.name} q{quality}")


@pytest.mark.shared
def test_bsds500_originals_bit_exact():
    files = [p for p in _dataset_files("BSDS500") if p.suffix == ".jpg"]
    assert len(files) == 432
    for path in files:
        assert_same_as_pillow(path.read_bytes(), str(path))


def test_arithmetic_coded_bit_exact(tmp_path):
    jpeglib = pytest.importorskip("jpeglib")
    jpeglib.version.set("turbo210")
    path = tmp_path / "arith.jpg"
    jpeglib.from_spatial(photo(37, 53, 6)).write_spatial(str(path), qt=50, flags=["+ARITH_CODE"])
    data = path.read_bytes()
    assert kdecode.read_coefficients(data).arithmetic
    assert_same_as_pillow(data, "arithmetic")
