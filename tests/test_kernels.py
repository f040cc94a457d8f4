"""The CUDA kernels of csrc/ against the torch reference ops.

Every kernel test runs on two backends: "cuda" (NVRTC through CuPy on a GPU; skipped without
one) and "host" (the same .cu sources built as host C++ with g++ and run serially on the CPU,
so CI checks the kernels' arithmetic and indexing without a GPU; skipped without g++). CI also
compiles every .cu file with `nvcc -arch=sm_90`.
"""
from __future__ import annotations

import ctypes
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from kdecode.ops import (blocks_to_planes, clamp_blocks, clamp_planes, cuda, dispatch, force_torch, idct_islow,
                         planes_to_blocks, upsample_to_rgb)
from kdecode.ops.blocks import blocks_to_plane

CSRC = cuda.csrc_dir()
SOURCES = sorted(p.name for p in CSRC.glob("*.cu"))
SHIM = Path(__file__).with_name("host_shim.h")


# ---- backends -------------------------------------------------------------------------------------

class HostBackend:
    """Runs the kernels' own code on the CPU: csrc/*.cu built with g++ and tests/host_shim.h."""

    _CTYPES = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.uint64: ctypes.c_uint64,
               np.float32: ctypes.c_float, np.float64: ctypes.c_double}

    def __init__(self, build_dir: Path):
        self.libraries = {}
        for source in SOURCES:
            text = build_dir / source.replace(".cu", ".cc")
            text.write_text(cuda.source_text(source))  # what NVRTC compiles, includes inlined
            library = build_dir / source.replace(".cu", ".so")
            subprocess.run(["g++", "-O1", "-std=c++17", "-fno-strict-aliasing", "-Wno-unknown-pragmas",
                            "-shared", "-fPIC", "-include", str(SHIM), str(text), "-o", str(library)],
                           check=True, capture_output=True, text=True)
            self.libraries[source] = ctypes.CDLL(str(library))

    def launch(self, source, name, threads, args, device):
        assert device.type == "cpu"
        converted = [ctypes.c_void_p(a.data_ptr()) if isinstance(a, torch.Tensor) else self._CTYPES[type(a)](a)
                     for a in args]
        function = getattr(self.libraries[source], name)
        function.restype = None
        function(*converted)


