#!/usr/bin/env bash
# HR-CNN weights for q 10/20/30/40/50 (the paper's 10/30/50 plus 20/40) on one GPU, in one call of
# the device machine: every quality trained side by side by `kdecode train --model hrcnn`, each
# measured by `kdecode eval` on LIVE1_gray and Classic5 into its card, everything returned in $OUT.
#
# Two steps.
#   1. Here (a dev machine, repo root of this checkout): pack the code and the data the run needs
#      into an ignored folder of the checkout that travels (/work/main), e.g.
#        tools/train_hrcnn_gpu.sh pack /work/main/.gpu_hrcnn ../shared/data
#      (about 38 MB: BSDS500 train+test, 8 BSD68 images for validation, LIVE1_gray, Classic5).
#      jpeglib's wheel must be in /work/main/.whl (the zoo put it there; 22 MB).
#   2. The device tool, from /work/main:
#        command="bash .gpu_hrcnn/tools/train_hrcnn_gpu.sh train .gpu_hrcnn", carry=[".gpu_hrcnn", ".whl"],
#        timeout_s=600
#
# Settings (environment, with defaults):
#   QUALITIES="10 20 30 40 50"  INPUT=quantized (the paper) | dequantized
#   START=idct (begin at the float JPEG decode) | random
#   TRAIN_SECONDS=400           training time of each run (all run at once, sharing the GPU)
#   COMPARE=0                   1: train q10 with both inputs instead, to pick the input (issue 7)
#   BATCH/PATCH/LR              override the recipe (kdecode/train/cli.py RECIPES["hrcnn"])
#   DEVICE=cuda, EVAL_DATA="data/LIVE1_gray data/Classic5", VAL_IMAGES=8, SCALES=1,0.9,0.8,0.7,0.6
#   (a dry run of the script on a CPU: DEVICE=cpu QUALITIES=10 TRAIN_SECONDS=10 BATCH=2 PATCH=32
#    VAL_IMAGES=1 SCALES=1 EVAL_DATA=data/Classic5)
# A second call can continue from the first one's weights: unpack hrcnn_results.tar.gz's
# hrcnn_q*.safetensors into .gpu_hrcnn/init/ (a run starts from init/hrcnn_qQ.safetensors when
# it exists, at half the learning rate).
#
# $OUT gets (at most 8 files come back): hrcnn_results.tar.gz (weights, cards with measured
# metrics, logs, eval tables) and summary.md.
#
# Throughput (the issue's second figure), a separate call once weights exist:
#   tools/train_hrcnn_gpu.sh pack /work/main/.gpu_hrcnn_bench ../shared/data bench   (LIVE1_color, ~20 MB)
#   tar xzf hrcnn_results.tar.gz and copy hrcnn_q10/hrcnn_q10.{safetensors,json} to .gpu_hrcnn_bench/init/
#   command="bash .gpu_hrcnn_bench/tools/train_hrcnn_gpu.sh bench .gpu_hrcnn_bench", carry=[".gpu_hrcnn_bench", ".whl"]
#   (benchmarks/throughput.py on CPU and CUDA, live1-q10: HR-CNN batch 1 and 64 as ratios to Pillow)
set -uo pipefail

