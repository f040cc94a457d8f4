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
    assert out.info == ref.info, name
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


def cmyk_jpeg(height: int, width: int, seed: int, adobe_transform: int | None, subsampling: int = 0,
              progressive: bool = False) -> bytes:
    """A 4-component JPEG as Pillow writes CMYK (Adobe marker, transform 0), with the marker's
    transform byte set to ``adobe_transform`` (2: YCCK; 1: not valid for 4 components, libjpeg
    takes it as YCCK) or the marker removed (None: libjpeg takes the file as CMYK)."""
    rgb = photo(height, width, seed)
    cmyk = np.concatenate([rgb, rgb[..., :1] // 2 + 64], axis=2)
    buf = io.BytesIO()
    Image.fromarray(cmyk, "CMYK").save(buf, "JPEG", quality=70, subsampling=subsampling, progressive=progressive)
    data = bytearray(buf.getvalue())
    app14 = data.index(b"\xff\xee")
    assert data[app14 + 4:app14 + 9] == b"Adobe" and data[app14 + 15] == 0
    if adobe_transform is None:
        return bytes(data[:app14] + data[app14 + 2 + int.from_bytes(data[app14 + 2:app14 + 4], "big"):])
    data[app14 + 15] = adobe_transform
    return bytes(data)


@pytest.mark.parametrize("reader", ["native", "jpeglib"])
@pytest.mark.parametrize("transform,space", [(0, "cmyk"), (None, "cmyk"), (2, "ycck"), (1, "ycck")])
def test_cmyk_and_ycck_bit_exact(transform, space, reader, monkeypatch):
    """Pillow decodes 4-component JPEGs as Adobe's inverted CMYK; kdecode must give the same
    image on the C path and the torch path, for every sampling Pillow writes, progressive too."""
    from kdecode.jpeg import reader as reader_module

    if reader == "jpeglib":
        pytest.importorskip("jpeglib")
    try:
        reader_module.set_backend(reader)
        for i, (size, subsampling, progressive) in enumerate([((37, 53), 0, False), ((64, 48), 2, False),
                                                               ((17, 99), 1, True)]):
            data = cmyk_jpeg(*size, i, transform, subsampling, progressive)
            assert kdecode.read_coefficients(data).color_space == space
            assert_same_as_pillow(data, f"{space} {size} subsampling {subsampling}")
            monkeypatch.setenv("KDECODE_FORCE_TORCH", "1")
            assert_same_as_pillow(data, f"{space} {size} subsampling {subsampling}, torch path")
            monkeypatch.delenv("KDECODE_FORCE_TORCH")
    finally:
        reader_module.set_backend(None)


def test_cmyk_outputs_batches_and_models():
    """CMYK comes out as mode CMYK, HxWx4 and 4xHxW; batches decode it like one by one, and a
    restoring model leaves it exact (it has no luma to restore)."""
    data = [cmyk_jpeg(21, 30, 7, 2, subsampling=2), cmyk_jpeg(21, 30, 8, 0), encode(photo(21, 30, 9), quality=20)]
    assert kdecode.read_coefficients(data[0]).sampling == "2x2,1x1,1x1,1x1"
    ref = np.asarray(pillow_decode(data[0]))
    assert np.array_equal(kdecode.decode(data[0], model=None, output="numpy"), ref)
    assert np.array_equal(kdecode.decode(data[0], model=None, output="torch").permute(1, 2, 0).numpy(), ref)
    for model in ("fast_arcnn", "hrcnn", "d3"):  # pixel and coefficient models
        assert np.array_equal(np.asarray(kdecode.decode(data[0], model=model)), ref), model
    batch = kdecode.decode_batch(data, model=None, output="numpy")
    assert [b.shape for b in batch] == [(21, 30, 4), (21, 30, 4), (21, 30, 3)]
    for b, d in zip(batch, data):
        assert np.array_equal(b, np.asarray(pillow_decode(d)))


def test_info_like_pillows():
    """PIL images carry the ``info`` Pillow gives them (ICC profile, EXIF, dpi, comment, JFIF,
    progressive, Adobe), whichever path made them, so they save and orient like Pillow's."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    files = {"metadata": encode(photo(40, 60, 11), quality=80, icc_profile=icc * 50, exif=exif, dpi=(300, 300),
                                comment="kdecode", progressive=True),  # a profile over several APP2 segments
             "cmyk": cmyk_jpeg(20, 30, 12, 0)}
    for name, data in files.items():
        ref = pillow_decode(data)
        for out in (kdecode.decode(data, model=None), kdecode.decode(data, model="fast_arcnn"),
                    kdecode.decode_batch([data], model=None)[0]):
            assert out.info == ref.info, name
    image = kdecode.decode(files["metadata"], model=None)
    assert image.info["icc_profile"] == icc * 50 and image.getexif()[0x0112] == 6
    from PIL import ImageOps

    assert ImageOps.exif_transpose(image).size == (40, 60)
    assert kdecode.read_coefficients(files["cmyk"]).metadata.endswith(b"\x00\x3f\x00")  # ends with the SOS segment


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cmyk_on_gpu_bit_exact():
    """The GPU path (CUDA IDCT for 4 components, the torch upsampling and Adobe inversion)."""
    files = [cmyk_jpeg(37, 53, 13, 2, subsampling=2), cmyk_jpeg(37, 53, 14, 0)]
    for data in files:
        ref = np.asarray(pillow_decode(data))
        assert np.array_equal(kdecode.decode(data, model=None, device="cuda", output="numpy"), ref)
    batch = kdecode.decode_batch(files, model=None, device="cuda", output="numpy")
    assert all(np.array_equal(b, np.asarray(pillow_decode(d))) for b, d in zip(batch, files))
