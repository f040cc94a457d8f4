#!/usr/bin/env bash
# The GPU half of the throughput suite in one call of the device machine (H100 / H200): the
# batch and exact-path tests (GPU test included), then benchmarks/throughput.py on CPU and CUDA,
# with the CPU/GPU overlap of decode_batch. Everything it writes lands in $OUT.
#
# Prepare once, here, in the repo root of the checkout that travels (both folders are ignored):
#   .whl/       jpeglib's wheel (/work/.library/device/README.md: pip download ... jpeglib==1.0.2)
#   .gpu_data/  mkdir -p .gpu_data && cp -r ../shared/data/BSDS500/test .gpu_data/BSDS500 \
#                 && cp -r ../shared/data/LIVE1_color .gpu_data/        (about 33 MB)
# Then call the device tool with:
#   command="bash benchmarks/gpu_suite.sh", carry=[".whl", ".gpu_data"], timeout_s=600
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

# jpeglib is not installed there: its wheel travels in .whl (no network on that machine).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "jpeglib wheel missing in .whl/"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
# The C pixel stage (CPU rows); without it the torch pipeline runs and the table says so by its speed.
python3 setup.py -q build_ext --inplace >"$OUT/build.log" 2>&1 || echo "C extension not built (see build.log)"
[ -d .gpu_data ] && export KDECODE_DATA=$PWD/.gpu_data || echo "no .gpu_data: dataset sets are skipped"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c \
  "import torch, kdecode; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); print(kdecode.backend_info())"; \
  python3 -c "import cupy; print('cupy', cupy.__version__)" 2>&1 | tail -1; } | tee "$OUT/device.txt"

timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_batch.py tests/test_exact_cpu.py 2>&1 | tail -15 | tee "$OUT/tests.log"

timeout 400 python3 benchmarks/throughput.py --device cpu cuda --repeat 3 --min-time 0.3 --model-files 8 \
  --sets bsds500-q10 bsds500-q50 bsds500-q90 live1-q10 photo3840x2160-q90 --out "$OUT" 2>&1 \
  | grep -v "decoder/s" | tee "$OUT/throughput_gpu.log"
ls -la "$OUT"