pack() {
  local dest=$1 data=$2 what=$3 here
  here=$(cd "$(dirname "$0")/.." && pwd)
  rm -rf "$dest" && mkdir -p "$dest/data"
  cp -r "$here/kdecode" "$here/tools" "$here/csrc" "$here/benchmarks" "$here/setup.py" "$here/pyproject.toml" "$dest/"
  find "$dest" -name __pycache__ -prune -exec rm -rf {} + ; find "$dest" -name "*.so" -delete
  rm -rf "$dest/benchmarks/results"
  if [ "$what" = bench ]; then
    cp -r "$data/LIVE1_color" "$dest/data/"
  else
    mkdir -p "$dest/data/BSDS500" "$dest/data/BSD68"
    cp -r "$data/BSDS500/train" "$data/BSDS500/test" "$dest/data/BSDS500/"
    ls "$data"/BSD68/*.png | head -8 | xargs -I{} cp {} "$dest/data/BSD68/"
    cp -r "$data/LIVE1_gray" "$data/Classic5" "$dest/data/"
  fi
  du -sh "$dest"
}

setup() {  # on the device machine, in the packed folder: jpeglib, PYTHONPATH, the C extension
  export PYTHONUNBUFFERED=1
  # jpeglib is not installed on the GPU machine and there is no network: its wheel travels.
  if ls ../.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ../.whl/*.whl
  fi
  python3 -c "import jpeglib" 2>/dev/null || [ -d /tmp/site/jpeglib ] || { echo "jpeglib wheel missing in .whl/"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  python3 setup.py -q build_ext --inplace >/tmp/build.log 2>&1 || echo "C extension not built (torch paths run)"
}

bench() {  # the issue's throughput figure: HR-CNN decode+restore of LIVE1 (batch 64) vs Pillow
  local dir=$1
  OUT=$(mkdir -p "${OUT:-$dir/out}" && cd "${OUT:-$dir/out}" && pwd)
  cd "$dir" || exit 1
  setup
  ls init/hrcnn_q*.json >/dev/null 2>&1 || { echo "no weights + cards in $dir/init"; exit 1; }
  mkdir -p kdecode/weights && cp init/hrcnn_q*.safetensors init/hrcnn_q*.json kdecode/weights/
  KDECODE_DATA=$PWD/data timeout 500 python3 benchmarks/throughput.py --device ${BENCH_DEVICES:-cpu cuda} --repeat "${REPEAT:-3}" --min-time 0.3 \
    --model-files 4 --sets live1-q10 --out "$OUT" 2>&1 | grep -v "decoder/s"
  ls -la "$OUT"
}

train() {
  local dir=$1
  OUT=$(mkdir -p "${OUT:-$dir/out}" && cd "${OUT:-$dir/out}" && pwd)
  cd "$dir" || exit 1
  setup
  local runs=/tmp/hrcnn_runs K="python3 -m kdecode.train.cli" jobs=() q
  mkdir -p "$runs"
  local device=${DEVICE:-cuda}
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if '$device' == 'cuda' else 'cpu')"
  } | tee "$runs/device.txt"
  local common=(--data-root data --train-sets BSDS500/train,BSDS500/test --val-set BSD68 --val-images "${VAL_IMAGES:-8}"
                --scales "${SCALES:-1,0.9,0.8,0.7,0.6}" --steps 10000000 --cache-dir /tmp/hrcnn_cache --device $device
                --checkpoint-every 2000 --val-every 2000 -q)
  [ -n "${BATCH:-}" ] && common+=(--batch "$BATCH")
  [ -n "${PATCH:-}" ] && common+=(--patch "$PATCH")
  local quals=${QUALITIES:-10 20 30 40 50}
  [ "${COMPARE:-0}" = 1 ] && quals=10
  # JPEG pairs of every training image at every quality, once, shared by the runs.
  $K train --model hrcnn --quality $(echo $quals | tr ' ' ,) --prepare-only --workers 16 "${common[@]}" 2>&1 | tail -2

  start() {  # quality, input, run name
    local lr=(--lr "${LR:-2e-4}") init=()
    if [ -f "init/hrcnn_q$1.safetensors" ]; then
      init=(--init-from "init/hrcnn_q$1.safetensors"); lr=(--lr "$(python3 -c "print(${LR:-2e-4} / 2)")" --warmup 100)
    fi
    $K train --model hrcnn --quality "$1" --input "$2" --out "$runs/$3" --time-budget "${TRAIN_SECONDS:-400}" --start "${START:-idct}" \
      "${lr[@]}" "${init[@]}" "${common[@]}" >"$runs/$3.log" 2>&1
  }
  local names=()
  if [ "${COMPARE:-0}" = 1 ]; then
    for inp in quantized dequantized; do start 10 $inp "hrcnn_q10_$inp" & jobs+=($!); names+=("hrcnn_q10_$inp"); done
  else
    for q in $quals; do start "$q" "${INPUT:-quantized}" "hrcnn_q$q" & jobs+=($!); names+=("hrcnn_q$q"); done
  fi
  wait "${jobs[@]}"

  # Measure each run's weights on the papers' test sets into its card (GPU decode, CPU metrics).
  local name w
  for name in "${names[@]}"; do
    w=$(ls "$runs/$name"/hrcnn_q*.safetensors 2>/dev/null | head -1)
    [ -n "$w" ] || { echo "$name: no weights (see $name.log)"; continue; }
    q=$(basename "$w" .safetensors); q=${q#hrcnn_q}
    $K eval --model hrcnn --weights "$w" --quality "$q" --data ${EVAL_DATA:-data/LIVE1_gray data/Classic5} --device $device \
      --update-card --json "$runs/$name/eval.json" -q >"$runs/$name/eval.md" 2>&1 &
  done
  wait
  { echo "# HR-CNN on $(tail -1 "$runs/device.txt")"; echo
    for name in "${names[@]}"; do echo "## $name"; cat "$runs/$name/eval.md" 2>/dev/null; tail -3 "$runs/$name.log"; echo; done
  } | tee "$OUT/summary.md"
  (cd "$runs" && tar czf "$OUT/hrcnn_results.tar.gz" --exclude=checkpoint.pt --exclude='*.tmp' .)
  ls -la "$OUT"
}

case "${1:-}" in
  pack) pack "${2:?destination folder}" "${3:-../shared/data}" "${4:-train}" ;;
  train) train "${2:-.gpu_hrcnn}" ;;
  bench) bench "${2:-.gpu_hrcnn_bench}" ;;
  *) sed -n 2,36p "$0"; exit 2 ;;
esac
