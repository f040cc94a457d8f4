"""``precision="bfloat16"``: the learned layers in bf16, the image itself and the exact decode not."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

import kdecode
from kdecode import load_model, read_coefficients
from kdecode.models.pixel import build
from kdecode.pipeline import component_plane

from zoo_helpers import jpeg, smooth_image

COLOR = jpeg(smooth_image(40, 56, color=True), 20)
GRAY = jpeg(smooth_image(48, 64), 10)

# bf16 on a CPU without bf16 arithmetic warns that float32 is faster (tested below); the
# other tests here run bf16 on whatever CPU runs them.
pytestmark = pytest.mark.filterwarnings("ignore:.*no bf16 arithmetic:RuntimeWarning")


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        kdecode.decode(GRAY, model="fast_arcnn", precision="float16")
    with pytest.raises(ValueError, match="precision"):
        kdecode.decode_batch([GRAY], model=None, precision="fp8")
    with pytest.raises(ValueError, match="precision"):
        build("fast_arcnn").set_precision("half")


def test_exact_decode_ignores_precision():
    pillow = np.asarray(Image.open(io.BytesIO(COLOR)).convert("RGB"))
    for model in (None, "exact"):
        out = kdecode.decode(COLOR, model=model, output="numpy", precision="bfloat16")
        assert np.array_equal(out, pillow)


class _Recorder(torch.nn.Module):
    """A residual net of zeros that records the dtype it computes in and the input it got."""

    def forward(self, x):
        self.seen_dtype = torch.mm(x[0, 0], x[0, 0].T).dtype  # what autocast makes of a matmul
        self.seen_input = x.detach().clone()
        return torch.zeros_like(x)


@pytest.mark.parametrize("precision, dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_learned_layers_run_in_the_precision_and_the_image_stays_float32(precision, dtype):
    model = build("arcnn").set_precision(precision)
    model.net = _Recorder()
    coeffs = read_coefficients(GRAY)
    with torch.inference_mode():
        out = model.decode(coeffs, "cpu")
    assert model.net.seen_dtype == dtype
    # The net's input is the float32 float-IDCT plane, untouched by bf16 (it would lose grey
    # levels near white); with a zero residual the output is that plane rounded.
    plane = component_plane(coeffs, 0, exact=False) / 255.0
    assert model.net.seen_input.dtype == torch.float32
    e = 8 * model.edge_blocks  # the mirrored context around the image (cropped off the output)
    assert torch.equal(model.net.seen_input[0, 0, e:e + plane.shape[0], e:e + plane.shape[1]], plane)
    assert torch.equal(out[0], (plane * 255).round().clamp(0, 255).to(torch.uint8))


@pytest.mark.parametrize("name", ["fast_arcnn", "hrcnn", "dmcnn"])
def test_bfloat16_stays_close_to_float32(name):
    """Shipped weights: bf16 changes some samples by a grey level or two, never the picture."""
    fp32 = kdecode.decode(GRAY, model=name, output="numpy").astype(int)
    bf16 = kdecode.decode(GRAY, model=name, output="numpy", precision="bfloat16").astype(int)
    diff = np.abs(fp32 - bf16)
    assert diff.any(), "bf16 changed nothing: the precision was not applied"
    assert diff.max() <= 2 and diff.mean() < 0.3  # measured: at most 1, mean 0.07..0.17


def test_batch_and_single_agree_in_bfloat16():
    files = [GRAY, COLOR, GRAY]
    singles = [kdecode.decode(f, model="fast_arcnn", output="numpy", precision="bfloat16") for f in files]
    batch = kdecode.decode_batch(files, model="fast_arcnn", output="numpy", precision="bfloat16", workers=2)
    for a, b in zip(singles, batch):
        assert np.array_equal(a, b)


def test_load_model_sets_precision_and_models_are_cached_per_precision():
    assert load_model("fast_arcnn", quality=10, precision="bfloat16").precision == "bfloat16"
    assert load_model("fast_arcnn", quality=10).precision == "float32"
    from kdecode.decode import decoder_for
    from kdecode.models.base import RunOptions

    coeffs = read_coefficients(GRAY)
    a = decoder_for(coeffs, "fast_arcnn", None, RunOptions("bfloat16"))
    b = decoder_for(coeffs, "fast_arcnn", None, RunOptions("float32"))
    assert a is not b and a.precision == "bfloat16" and b.precision == "float32"


@pytest.mark.parametrize("native", [True, False, None])
def test_bfloat16_on_a_cpu_without_bf16_arithmetic_warns(monkeypatch, native):
    """Where the CPU would emulate bf16 (no AVX512-BF16 or AMX: several times slower than
    float32), asking for it warns and still decodes; where it has them, or torch cannot tell, not."""
    import warnings

    import kdecode.models.base as base

    monkeypatch.setattr(base, "native_bf16", lambda device_type: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = kdecode.decode(GRAY, model="fast_arcnn", output="numpy", precision="bfloat16")
    emulated = [w for w in caught if issubclass(w.category, RuntimeWarning) and "no bf16 arithmetic" in str(w.message)]
    assert out.shape == (48, 64)
    assert bool(emulated) == (native is False)
    assert all("fast_arcnn" in str(w.message) and "float32" in str(w.message) for w in emulated)
