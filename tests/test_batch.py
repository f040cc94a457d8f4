"""decode_batch / decode_iter, and the torch Dataset + collate: same pixels as decode(), in
input order, with bad files raised or reported in place."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import kdecode
from conftest import encode, photo
from kdecode.data import JpegFolder, collate_coefficients, decode_coefficient_batch
from kdecode.models.base import RunOptions


def mixed_files() -> list[bytes]:
    """Different sizes, gray and colour, every common sampling, baseline and progressive."""
    files = []
    for k, (h, w) in enumerate([(16, 16), (33, 47), (9, 7), (64, 48), (16, 16), (120, 90), (1, 1), (35, 21)]):
        sampling = ["4:2:0", "4:4:4", "4:2:2", "gray"][k % 4]
        opts = dict(quality=20 + 9 * k, progressive=k % 3 == 0)
        if sampling != "gray":
            opts["subsampling"] = sampling
        files.append(encode(photo(h, w, k, gray=sampling == "gray"), **opts))
    return files


@pytest.mark.parametrize("output", ["numpy", "torch", "pil"])
def test_batch_equals_decode_one_by_one(output):
    files = mixed_files()
    out = kdecode.decode_batch(files, model=None, output=output, batch_size=3, workers=2)
    assert len(out) == len(files)
    for data, got in zip(files, out):
        want = kdecode.decode(data, model=None, output=output)
        if output == "pil":
            assert got.mode == want.mode and got.size == want.size
            got, want = np.asarray(got), np.asarray(want)
        elif output == "torch":
            assert got.shape == want.shape
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_iter_is_lazy_and_ordered():
    files = mixed_files()
    consumed = []

    def sources():
        for i, data in enumerate(files):
            consumed.append(i)
            yield io.BytesIO(data)

    stream = kdecode.decode_iter(sources(), model=None, output="numpy", batch_size=2, workers=2)
    first = next(stream)
    assert len(consumed) <= 4  # this group and the one read ahead, not the whole input
    assert np.array_equal(first, kdecode.decode(files[0], model=None, output="numpy"))
    rest = list(stream)
    assert [r.shape for r in rest] == [kdecode.decode(f, model=None, output="numpy").shape for f in files[1:]]


def test_bad_file_raises_in_order_or_is_reported(tmp_path):
    files = mixed_files()[:4]
    bad = files[1][:-20]  # truncated inside the entropy-coded data
    srcs = [files[0], bad, b"not a jpeg", tmp_path / "missing.jpg", files[3]]
    got = []
    with pytest.raises(kdecode.CorruptJpegError, match="item 1"):
        for image in kdecode.decode_iter(srcs, model=None, output="numpy", batch_size=2):
            got.append(image)
    assert len(got) == 1  # the result before the bad file came out first
    with pytest.raises(kdecode.CorruptJpegError):
        kdecode.decode_batch(srcs, model=None)
    out = kdecode.decode_batch(srcs, model=None, output="numpy", batch_size=2, return_exceptions=True)
    assert isinstance(out[1], kdecode.CorruptJpegError) and "item 1" in str(out[1])
    assert isinstance(out[2], kdecode.NotAJpegError) and "item 2" in str(out[2])
    assert isinstance(out[3], FileNotFoundError)
    assert np.array_equal(out[0], kdecode.decode(files[0], model=None, output="numpy"))
    assert np.array_equal(out[4], kdecode.decode(files[3], model=None, output="numpy"))
    # read options reach the reader: a truncated file is accepted like Pillow's LOAD_TRUNCATED_IMAGES
    ok = kdecode.decode_batch([bad], model=None, output="numpy", allow_truncated=True)
    assert ok[0].shape == kdecode.decode(files[1], model=None, output="numpy").shape


def test_bad_arguments():
    with pytest.raises(kdecode.KdecodeError, match="exact"):
        kdecode.decode_batch([b""], model="no-such-model")
    with pytest.raises(ValueError):
        kdecode.decode_batch([b""], output="png")
    assert kdecode.decode_batch([], model=None) == []


def test_dataset_and_collate(tmp_path):
    files = [encode(photo(h, w, i), quality=50, subsampling="4:2:0") for i, (h, w) in
             enumerate([(16, 24), (40, 33), (17, 9), (40, 33), (64, 8)])]
    (tmp_path / "sub").mkdir()
    for i, data in enumerate(files):
        (tmp_path / ("sub" if i % 2 else ".") / f"{i}.jpg").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = JpegFolder(tmp_path)
    assert len(dataset) == len(files)
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_coefficients)
    seen = 0
    for batch in loader:
        n = len(batch)
        assert batch.qtables.shape == (n, 3, 8, 8) and batch.qtables.dtype == torch.int32
        for k, blocks in enumerate(batch.blocks):
            assert blocks.dtype == torch.int16 and blocks.shape[0] == n
            for i, coeffs in enumerate(batch.coefficients):
                grid = coeffs.components[k].blocks
                assert torch.equal(blocks[i, :grid.shape[0], :grid.shape[1]], torch.from_numpy(grid))
                assert not blocks[i, grid.shape[0]:].any() and not blocks[i, :, grid.shape[1]:].any()
        for i, coeffs in enumerate(batch.coefficients):
            assert batch.sizes[i].tolist() == [coeffs.height, coeffs.width]
            path = dataset.files[seen + i]
            assert torch.equal(batch.blocks[0][i, :coeffs.components[0].blocks_h, :coeffs.components[0].blocks_w],
                               torch.from_numpy(kdecode.read_coefficients(path).components[0].blocks))
        images = decode_coefficient_batch(batch, model=None)
        for coeffs, image, path in zip(batch.coefficients, images, dataset.files[seen:seen + n]):
            assert torch.equal(image, kdecode.decode(path, model=None, output="torch"))
        seen += n
    assert seen == len(files)


def test_collate_refuses_mixed_sampling():
    a = kdecode.read_coefficients(encode(photo(16, 16), quality=50, subsampling="4:2:0"))
    b = kdecode.read_coefficients(encode(photo(16, 16, gray=True), quality=50))
    with pytest.raises(ValueError, match="cannot share a batch"):
        collate_coefficients([a, b])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("output", ["torch", "numpy", "pil"])
@pytest.mark.parametrize("batch_size", [3, 64])
def test_gpu_batch_equals_cpu_decode(output, batch_size):
    # The exact decode takes the gray and YCbCr images of a part, all sizes, as one ragged
    # batch (CMYK beside them); numpy and PIL results are laid out on the GPU and copied to
    # pinned memory before the group's one wait: each must be what decode() gives on CPU.
    from test_exact_decode import cmyk_jpeg

    files = mixed_files() + [cmyk_jpeg(21, 30, 7, 2, subsampling=2)] + mixed_files()[::-1]
    out = kdecode.decode_batch(files, model=None, device="cuda", output=output, batch_size=batch_size)
    for data, got in zip(files, out):
        want = kdecode.decode(data, model=None, output=output)
        if output == "torch":
            assert got.is_cuda
            got = got.cpu()
        if output == "pil":
            assert (got.mode, got.size, got.info) == (want.mode, want.size, want.info)
        assert np.array_equal(np.asarray(got), np.asarray(want))
    one = kdecode.decode(files[-1], model=None, device="cuda", output=output)  # decode's own copy back
    assert np.array_equal(np.asarray(one.cpu() if output == "torch" else one), np.asarray(want))
    batch = collate_coefficients([kdecode.read_coefficients(f) for f in files[:1]]).pin_memory().to("cuda")
    assert batch.blocks[0].is_cuda


@pytest.mark.parametrize("output", ["numpy", "pil", "torch"])
def test_gpu_steps_on_a_cpu_device(output):
    # decode_iter's GPU path (reads in a pool, each group sent to the decoder in quarters as it
    # is read, results laid out for the host and finished after the group's one wait), run on a
    # CPU device (no stream, no pinned memory) so that it is checked without a GPU: the same
    # images as decode, in order, a bad file in its place or raised in its turn.
    from kdecode import batch

    files = mixed_files() + [b"not a jpeg"] + mixed_files()[:3]

    def run(return_exceptions, model=None):
        return batch._decode_iter_groups(enumerate(files), model, RunOptions(), torch.device("cpu"), output, 4, 2,
                                         return_exceptions, {})

    out = list(run(True))
    assert len(out) == len(files) and isinstance(out[8], kdecode.KdecodeError) and "item 8" in str(out[8])
    for data, got in zip(files[:8] + files[9:], out[:8] + out[9:]):
        want = kdecode.decode(data, model=None, output=output)
        if output == "pil":
            assert (got.mode, got.size, got.info) == (want.mode, want.size, want.info)
        assert np.array_equal(np.asarray(got), np.asarray(want))
    stream = run(False)
    assert len([next(stream) for _ in range(8)]) == 8
    with pytest.raises(kdecode.KdecodeError, match="item 8"):
        next(stream)
    if output == "numpy":  # a model's batches of one geometry, within a quarter
        restored = list(run(True, "fast_arcnn"))
        for data, got in zip(files[:8], restored[:8]):
            want = kdecode.decode(data, model="fast_arcnn", output=output)
            assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1


def test_read_into_pinned_memory():
    # decode_iter's GPU workers read the blocks straight into pinned memory.
    data = mixed_files()[2]
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="pin"):
            kdecode.read_coefficients(data, pin_memory=True)
        return
    pinned, plain = kdecode.read_coefficients(data, pin_memory=True), kdecode.read_coefficients(data)
    for a, b in zip(pinned.components, plain.components):
        assert torch.from_numpy(a.blocks).is_pinned() and np.array_equal(a.blocks, b.blocks)


def test_exact_decode_of_many_batches_by_geometry(monkeypatch):
    # The GPU path of decode_batch(model=None) decodes images of one geometry as one batch;
    # its torch reference (forced here, on CPU) must give each image's own exact decode.
    from kdecode.models.base import ExactDecoder
    from kdecode.pipeline import _geometry, decode_exact

    files = mixed_files() + [encode(photo(33, 47, s), quality=q, subsampling="4:2:0") for s, q in ((7, 30), (8, 80))]
    coeffs = [kdecode.read_coefficients(b) for b in files]
    assert len({_geometry(c) for c in coeffs}) < len(coeffs)  # some batches of several images
    expected = [decode_exact(c) for c in coeffs]
    monkeypatch.setenv("KDECODE_FORCE_TORCH", "1")
    got = ExactDecoder().decode_many(coeffs, device="cpu")
    assert len(got) == len(expected)
    for k, (e, g) in enumerate(zip(expected, got)):
        assert g.shape == e.shape and torch.equal(g, e), k


@pytest.mark.parametrize("name", ["fast_arcnn", "hrcnn", "dmcnn", "d3"])
def test_model_restores_a_batch_like_one_by_one(name):
    # On a GPU, decode_batch hands a model the images of one geometry as one batch (one forward
    # pass: pixel models the float planes, coefficient models the luma blocks, each image with
    # its own table; nothing padded); each must come out as decode() gives it (float
    # convolutions on a batch may round differently in the last bit: one grey level, rarely).
    decoder = kdecode.models.load_model(name, quality=10)
    sizes = [(40, 56), (40, 56), (33, 47), (40, 56)]
    files = [encode(photo(h, w, s, gray=s == 3), quality=q, subsampling="4:2:0")
             for s, ((h, w), q) in enumerate(zip(sizes, (12, 20, 12, 12)))]
    coeffs = [kdecode.read_coefficients(b) for b in files]
    with torch.inference_mode():
        got = decoder.decode_many(coeffs, device="cpu")
        expected = [decoder.decode(c, "cpu") for c in coeffs]
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        diff = (g.int() - e.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    assert not torch.equal(got[0], kdecode.decode(files[0], model=None, output="torch"))  # it restored


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", ["fast_arcnn", "dcsc", "d3"])
def test_gpu_model_batch_equals_one_by_one(model, monkeypatch):
    # decode_batch on a GPU: images of one geometry go through the model as one batch on the
    # batch stream; each must be what decode() gives on the same GPU (float rounding: one grey
    # level at most, rarely), and every image must differ from the plain decode (it restored).
    # TF32 convolutions (cuDNN's default) round differently per batch size, far above float32's
    # last bit: off here, so that only the batching is tested.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    files = [encode(photo(40, 56, s % 3, gray=s == 3), quality=12, subsampling="4:2:0") for s in range(5)]
    out = kdecode.decode_batch(files, model=model, device="cuda", output="torch", batch_size=4)
    for data, got in zip(files, out):
        want = kdecode.decode(data, model=model, device="cuda", output="torch")
        assert got.is_cuda and got.shape == want.shape
        diff = (got.int() - want.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
        assert not torch.equal(got.cpu(), kdecode.decode(data, model=None, output="torch"))


def test_large_batches_are_split_by_samples(monkeypatch):
    # decode_batch of many large images must not ask for one allocation for all of them (64
    # 3840x2160 images through a model: 126 GiB): a batch over MAX_BATCH_SAMPLES is split, with
    # the same results.
    from kdecode import pipeline
    from kdecode.models.base import ExactDecoder

    files = [encode(photo(33, 47, s), quality=40, subsampling="4:2:0") for s in range(5)]
    coeffs = [kdecode.read_coefficients(b) for b in files]
    calls = []
    real = pipeline._decode_batch
    monkeypatch.setattr(pipeline, "_decode_batch", lambda first, blocks, *a: calls.append(blocks[0].shape[0])
                        or real(first, blocks, *a))
    monkeypatch.setitem(pipeline.MAX_BATCH_SAMPLES, "exact", 2 * 33 * 47)
    monkeypatch.setenv("KDECODE_FORCE_TORCH", "1")
    got = ExactDecoder().decode_many(coeffs, device="cpu")
    assert calls == [2, 2, 1]
    for c, g in zip(coeffs, got):
        assert torch.equal(g, pipeline.decode_exact(c))


def test_few_images_get_the_spare_workers_as_threads(monkeypatch):
    """decode_batch of fewer images than workers gives each one's exact pixel stage the spare
    workers as threads (bands of rows); many images get one thread each. Same pixels."""
    from kdecode.ops import exact_cpu

    if not exact_cpu.usable():
        pytest.skip(f"C path unavailable: {exact_cpu.why_not()}")
    seen = []
    real = exact_cpu.read_and_decode

    def counting(src, rgbx=False, threads=1, decode_if=None, **read_options):
        seen.append(threads)
        return real(src, rgbx, threads, decode_if, **read_options)

    monkeypatch.setattr(exact_cpu, "read_and_decode", counting)
    monkeypatch.setattr(exact_cpu, "MIN_BAND_PIXELS", 1)
    data = encode(photo(200, 120, 3), quality=80)
    from PIL import Image

    ref = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(kdecode.decode_batch([data], model=None, workers=4, output="numpy")[0], ref)
    assert seen == [min(4, kdecode.settings.threads())]
    seen.clear()
    kdecode.decode_batch([data] * 8, model=None, workers=4, output="numpy")
    assert seen == [1] * 8


def test_cpu_tasks_group_small_files(tmp_path):
    # On CPU, consecutive small files go to a worker together (up to TASK_BYTES of JPEG): a task
    # handed over costs as much as decoding a 64x64 file. Order is kept; a file object, whose
    # size is unknown, and a file larger than the limit go alone.
    from kdecode.batch import _tasks

    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 30)
    sources = [b"a" * 40, b"b" * 40, str(path), io.BytesIO(b"c"), b"d" * 10, b"e" * 500, b"f" * 10, "missing.jpg"]
    tasks = list(_tasks(enumerate(sources), 100))
    assert [[i for i, _ in t] for t in tasks] == [[0, 1], [2], [3], [4], [5], [6], [7]]
    assert [[i for i, _ in t] for t in _tasks(enumerate(sources), 1000)] == [[0, 1, 2], [3], [4, 5, 6], [7]]
