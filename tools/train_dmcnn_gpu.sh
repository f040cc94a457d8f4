#!/usr/bin/env bash
# DMCNN weights (issue 6) on one GPU, in two calls of the device machine (each under its 10-minute
# limit): the paper's easy-to-hard recipe (Sec. 3.1: q20 on 56x56 patches, then larger patches,
# then q10 from the q20 model) and the ablation without the DCT Rectify Unit, each run measured
# by `kdecode eval` on LIVE1_gray into its card (IJG tables; non-IJG tables with real and assumed
# intervals for the q10 model), everything returned in $OUT.
#
#   1. Here (repo root of this checkout): pack code + data into an ignored folder that travels:
#        tools/train_hrcnn_gpu.sh pack /work/main/.gpu_dmcnn ../shared/data
#      (BSDS500 train+test, 8 BSD68 images, LIVE1_gray, Classic5: about 38 MB; jpeglib's wheel in
#      /work/main/.whl, as for HR-CNN).
#   2. Device tool, from /work/main, call 1 (q20, ~9 min):
#        command="bash .gpu_dmcnn/tools/train_dmcnn_gpu.sh q20 .gpu_dmcnn", carry=[".gpu_dmcnn", ".whl"]
#      $OUT: dmcnn_q20.tar.gz, dmcnn_q20_p112.tar.gz (run folders without checkpoints), summary.md.
#   3. Here: tar xzf dmcnn_q20_p112.tar.gz -C /work/main/.gpu_dmcnn/init (gives init/dmcnn_q20_p112/...)
#   4. Device tool, call 2 (q10 and the no-DRU ablation side by side, ~9 min):
#        command="bash .gpu_dmcnn/tools/train_dmcnn_gpu.sh q10 .gpu_dmcnn", carry=[".gpu_dmcnn", ".whl"]
#      $OUT: dmcnn_q10.tar.gz, dmcnn_q10_nodru.tar.gz, summary.md. Ship dmcnn_q10 and
#      dmcnn_q20_p112's dmcnn_q20 (safetensors + card: kdecode/weights/);
#      the no-DRU run's metrics go into the dmcnn_q10 card as its ablation.
#
# Settings (environment): Q20_SECONDS=240 (56x56 patches, batch 80), GROW_SECONDS=150 (112x112,
# batch 20: the same pixels per step), Q10_SECONDS=420 (both q10 runs at once, 112x112),
# DEVICE=cuda, VAL_IMAGES=8. Dry run on a CPU: DEVICE=cpu Q20_SECONDS=5 GROW_SECONDS=5
# Q10_SECONDS=5 VAL_IMAGES=1 EVAL=0 bash tools/train_dmcnn_gpu.sh q20 DIR.
set -uo pipefail

setup() {  # on the device machine, in the packed folder: jpeglib, PYTHONPATH, the C extension
  export PYTHONUNBUFFERED=1
  if ls ../.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ../.whl/*.whl
  fi
  python3 -c "import jpeglib" 2>/dev/null || [ -d /tmp/site/jpeglib ] || { echo "jpeglib wheel missing in .whl/"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  python3 setup.py -q build_ext --inplace >/tmp/build.log 2>&1 || echo "C extension not built (torch paths run)"
}

main() {
  local stage=$1 dir=$2
  OUT=$(mkdir -p "${OUT:-$dir/out}" && cd "${OUT:-$dir/out}" && pwd)
  cd "$dir" || exit 1
  setup
  local runs=/tmp/dmcnn_runs K="python3 -m kdecode.train.cli" device=${DEVICE:-cuda}
  mkdir -p "$runs"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if '$device' == 'cuda' else 'cpu')" \
    | tee "$runs/device.txt"
  local common=(--model dmcnn --data-root data --train-sets BSDS500/train,BSDS500/test --val-set BSD68
                --val-images "${VAL_IMAGES:-8}" --scales 1,0.9,0.8,0.7,0.6 --steps 10000000 --cache-dir /tmp/dmcnn_cache
                --device "$device" --checkpoint-every 2000 --val-every 2000 -q)
  local names=()
  # JPEG pairs of every training image, once (runs side by side would each make them).
  $K train --quality 10 20 --prepare-only --workers "${WORKERS:-16}" "${common[@]}" 2>&1 | tail -2
  if [ "$stage" = q20 ]; then
    $K train --quality 20 --out "$runs/dmcnn_q20" --time-budget "${Q20_SECONDS:-240}" "${common[@]}" \
      >"$runs/dmcnn_q20.log" 2>&1 &&
    $K train --quality 20 --out "$runs/dmcnn_q20_p112" --init-from "$runs/dmcnn_q20" --patch 112 --batch 20 \
      --lr 3e-4 --warmup 100 --time-budget "${GROW_SECONDS:-150}" "${common[@]}" >"$runs/dmcnn_q20_p112.log" 2>&1
    names=(dmcnn_q20 dmcnn_q20_p112)
  else
    local init
    init=$(ls init/dmcnn_q20_p112/dmcnn_q20.safetensors 2>/dev/null) || { echo "no init/dmcnn_q20_p112 (call q20 first)"; exit 1; }
    for dru in "" --no-dru; do
      local name=dmcnn_q10${dru:+_nodru}
      $K train --quality 10 --out "$runs/$name" --init-from "$init" --patch 112 --batch 20 --lr 3e-4 --warmup 100 \
        --time-budget "${Q10_SECONDS:-420}" $dru "${common[@]}" >"$runs/$name.log" 2>&1 &
      names+=("$name")
    done
    wait
  fi
  if [ "${EVAL:-1}" = 1 ]; then
    local name w q
    for name in "${names[@]}"; do
      w=$(ls "$runs/$name"/dmcnn_q*.safetensors 2>/dev/null | head -1)
      [ -n "$w" ] || { echo "$name: no weights (see $name.log)"; continue; }
      q=$(basename "$w" .safetensors); q=${q#dmcnn_q}
      { $K eval --model dmcnn --weights "$w" --quality "$q" --data data/LIVE1_gray data/Classic5 --device "$device" \
          --update-card -q
        if [ "$name" = dmcnn_q10 ]; then
          for intervals in real assumed; do
            $K eval --model dmcnn --weights "$w" --quality 10 --data data/LIVE1_gray --tables nonijg \
              --intervals $intervals --device "$device" --update-card -q
          done
        fi; } >"$runs/$name/eval.md" 2>&1 &
    done
    wait
  fi
  { echo "# DMCNN $stage on $(tail -1 "$runs/device.txt")"; echo
    for name in "${names[@]}"; do echo "## $name"; cat "$runs/$name/eval.md" 2>/dev/null; tail -3 "$runs/$name.log"; echo; done
  } | tee "$OUT/summary.md"
  for name in "${names[@]}"; do  # one archive per run (a file that comes back is at most 16 MiB)
    (cd "$runs" && tar czf "$OUT/$name.tar.gz" --exclude=checkpoint.pt --exclude='*.tmp' "$name" "$name.log")
  done
  ls -la "$OUT"
}

case "${1:-}" in
  q20|q10) main "$1" "${2:-.gpu_dmcnn}" ;;
  *) sed -n 2,27p "$0"; exit 2 ;;
esac
