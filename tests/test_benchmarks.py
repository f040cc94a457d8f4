"""The benchmark suite is a product (issue 8): `kdecode bench` runs end to end on a small
generated set and writes its table (every row a ratio to Pillow's decode in the same run) and
plot. What it measures is not checked here (timings are not asserted); that it runs and
reports what it claims to is."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from kdecode.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def test_bench_writes_a_table_of_ratios_and_a_plot(tmp_path, capsys):
    status = cli_main(["bench", "--sets", "photo96x64-q50", "--device", "cpu", "--models", "fast_arcnn",
                       "--repeat", "1", "--min-time", "0", "--model-files", "1", "--out", str(tmp_path),
                       "--name", "smoke"])
    assert status == 0
    table = (tmp_path / "smoke.md").read_text()
    assert "Machine:" in table and "(partial" not in table
    rows = [r for r in table.splitlines() if r.startswith("| photo96x64-q50")]
    labels = [r.split("|")[3].strip() for r in rows]
    assert labels[0].startswith("Pillow"), labels  # the anchor comes first
    for wanted in ("read_coefficients", "decode(model=None", "decode_batch(model=None", "fast_arcnn"):
        assert any(wanted in label for label in labels), (wanted, labels)
    for row in rows:
        ratio = row.split("|")[7].strip()
        assert re.fullmatch(r"[0-9.]+x", ratio), row
    assert rows[0].split("|")[7].strip() == "1.00x"
    if importlib.util.find_spec("matplotlib") is None:
        return  # the plot needs matplotlib (the "plot" and "test" extras); without it only the table is written
    assert (tmp_path / "smoke.png").stat().st_size > 1000


def test_train_step_benchmark_reports_bf16_against_float32(tmp_path):
    """benchmarks/train_step.py: one row a model, its float32 step the anchor (a ratio column)."""
    spec = importlib.util.spec_from_file_location("train_step", ROOT / "benchmarks" / "train_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "steps.md"
    assert bench.main(["--models", "fast_arcnn", "d3", "--batch", "1", "--patch", "16", "--steps", "1",
                       "--rounds", "1", "--output", str(out)]) == 0
    rows = [r for r in out.read_text().splitlines() if r.startswith("| ") and not r.startswith("| model")]
    assert [r.split("|")[1].strip() for r in rows] == ["fast_arcnn", "d3"]
    for row in rows:
        assert re.fullmatch(r"[0-9.]+x", row.split("|")[6].strip()), row


def test_flips_benchmark_reports_ratios_to_one_pass(tmp_path):
    """benchmarks/flips.py: one row a model, flips=2 and 4 as ratios to its one-pass time."""
    spec = importlib.util.spec_from_file_location("flips_bench", ROOT / "benchmarks" / "flips.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "flips.md"
    assert bench.main(["--models", "fast_arcnn", "--repeats", "1", "--out", str(out)]) == 0
    rows = [r for r in out.read_text().splitlines() if r.startswith("| fast_arcnn")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert float(cells[1]) > 0
    for ratio in cells[2:]:
        assert re.fullmatch(r"[0-9.]+x", ratio), rows[0]
