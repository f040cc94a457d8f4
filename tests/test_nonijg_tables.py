"""Files with non-IJG quantization tables (Pillow ``qtables=``): the evaluation set of the
"real tables matter" comparison, and the box constraints of D3 and DMCNN on such files, which
must keep every constrained coefficient inside its real interval. Small images, no dataset."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from kdecode import read_coefficients
from kdecode.jpeg.quality import estimate_quality, ijg_table
from kdecode.metrics import psnr
from kdecode.models.d3 import D3
from kdecode.models.dmcnn import DMCNN
from kdecode.ops import dct_blocks
from kdecode.pipeline import component_blocks
from kdecode.train.cli import main as cli_main
from kdecode.train.data import jpeg_bytes
from kdecode.train.evaluate import TABLE_KINDS, nonijg_table

from zoo_helpers import smooth_image


@pytest.mark.parametrize("quality", [5, 10, 20])
def test_tables_are_non_ijg_written_and_read_back(quality):
    ijg = ijg_table(quality)
    for kind in TABLE_KINDS:
        table = nonijg_table(kind, quality)
        assert np.array_equal(table, nonijg_table(kind, quality)) and table.shape == (8, 8)
        assert not estimate_quality(table)[1]  # no IJG quality makes this table
        coeffs = read_coefficients(jpeg_bytes(smooth_image(24, 32), quality, table))
        assert np.array_equal(component_blocks(coeffs, 0)[1].numpy(), table)
    assert (nonijg_table("ijg_edit", quality) != ijg).sum() == (6 if quality >= 10 else 5)  # one clipped at 255
    assert len(np.unique(nonijg_table("flat", quality))) == 1
    with pytest.raises(ValueError):
        nonijg_table("cameras", quality)


def _inside(coefficients, blocks, table):
    """Whether float coefficients (dequantized scale) lie in ``[(c - 1/2) q, (c + 1/2) q]``."""
    q = table.double()
    lo, hi = (blocks.double() - 0.5) * q, (blocks.double() + 0.5) * q
    x = coefficients.double()
    return ((x >= lo - 1e-3) & (x <= hi + 1e-3)).all().item()


def _d3_constrained(model, coeffs):
    """D3's stage-I coefficients after the clamp on the on-grid patches (the ones it clamps),
    ``[bh, bw, 8, 8]`` on the dequantized scale, through the decode path of a file."""
    seen = []
    hook = model.net.pixel_stage.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        model.decode(coeffs)
    hook.remove()
    blocks, _ = component_blocks(coeffs, 0)
    bh, bw = blocks.shape[:2]
    patches = dct_blocks(seen[0].reshape(2 * bh - 1, 2 * bw - 1, 8, 8)) * 255.0
    return patches[::2, ::2]


def _dmcnn_constrained(model, coeffs, monkeypatch):
    seen = []
    original = model.net.coefficients
    monkeypatch.setattr(model.net, "coefficients", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    with torch.no_grad():
        model.decode(coeffs)
    # The image's own blocks, inside the mirrored ones the network sees around it (edge_blocks).
    bh, bw = component_blocks(coeffs, 0)[0].shape[:2]
    e = model.edge_blocks
    return seen[0][0][e:e + bh, e:e + bw]


@pytest.mark.parametrize("kind", TABLE_KINDS)
@pytest.mark.parametrize("arch", ["d3", "dmcnn"])
def test_clamp_keeps_the_real_interval_on_nonijg_files(kind, arch, monkeypatch):
    """Real intervals: every constrained coefficient inside the file's own interval, even with
    weights that push far out. Assumed-IJG intervals (the comparison) leave it on these files."""
    table = nonijg_table(kind, 10)
    coeffs = read_coefficients(jpeg_bytes(smooth_image(40, 48, seed=3), 10, table))
    blocks, qtable = component_blocks(coeffs, 0)
    torch.manual_seed(0)
    model = D3(atoms=128).eval() if arch == "d3" else DMCNN(features=8).eval()
    with torch.no_grad():  # far from the decode: the clamp has work to do
        if arch == "d3":
            model.net.dct_stage.synthesis.weight.normal_(0, 1.0)
        else:
            model.net.dct.out.weight.normal_(0, 1.0)
    constrained = _d3_constrained if arch == "d3" else (lambda m, c: _dmcnn_constrained(m, c, monkeypatch))
    assert _inside(constrained(model, coeffs), blocks, qtable)
    model.intervals = "assumed"
    monkeypatch.undo()
    assert not _inside(constrained(model, coeffs), blocks, qtable)


def test_eval_with_nonijg_tables(tmp_path):
    """``kdecode eval --tables nonijg``: one entry per kind, JPEG row = Pillow's decode of the
    file written with that table."""
    folder = tmp_path / "set"
    folder.mkdir()
    y = smooth_image(40, 56, seed=1)
    Image.fromarray(y).save(folder / "a.png")
    out = tmp_path / "r.json"
    assert cli_main(["eval", "--quality", "20", "--data", str(folder), "--tables", "nonijg", "--json", str(out),
                     "-q"]) == 0
    results = json.loads(out.read_text())
    assert [r["dataset"] for r in results] == [f"set ({k} tables)" for k in TABLE_KINDS]
    for r, kind in zip(results, TABLE_KINDS):
        pillow = np.array(Image.open(io.BytesIO(jpeg_bytes(y, 20, nonijg_table(kind, 20)))))
        assert r["jpeg"]["psnr"] == pytest.approx(psnr(y, pillow), abs=1e-6)
