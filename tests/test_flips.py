"""The flip ensemble (``decode(..., flips=N)``): mirrored coefficient grids, outputs averaged."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import kdecode
from kdecode import load_model, read_coefficients
from kdecode.cli import main
from kdecode.metrics import psnr
from kdecode.ops import blocks_to_planes, flip_blocks
from kdecode.pipeline import component_blocks

from zoo_helpers import jpeg, smooth_image


def test_flip_blocks_is_the_mirrored_image():
    """The float IDCT of the flipped grid is the mirrored plane of the grid (padding included),
    and flipping twice gives the grid back, integers as they were."""
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(-40, 40, (2, 3, 5, 8, 8), generator=gen, dtype=torch.int16)
    qtable = torch.randint(1, 30, (8, 8), generator=gen).float()
    plane = blocks_to_planes(blocks, qtable, exact=False)
    for rows, cols in ((False, True), (True, False), (True, True)):
        flipped = flip_blocks(blocks, rows, cols)
        assert flipped.dtype == torch.int16
        dims = [d for d, f in ((-2, rows), (-1, cols)) if f]
        torch.testing.assert_close(blocks_to_planes(flipped, qtable, exact=False), torch.flip(plane, dims),
                                   atol=1e-3, rtol=0)
        assert torch.equal(flip_blocks(flipped, rows, cols), blocks)


@pytest.mark.parametrize("name", ["fast_arcnn", "dmcnn"])
def test_flip_ensemble_is_mirror_equivariant(name):
    """With all four flips, restoring the mirrored grid gives the mirrored restoration (up to the
    order of the average's sum); a single pass of a trained model is not equivariant."""
    model = load_model(name, quality=10)
    y = smooth_image(48, 64, seed=3)
    blocks, qtable = component_blocks(read_coefficients(jpeg(y, 10)), 0)
    blocks, qtables = blocks[None], qtable[None]
    mirrored = flip_blocks(blocks, cols=True)
    with torch.inference_mode():
        single = (model.restore_blocks(blocks, qtables, (48, 64)), model.restore_blocks(mirrored, qtables, (48, 64)))
        model.set_flips(4)
        four = (model.restore_blocks(blocks, qtables, (48, 64)), model.restore_blocks(mirrored, qtables, (48, 64)))
    assert not torch.equal(torch.flip(single[0], [-1]), single[1])
    diff = (torch.flip(four[0], [-1]).int() - four[1].int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01


@pytest.mark.parametrize("name,edge_blocks", [("fast_arcnn", None), ("fast_arcnn", 0), ("dmcnn", None), ("d3", None)])
def test_flips_restore_better_with_one_box(name, edge_blocks, monkeypatch):
    """On an image whose size is not a multiple of 8 (the mirrored grids put the encoder's
    padding at the top and left), both ensembles measure closer to the original than one pass
    (2 and 4 flips are within noise of each other on an image this small); the box clamps the
    average, once, over the whole padded grid."""
    import kdecode.models.base as base

    boxed = []

    def clamp_planes(plane, *args):
        boxed.append(tuple(plane.shape))
        return base_clamp(plane, *args)

    base_clamp = base.clamp_planes
    monkeypatch.setattr(base, "clamp_planes", clamp_planes)
    y = smooth_image(61, 93, seed=5)
    coeffs = read_coefficients(jpeg(y, 10))
    model = load_model(name, quality=10)
    if edge_blocks is not None:
        model.edge_blocks = edge_blocks  # the pixel path that restores the image's samples alone
    scores = []
    for flips in (1, 2, 4):
        with torch.inference_mode():
            scores.append(psnr(y, model.set_flips(flips).decode(coeffs)[0].numpy()))
    assert boxed == [(1, 64, 96)] * 3
    assert scores[0] < min(scores[1:]), scores


def test_flips_through_decode_and_validation():
    data = jpeg(smooth_image(40, 56, seed=2), 10)
    a = kdecode.decode(data, model="fast_arcnn", output="numpy", flips=4)
    model = load_model("fast_arcnn", quality=10, flips=4)
    with torch.inference_mode():
        b = model.decode(read_coefficients(data))[0].numpy()
    assert model.flips == 4 and np.array_equal(a, b)
    assert np.array_equal(kdecode.decode_batch([data], model="fast_arcnn", output="numpy", flips=4, workers=1)[0], a)
    # the exact decode ignores it: still Pillow's pixels
    assert np.array_equal(kdecode.decode(data, model=None, output="numpy", flips=4),
                          kdecode.decode(data, model=None, output="numpy"))
    for bad in (0, 3, 8):
        with pytest.raises(ValueError, match="flips"):
            kdecode.decode(data, model="fast_arcnn", flips=bad)
    with pytest.raises(ValueError, match="flips"):
        load_model("fast_arcnn", quality=10).set_flips(3)


def test_restore_and_eval_take_flips(tmp_path):
    data = jpeg(smooth_image(40, 56, seed=4), 10)
    (tmp_path / "a.jpg").write_bytes(data)
    assert main(["restore", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out"), "--model", "fast_arcnn",
                 "--flips", "4", "-q"]) == 0
    want = kdecode.decode(data, model="fast_arcnn", output="numpy", flips=4)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), want)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(smooth_image(40, 56, seed=6)).save(folder / "b.png")
    assert main(["eval", "--model", "fast_arcnn", "--quality", "10", "--data", str(folder), "--flips", "2", "-q",
                 "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())[0]
    assert result["dataset"] == "images (flips 2)"