@pytest.fixture(scope="session")
def host_backend(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: cannot build the kernels as host code")
    return HostBackend(tmp_path_factory.mktemp("host_kernels"))


def _gpu_problem() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return dispatch.cupy_problem()


@pytest.fixture(params=["host", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request, monkeypatch):
    """The device whose tensors go through the kernels (the dispatch is checked separately)."""
    if request.param == "cuda":
        problem = _gpu_problem()
        if problem:
            pytest.skip(problem)
        return torch.device("cuda")
    backend = request.getfixturevalue("host_backend")
    monkeypatch.setattr(cuda, "HOST_BACKEND", backend)
    monkeypatch.setattr(dispatch, "device_has_kernels", lambda d: True)
    return torch.device("cpu")


def _reference(fn, *args, **kwargs):
    with force_torch():
        return fn(*args, **kwargs)


def _check_used_kernels(*tensors):
    assert dispatch.use_kernels(*tensors), dispatch.why_not_kernels(*tensors)


# ---- inputs ---------------------------------------------------------------------------------------

# (lead, [(bh, bw) per component]): one block, odd grids, 4:2:0 with odd sizes, batches.
GRIDS = [
    ((), [(1, 1)]),
    ((), [(3, 5)]),
    ((2,), [(5, 3), (3, 2), (3, 2)]),        # 33x17 at 4:2:0
    ((2, 3), [(2, 7), (2, 4), (2, 4)]),      # 4:2:2, batch of 2x3
    ((1,), [(4, 4), (4, 4), (4, 4), (4, 4)]),  # 4 components
]


def _blocks(gen, lead, grid, scale=64, device="cpu"):
    """Quantized int16 blocks in [-scale, scale): with tables in [1, 64), |c q| < 2^12."""
    return [torch.randint(-scale, scale, (*lead, bh, bw, 8, 8), generator=gen, dtype=torch.int16).to(device)
            for bh, bw in grid]


def _qtables(gen, lead, n, per_image, device="cpu"):
    shape = (*lead, n, 8, 8) if per_image else (n, 8, 8)
    return torch.randint(1, 64, shape, generator=gen, dtype=torch.int32).to(device)


def _rel_error(out, ref):
    out, ref = out.double().cpu(), ref.double().cpu()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


# ---- compile checks (no GPU needed) ---------------------------------------------------------------

@pytest.mark.parametrize("source", SOURCES)
def test_source_compiles_with_nvcc(source, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    result = subprocess.run([nvcc, "-arch=sm_90", "-c", str(CSRC / source), "-o", str(tmp_path / "kernel.o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed on csrc/{source}:\n{result.stderr}"


def test_all_kernels_are_sources():
    assert {"dct.cu", "quant.cu", "color.cu"} <= set(SOURCES)


# ---- dispatch (no GPU needed) ---------------------------------------------------------------------

class _SpyBackend:
    def __init__(self):
        self.launches = []

    def launch(self, source, name, threads, args, device):
        self.launches.append(name)


def test_dispatch_reasons(monkeypatch):
    x = torch.zeros(1, 1, 8, 8, dtype=torch.int16)
    monkeypatch.delenv(dispatch.FORCE_TORCH_ENV, raising=False)
    assert not dispatch.use_kernels(x)
    assert "cpu" in dispatch.why_not_kernels(x)
    monkeypatch.setattr(dispatch, "device_has_kernels", lambda d: True)
    assert dispatch.use_kernels(x)
    assert "dtypes" in dispatch.why_not_kernels(x, supported=False)
    with force_torch():
        assert "force_torch" in dispatch.why_not_kernels(x)
    assert dispatch.use_kernels(x)
    monkeypatch.setenv(dispatch.FORCE_TORCH_ENV, "1")
    assert dispatch.FORCE_TORCH_ENV in dispatch.why_not_kernels(x)
    monkeypatch.setenv(dispatch.FORCE_TORCH_ENV, "0")
    assert dispatch.use_kernels(x)


def test_env_var_forces_the_reference(monkeypatch):
    """With kernels available, the env var routes every op to the reference (no launch), and the
    reference gives libjpeg's numbers."""
    spy = _SpyBackend()
    monkeypatch.setattr(cuda, "HOST_BACKEND", spy)
    monkeypatch.setattr(dispatch, "device_has_kernels", lambda d: True)
    gen = torch.Generator().manual_seed(0)
    blocks, q = _blocks(gen, (), [(2, 3)]), _qtables(gen, (), 1, False)
    monkeypatch.setenv(dispatch.FORCE_TORCH_ENV, "1")
    planes = blocks_to_planes(blocks, q, exact=True)
    assert spy.launches == []
    assert torch.equal(planes[0], blocks_to_plane(idct_islow(blocks[0], q[0])))
    monkeypatch.delenv(dispatch.FORCE_TORCH_ENV)
    blocks_to_planes(blocks, q, exact=True)
    assert spy.launches == ["idct_islow_s16_u8"]


def test_importing_kdecode_does_not_need_cupy():
    code = ("import sys; sys.modules['cupy'] = None; import kdecode, kdecode.ops; "
            "from kdecode.ops import dispatch; print(dispatch.cupy_problem())")
    result = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "cupy is not installed" in result.stdout


# ---- (4) islow and (1) float IDCT -----------------------------------------------------------------

@pytest.mark.parametrize("lead,grid", GRIDS)
@pytest.mark.parametrize("per_image", [False, True])
def test_islow_is_bit_identical(device, lead, grid, per_image):
    gen = torch.Generator().manual_seed(1)
    blocks = _blocks(gen, lead, grid, device=device)
    q = _qtables(gen, lead, len(grid), per_image, device=device)
    if device.type == "cuda":
        _check_used_kernels(*blocks, q)
    planes = blocks_to_planes(blocks, q, exact=True)
    reference = _reference(blocks_to_planes, blocks, q, exact=True)
    for c, (plane, ref) in enumerate(zip(planes, reference)):
        assert plane.dtype == torch.uint8 and plane.shape == ref.shape
        assert torch.equal(plane, ref)
        qc = q[..., c, :, :] if not per_image else q[..., c, None, None, :, :]
        assert torch.equal(plane, blocks_to_plane(idct_islow(blocks[c], qc)))


def test_islow_extreme_coefficients(device):
    """Saturation at 0 and 255 and the largest dequantized values libjpeg sees."""
    gen = torch.Generator().manual_seed(2)
    blocks = _blocks(gen, (3,), [(4, 4)], scale=1024, device=device)
    blocks[0][0, 0, 0] = 0
    blocks[0][0, 0, 1, 0, 0] = 1023
    blocks[0][0, 0, 2, 0, 0] = -1024
    q = torch.randint(1, 16, (1, 8, 8), generator=gen, dtype=torch.int32).to(device)
    planes = blocks_to_planes(blocks, q, exact=True)
    assert torch.equal(planes[0], _reference(blocks_to_planes, blocks, q, exact=True)[0])
    assert planes[0].min() == 0 and planes[0].max() == 255


@pytest.mark.parametrize("lead,grid", GRIDS)
def test_dequantize_idct_float(device, lead, grid):
    gen = torch.Generator().manual_seed(3)
    blocks = _blocks(gen, lead, grid, device=device)
    q = _qtables(gen, lead, len(grid), per_image=bool(lead), device=device)
    planes = blocks_to_planes(blocks, q)
    exact = _reference(blocks_to_planes, [b.double() for b in blocks], q)  # float64 reference
    for plane, ref in zip(planes, exact):
        assert plane.dtype == torch.float32 and plane.shape == ref.shape
        assert _rel_error(plane, ref) < 1e-6
        assert float((plane.double() - ref).abs().max()) < 2e-3 * float(ref.abs().max()) / 255


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_tables", [False, True])
def test_idct_of_float_blocks(device, dtype, with_tables):
    gen = torch.Generator().manual_seed(4)
    lead, grid = (2,), [(5, 3), (3, 2), (3, 2)]
    blocks = [(torch.randn((*lead, bh, bw, 8, 8), generator=gen, dtype=torch.float64) * 50).to(device, dtype)
              for bh, bw in grid]
    q = _qtables(gen, lead, 3, per_image=True, device=device) if with_tables else None
    planes = blocks_to_planes(blocks, q)
    reference = _reference(blocks_to_planes, [b.double() for b in blocks], q)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-13
    for plane, ref in zip(planes, reference):
        assert plane.dtype == dtype
        assert _rel_error(plane, ref) < tolerance


# ---- (2) forward DCT (+ quantization) -------------------------------------------------------------

@pytest.mark.parametrize("lead,grid", GRIDS)
def test_forward_dct(device, lead, grid):
    gen = torch.Generator().manual_seed(5)
    planes = [(torch.rand((*lead, bh * 8, bw * 8), generator=gen, dtype=torch.float64) * 255).to(device)
              for bh, bw in grid]
    for dtype, tolerance in ((torch.float32, 1e-6), (torch.float64, 1e-13)):
        blocks = planes_to_blocks([p.to(dtype) for p in planes])
        reference = _reference(planes_to_blocks, planes)
        for b, ref in zip(blocks, reference):
            assert b.dtype == dtype and b.shape == ref.shape
            assert _rel_error(b, ref) < tolerance
    # Round trip: IDCT(DCT(x)) = x.
    back = blocks_to_planes(planes_to_blocks(planes))
    for p, r in zip(planes, back):
        assert _rel_error(r, p) < 1e-13


def test_forward_dct_quantized(device):
    gen = torch.Generator().manual_seed(6)
    lead, grid = (2,), [(5, 3), (3, 2), (3, 2)]
    planes = [(torch.rand((*lead, bh * 8, bw * 8), generator=gen) * 255).to(device) for bh, bw in grid]
    q = _qtables(gen, lead, 3, per_image=True, device=device)
    quantized = planes_to_blocks(planes, q)
    reference = _reference(planes_to_blocks, planes, q)
    for k, ref in zip(quantized, reference):
        assert k.dtype == torch.int16 and k.shape == ref.shape
        # Float DCTs that differ in the last bit may round a value lying on .5 differently.
        difference = (k.int() - ref.int()).abs()
        assert int(difference.max()) <= 1
        assert float((difference > 0).float().mean()) < 1e-3


# ---- (3) box clamp -----------------------------------------------------------------------------

@pytest.mark.parametrize("lead,grid", GRIDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clamp_and_its_gradient(device, lead, grid, dtype):
    gen = torch.Generator().manual_seed(7)
    k = _blocks(gen, lead, grid, scale=20, device=device)
    q = _qtables(gen, lead, len(grid), per_image=bool(lead), device=device)
    qf = q.to(dtype)
    # Coefficients around their interval: inside, outside and exactly on both bounds.
    x = []
    for c, kc in enumerate(k):
        qc = qf[..., c, :, :] if qf.dim() == 3 else qf[..., c, None, None, :, :]
        offset = torch.randint(-4, 5, kc.shape, generator=gen).to(device, dtype) / 4  # multiples of 1/4
        x.append(((kc.to(dtype) + offset) * qc).requires_grad_())
    out = clamp_blocks(x, k, q)
    grads = [torch.randn(o.shape, generator=gen, dtype=dtype).to(device) for o in out]
    torch.autograd.backward(out, grads)
    x_ref = [t.detach().clone().requires_grad_() for t in x]
    ref = _reference(clamp_blocks, x_ref, k, q)
    torch.autograd.backward(ref, grads)
    for o, r, a, b in zip(out, ref, x, x_ref):
        assert torch.equal(o.detach(), r.detach())
        assert torch.equal(a.grad, b.grad)
    # Values exactly on a bound exist and keep their gradient (bounds are inside the interval).
    on_bounds = 0
    for c, (t, kc) in enumerate(zip(x, k)):
        qc = qf[..., c, :, :] if qf.dim() == 3 else qf[..., c, None, None, :, :]
        bound = (t.detach() == (kc.to(dtype) - 0.5) * qc) | (t.detach() == (kc.to(dtype) + 0.5) * qc)
        assert torch.equal(t.grad[bound], grads[c][bound])
        on_bounds += int(bound.sum())
    assert on_bounds > 0


def test_clamp_planes_through_the_kernels(device):
    """The output box (DCT, clamp, IDCT of a restored luma plane, the batch of one geometry with
    a table per image) through the kernels equals its torch reference."""
    gen = torch.Generator().manual_seed(8)
    k = _blocks(gen, (3,), [(4, 6)], scale=8, device=device)[0]
    q = torch.randint(1, 64, (3, 8, 8), generator=gen, dtype=torch.int32).to(device)
    decoded = _reference(blocks_to_planes, k, q)  # inside the box
    noisy = decoded + 30 * torch.randn(decoded.shape, generator=gen).to(device)
    _check_used_kernels(noisy, k, q)
    out = clamp_planes(noisy, k, q)
    ref = _reference(clamp_planes, noisy, k, q)
    assert out.shape == noisy.shape and not torch.allclose(out, noisy, atol=1)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=0)


def test_clamp_keeps_nan(device):
    k = torch.zeros(1, 1, 8, 8, dtype=torch.int16, device=device)
    x = torch.full((1, 1, 8, 8), float("nan"), device=device)
    assert torch.isnan(clamp_blocks(x, k, torch.ones(8, 8, device=device))).all()


# ---- gradcheck of the differentiable kernels ---------------------------------------------------

def test_gradcheck(device):
    gen = torch.Generator().manual_seed(8)
    lead, grid = (2,), [(2, 3), (1, 2)]
    blocks = [torch.randn((*lead, bh, bw, 8, 8), generator=gen, dtype=torch.float64).to(device).requires_grad_()
              for bh, bw in grid]
    planes = [torch.randn((*lead, bh * 8, bw * 8), generator=gen, dtype=torch.float64).to(device).requires_grad_()
              for bh, bw in grid]
    q = _qtables(gen, lead, 2, per_image=True, device=device)
    k = [torch.randint(-3, 4, (*lead, bh, bw, 8, 8), generator=gen, dtype=torch.int16).to(device) for bh, bw in grid]
    # Inputs away from the interval bounds, where the clamp is differentiable.
    x = [((kc.double() + torch.rand(kc.shape, generator=gen, dtype=torch.float64).to(device) * 1.6 - 0.8)
          * q[..., c, None, None, :, :].double()).requires_grad_() for c, kc in enumerate(k)]
    assert torch.autograd.gradcheck(lambda *b: tuple(blocks_to_planes(list(b))), blocks)
    assert torch.autograd.gradcheck(lambda *b: tuple(blocks_to_planes(list(b), q)), blocks)
    assert torch.autograd.gradcheck(lambda *p: tuple(planes_to_blocks(list(p))), planes)
    assert torch.autograd.gradcheck(lambda *t: tuple(clamp_blocks(list(t), k, q)), x)


# ---- (5) upsampling + colour ------------------------------------------------------------------

# (image height, width, [(h_samp, v_samp) per component])
SAMPLINGS = [
    (33, 17, [(2, 2), (1, 1), (1, 1)]),   # 4:2:0, odd sizes
    (1, 1, [(2, 2), (1, 1), (1, 1)]),
    (9, 3, [(2, 2), (1, 1), (1, 1)]),     # chroma 2 wide: plain replication
    (31, 45, [(2, 1), (1, 1), (1, 1)]),   # 4:2:2
    (20, 13, [(1, 2), (1, 1), (1, 1)]),   # 4:4:0
    (16, 37, [(4, 1), (1, 1), (1, 1)]),   # 4:1:1: replication
    (15, 22, [(1, 1), (1, 1), (1, 1)]),   # 4:4:4
    (15, 22, [(1, 1)]),                   # gray
]


def _component_planes(gen, lead, height, width, sampling, dtype, device):
    """Block-padded planes cropped to each component's real size (strided views)."""
    hmax, vmax = max(h for h, _ in sampling), max(v for _, v in sampling)
    planes = []
    for h, v in sampling:
        ch, cw = -(-height * v // vmax), -(-width * h // hmax)
        full = torch.randint(0, 256, (*lead, -(-ch // 8) * 8, -(-cw // 8) * 8), generator=gen, dtype=torch.uint8)
        planes.append(full.to(device, dtype)[..., :ch, :cw])
    return planes, [(hmax // h, vmax // v) for h, v in sampling]


@pytest.mark.parametrize("height,width,sampling", SAMPLINGS)
@pytest.mark.parametrize("lead", [(), (3,)])
def test_upsample_color_exact(device, height, width, sampling, lead):
    gen = torch.Generator().manual_seed(9)
    planes, factors = _component_planes(gen, lead, height, width, sampling, torch.uint8, device)
    for convert in ([True, False] if len(planes) == 3 else [False]):
        image = upsample_to_rgb(planes, factors, (height, width), convert=convert)
        reference = _reference(upsample_to_rgb, planes, factors, (height, width), convert=convert)
        assert image.dtype == torch.uint8 and image.shape == (*lead, len(planes), height, width)
        assert torch.equal(image, reference)


@pytest.mark.parametrize("height,width,sampling", SAMPLINGS[:5])
def test_upsample_color_float(device, height, width, sampling):
    gen = torch.Generator().manual_seed(10)
    planes, factors = _component_planes(gen, (2,), height, width, sampling, torch.float32, device)
    planes = [p + torch.rand(p.shape, generator=gen).to(device) for p in planes]
    image = upsample_to_rgb(planes, factors, (height, width))
    reference = _reference(upsample_to_rgb, [p.double() for p in planes], factors, (height, width))
    assert image.dtype == torch.float32
    assert _rel_error(image, reference) < 1e-6


# ---- the exact decode on real files -----------------------------------------------------------------

def _pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def test_exact_decode_on_kernels_matches_pillow(device, jpeg_corpus):
    """On the generated corpus (conftest.py: every sampling, progressive, restart markers, odd
    sizes), the islow kernel equals the CPU path and the kernels' decode is Pillow's."""
    from kdecode import read_coefficients
    from kdecode.pipeline import component_blocks, decode_exact

    for name, data in jpeg_corpus:
        coeffs = read_coefficients(data)
        for i in range(len(coeffs.components)):
            blocks, qtable = component_blocks(coeffs, i, device)
            plane = blocks_to_planes(blocks, qtable, exact=True)
            cpu = blocks_to_plane(idct_islow(*component_blocks(coeffs, i, "cpu")))
            assert torch.equal(plane.cpu(), cpu), f"{name}: component {i}"
        image = decode_exact(coeffs, device).cpu()
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        assert np.array_equal(array, _pillow(data)), name


def test_ragged_batch_is_the_exact_decode(device, jpeg_corpus, monkeypatch):
    """decode_exact_many on the kernels: the corpus's gray and YCbCr/RGB images and the extra
    one's (every sampling Pillow writes, 4:4:0, 4:1:1, mixed factors; odd sizes, all different)
    in one ragged batch of two launches, a CMYK file beside them on the per-geometry path, and a
    sample budget that splits the batch: each image is its exact decode (Pillow's), in order."""
    from kdecode import pipeline, read_coefficients
    from native_support import extra_corpus
    from test_exact_decode import cmyk_jpeg

    files = [data for _, data in jpeg_corpus] + list(extra_corpus().values())
    files.insert(2, cmyk_jpeg(21, 30, 7, 2, subsampling=2))
    coeffs = [read_coefficients(data) for data in files]
    assert len({(c.height, c.width, c.sampling) for c in coeffs}) > 10
    expected = [pipeline.decode_exact(c) for c in coeffs]
    launches = []
    ragged = cuda.idct_islow_ragged
    monkeypatch.setattr(cuda, "idct_islow_ragged", lambda *a: launches.append(a[0].shape[0]) or ragged(*a))
    for budget, batches in ((1 << 27, 1), (300_000, None)):
        monkeypatch.setitem(pipeline.MAX_BATCH_SAMPLES, "exact", budget)
        launches.clear()
        images = pipeline.decode_exact_many(coeffs, device)
        assert len(launches) == batches if batches else len(launches) > 2, launches
        assert sum(launches) == sum(c.blocks.shape[0] * c.blocks.shape[1] for k in coeffs for c in k.components
                                    if len(k.components) != 4)
        for k, (want, image) in enumerate(zip(expected, images)):
            assert image.shape == want.shape and torch.equal(image.cpu(), want), k


@pytest.mark.parametrize("sampling", ["4:2:0", "4:2:2", "4:4:4", "gray"])
def test_collated_batch_decodes_from_its_blocks(device, sampling, monkeypatch):
    """decode_coefficient_batch of a batch moved to a device with the kernels: the exact decode
    reads the batch's own padded blocks and tables there (one ragged launch over them, nothing
    uploaded from the images' arrays), and every image is Pillow's; with a model beside it
    (images of two decoders in one batch), each decoder reads its rows of the batch's blocks, and
    the model's images are what decode() gives each file."""
    import kdecode
    from conftest import encode, photo
    from kdecode import pipeline, read_coefficients
    from kdecode.data import collate_coefficients, decode_coefficient_batch
    from kdecode.ops import exact_cpu

    # even: q15 (restored by "auto"), two sizes twice each (a model's batches of one geometry)
    sizes = [(16, 24), (40, 33), (40, 33), (1, 1), (16, 24), (23, 57), (40, 33), (17, 9), (16, 24), (64, 8)]
    files = [encode(photo(h, w, k, gray=sampling == "gray"), quality=(15, 85)[k % 2],
                    **({} if sampling == "gray" else {"subsampling": sampling})) for k, (h, w) in enumerate(sizes)]
    batch = collate_coefficients([read_coefficients(data) for data in files]).to(device)
    launches = []
    ragged = cuda.idct_islow_ragged
    monkeypatch.setattr(cuda, "idct_islow_ragged", lambda *a: launches.append(a[0].shape[0]) or ragged(*a))
    monkeypatch.setattr(pipeline, "_stacked_blocks", None)  # uploading the images' arrays would fail
    monkeypatch.setattr(exact_cpu, "why_not", lambda device=None: "the kernels' path is under test")
    per_image = sum(b.shape[1] * b.shape[2] for b in batch.blocks)
    images = decode_coefficient_batch(batch, model=None, device=device)
    assert launches == [len(files) * per_image]
    # "auto" restores the q15 files (a model: rows of the batch's blocks, one geometry at a time)
    # and decodes the q85 ones exactly, from the other rows.
    launches.clear()
    restored = decode_coefficient_batch(batch, model="auto", device=device)
    assert launches == [len(files) // 2 * per_image]
    for k, (data, image) in enumerate(zip(files, images)):
        assert image.device.type == device.type and torch.equal(image, restored[k]) == bool(k % 2)
        image = image.cpu()
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        assert np.array_equal(array, _pillow(data))
        if not k % 2:  # the model's image: what decode() gives the file
            want = kdecode.decode(data, model="auto", device=device, output="torch")
            assert (restored[k].int() - want.int()).abs().max() <= 1


@pytest.mark.gpu
def test_decode_on_cuda_is_pillow(jpeg_corpus):
    problem = _gpu_problem()
    if problem:
        pytest.skip(problem)
    import kdecode

    _check_used_kernels(torch.zeros(1, device="cuda"))
    for name, data in jpeg_corpus:
        assert np.array_equal(kdecode.decode(data, model=None, device="cuda", output="numpy"), _pillow(data)), name


@pytest.mark.gpu
def test_kernels_follow_the_current_stream():
    """Kernels run on torch's current stream: results are right without synchronizing."""
    problem = _gpu_problem()
    if problem:
        pytest.skip(problem)
    gen = torch.Generator().manual_seed(12)
    blocks = _blocks(gen, (64,), [(32, 32)])
    q = _qtables(gen, (), 1, False)
    reference = _reference(blocks_to_planes, blocks, q, exact=True)[0]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        on_gpu = [b.to("cuda", non_blocking=False) for b in blocks]
        plane = blocks_to_planes(on_gpu, q.cuda(), exact=True)[0]
        result = plane.to("cpu", non_blocking=False)
    assert torch.equal(result, reference)
