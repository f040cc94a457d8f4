#!/usr/bin/env bash
# Everything the kernels need a GPU for, in one go (device time is scarce): the GPU kernel tests
# (the host-built ones and the nvcc compile checks run on any machine), the benchmark, and a
# compute-sanitizer memcheck pass over a few kernel tests. Logs and JSON go to $OUT.
#   OUT=gpu_logs bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-gpu_logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, cupy; print('torch', torch.__version__, 'cupy', cupy.__version__, torch.cuda.get_device_name())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_kernels.py -k "not host and not nvcc" 2>&1 | tee "$OUT/tests.log" | tail -n 30
python3 benchmarks/kernels.py --json "$OUT/kernels.json" 2>&1 | tee "$OUT/bench.log" | tail -n 12
timeout 90 compute-sanitizer --tool memcheck --print-limit 20 python3 -m pytest -q -p no:cacheprovider \
    tests/test_kernels.py -k "cuda and (islow_is_bit or upsample_color_exact or clamp_and or forward_dct_quantized)" \
    > "$OUT/memcheck.log" 2>&1
echo "memcheck exit $?"; grep -E "ERROR SUMMARY|passed|failed" "$OUT/memcheck.log" | tail -n 3
