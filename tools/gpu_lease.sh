#!/usr/bin/env bash
# One lease of the GPU machine (30 minutes of device time, at most 10 minutes a call) spent as a
# whole: the GPU tests, then every model that needs the GPU trained side by side in the
# background (HR-CNN q10..50 with both inputs at q10, DMCNN q20 -> q10 with the no-DRU
# ablation, D3 q10/q20 continued), each measured by `kdecode eval` into its card, then the GPU
# throughput suite on the quiet GPU with the new weights. Three calls of the device tool, each
# started at once after the previous returns (a machine idle for 30 s is given back):
#
#   Here, once (repo root): pack the data and libjpeg for the native reader (~47 MB, ignored):
#     tools/gpu_lease.sh pack ../shared/data
#   call 1: command="bash tools/gpu_lease.sh call1", carry=[".gpu_lease"]          (~9.5 min)
#           setup, the throughput figures on the quiet machine (LIVE1 and BSDS500 q50: the exact
#           decode, Fast AR-CNN, HR-CNN, float32 and bf16), then a profile of decode_batch while
#           the training pairs are made, then the training starts in the background (setsid: it
#           outlives the call) while the GPU tests and bf16's quality cost run; progress until
#           the call ends.
#   call 2: command="bash tools/gpu_lease.sh watch 570"                             (~9.5 min)
#           progress; $OUT/snapshot.tar.gz holds the latest weights of every run (insurance).
#   call 3: command="bash tools/gpu_lease.sh finish"                                (rest)
#           waits for the runs and their evaluations, returns them ($OUT/*.tar.gz, one family
#           a file: a file that comes back is at most 16 MiB), installs the new weights in the
#           device's checkout and runs benchmarks/throughput.py on CUDA.
#
# The 15-minute lease (device time since 2026-12: the machine's start, every call and every idle
# wait together): one call of the device tool, no second call to wait for.
#   lease15: command="bash tools/gpu_lease.sh lease15", carry=[".gpu_lease"], timeout_s=600
#           (~9.5 min; with the start about 11 of the 15): setup, the issues' throughput figures on
#           the quiet machine (QUICK=short: LIVE1 q10 and BSDS500 q50, the exact decode, Fast
#           AR-CNN and HR-CNN, float32 and bf16, with the CPU/GPU overlap), then the runs of JOBS
#           in the background until DEADLINE (CALL_SECONDS=560 minus EVAL_MARGIN=110 s for their
#           evaluations and the packing) while the GPU tests run, then collect: the runs come back
#           as finish() returns them. For what is short now (session 49: the GPU throughput figures
#           of issues 7 and 8, then D3-256 q10/q20): JOBS="d3" EMA=0.999 (the CPU stages' recipe,
#           continued from the shipped weights; docs/training_log.md).
# Settings (environment): TRAIN_SECONDS=1020 (wall time from the start of training to its end,
# shared by all runs), JOBS="hrcnn hrcnn_input dmcnn d3" (what runs: HR-CNN q10..50; HR-CNN q10
# on dequantized input; "hrcnn_input_pair": q10 on both inputs from the IDCT start, the
# input ablation for the ReLU network; DMCNN q20 -> q10 + no-DRU from scratch; D3-256 q10/q20
# continued; "dmcnn_more": the shipped DMCNN q10/q20 continued), HRCNN_ACT=none|relu, HRCNN_LR=5e-4,
# DMCNN_LR=3e-4, DMCNN_BATCH=80, DMCNN_AUGMENT=flips+transposed (dmcnn_more), D3_BATCH=32, D3_LR=5e-5, D3_AUGMENT=flips+transposed+shifted (d3), EMA (unset; e.g. 0.999: every run's --ema), HRCNN_FROM=kdecode/weights (HR-CNN continues the shipped weights of its
# quality with the same activation, else starts from the shipped q10 ones; unset: the IDCT
# start), TRAIN_SETS=BSDS500/train,BSDS500/test,Train400 (Train400's full-range luma keeps the
# runs from learning LIVE1_gray's [16, 235] range: docs/training_log.md, session 21),
# KD=/tmp/kd (work folder on the device), DEVICE=cuda.
# Session 3 ran the defaults (JOBS as above, HRCNN_ACT=none, TRAIN_SECONDS=1000): calls of 564,
# 570 and 182 s plus the machine's start: 1,362 s of the 1,800; the three calls must follow each
# other within the 30 s a machine stays warm.
# Dry run on a CPU: KD=/tmp/kd_dry DEVICE=cpu TRAIN_SECONDS=60 HRCNN_QUALITIES=10 DRY=1 SKIP_TESTS=1
#   EVAL_SETS=Classic5 NONIJG_SET=Classic5 CALL1_SECONDS=200 bash tools/gpu_lease.sh call1   (then finish)
set -uo pipefail
cd "$(dirname "$0")/.."
KD=${KD:-/tmp/kd}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$KD/out}
K="python3 -m kdecode.train.cli"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD LD_LIBRARY_PATH=$KD/native/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p "$KD" "$OUT"

pack() {  # here: the datasets the lease needs and libjpeg-turbo for the native reader
  local data=$1 dest=.gpu_lease
  rm -rf $dest && mkdir -p $dest/data/BSDS500 $dest/data/BSD68 $dest/native/include $dest/native/lib
  cp -r "$data/BSDS500/train" "$data/BSDS500/test" $dest/data/BSDS500/
  ls "$data"/BSD68/*.png | head -8 | xargs -I{} cp {} $dest/data/BSD68/
  cp -r "$data/LIVE1_gray" "$data/Classic5" "$data/Train400" $dest/data/
  # The LIVE1 benchmark set as its q10 JPEGs (0.5 MB) instead of LIVE1_color's PNGs (18 MB).
  KDECODE_DATA="$data" python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; \
from common import write_sets; write_sets(['live1-q10'], Path('$dest/data'))"
  # The device machine has no libjpeg headers: the native reader builds against these.
  cp /usr/include/jpeglib.h /usr/include/jerror.h /usr/include/jmorecfg.h $dest/native/include/
  cp "$(dpkg -L libjpeg62-turbo-dev 2>/dev/null | grep 'jconfig.h$' | head -1 || echo /usr/include/x86_64-linux-gnu/jconfig.h)" $dest/native/include/
  cp -L /usr/lib/x86_64-linux-gnu/libjpeg.so.62 $dest/native/lib/ && ln -sf libjpeg.so.62 $dest/native/lib/libjpeg.so
  du -sh $dest
}

setup() {  # device: data and libraries into $KD (kept while the machine is held), C extensions
  [ -d .gpu_lease ] && { rm -rf "$KD/data" "$KD/native"; cp -r .gpu_lease/data .gpu_lease/native "$KD/"; }
  CFLAGS="-I$KD/native/include" LDFLAGS="-L$KD/native/lib" python3 setup.py -q build_ext --inplace >"$KD/build.log" 2>&1 \
    || echo "C extensions not built (see $KD/build.log)"
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    python3 -c "import torch, kdecode; print('torch', torch.__version__, kdecode.backend_info())"; } | tee "$KD/device.txt"
}

quick() {  # on the quiet machine: the throughput figures, then (while the training pairs are
  # made) a profile of decode_batch on CUDA; the training starts when this returns
  if [ "$DEVICE" = cuda ]; then
    # LIVE1 first, with the two models whose GPU figures the issues name (HR-CNN >= 1.0x Pillow at
    # batch 64, issue 7; the fastest model, issue 8), before anything else uses the GPU or the
    # CPUs (in session 3 this ran beside the training pairs being made, and both sides slowed).
    # --bf16: each also with precision="bfloat16" (the learned layers on tensor cores); then LIVE1
    # again with cuDNN's autotuning (torch.backends.cudnn.benchmark: HR-CNN's 11x11 and 7x7
    # convolutions on fixed batch shapes). finish() runs the full suite without it.
    KDECODE_DATA=$KD/data timeout 200 python3 benchmarks/throughput.py --device cuda --sets live1-q10 bsds500-q50 \
      --limit 200 --min-files 64 --models fast_arcnn hrcnn --bf16 --repeat 2 --min-time 0.2 --out "$OUT" --name quick 2>&1 \
      | tail -32
    [ "${QUICK:-}" = short ] && { touch "$KD/benched"; return 0; }  # lease15: the figures, no cuDNN autotuning or profile
    KDECODE_DATA=$KD/data timeout 100 python3 benchmarks/throughput.py --device cuda --sets live1-q10 --min-files 64 \
      --models fast_arcnn hrcnn --bf16 --cudnn-benchmark --repeat 2 --min-time 0.2 --out "$OUT" --name quick_cudnn_benchmark \
      2>&1 | tail -16
  fi
  touch "$KD/benched"  # trainall makes the training pairs from here on
  [ "$DEVICE" = cuda ] || return 0
  KDECODE_DATA=$KD/data timeout 90 python3 - <<'EOF' 2>&1 | tee "$OUT/profile.txt" | head -40
import sys, torch, kdecode
from torch.profiler import ProfilerActivity, profile
sys.path.insert(0, "benchmarks")
from common import file_sets
sets = file_sets(["live1-q10", "bsds500-q50"])
for name, files in (("live1-q10", (sets["live1-q10"] * 3)[:64]), ("bsds500-q50", sets["bsds500-q50"][:192])):
    for _ in range(2):
        kdecode.decode_batch(files, model=None, device="cuda", output="torch", batch_size=64); torch.cuda.synchronize()
    # What the CPU threads and the GPU spend on decode_batch(model=None): kernels, copies
    # (LIVE1: 69 MB of coefficients for 64 files), pinned staging, Python ops.
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        kdecode.decode_batch(files, model=None, device="cuda", output="torch", batch_size=64); torch.cuda.synchronize()
    print(f"== {name}, {len(files)} files")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=10))
EOF
}

checks() {  # beside the training (nothing here is a timing): the GPU tests, and what
  # precision="bfloat16" costs in quality on the GPU's own bf16 arithmetic (LIVE1_gray, the
  # shipped weights; the float32 figures are in their cards)
  [ -n "${SKIP_TESTS:-}" ] || timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_batch.py \
    tests/test_hrcnn.py tests/test_dmcnn.py tests/test_d3.py tests/test_exact_decode.py tests/test_ops.py \
    tests/test_precision.py 2>&1 | tail -15 | tee "$OUT/tests.log"
  [ "$DEVICE" = cuda ] || return 0
  for mq in fast_arcnn:10 hrcnn:10 hrcnn:30 hrcnn:50 dmcnn:10; do
    timeout 90 $K eval --model ${mq%:*} --quality ${mq#*:} --data "$KD/data/LIVE1_gray" --device cuda --precision bfloat16 -q \
      2>&1 | tail -1
  done | tee "$OUT/precision_bf16.md"
}

run_eval() {  # run folder, model, quality[, nonijg]: the run's weights measured into its card
  local dir=$1 model=$2 q=$3 w
  w=$(ls "$dir"/*.safetensors 2>/dev/null | head -1)
  [ -n "$w" ] || { echo "$dir: no weights" >"$dir/eval.md"; return; }
  { $K eval --model "$model" --weights "$w" --quality "$q" --data $(printf "$KD/data/%s " ${EVAL_SETS:-LIVE1_gray Classic5}) \
      --device "$DEVICE" --update-card -q
    if [ "${4:-}" = nonijg ]; then
      for intervals in real assumed; do
        $K eval --model "$model" --weights "$w" --quality "$q" --data "$KD/data/${NONIJG_SET:-LIVE1_gray}" --tables nonijg \
          --intervals $intervals --device "$DEVICE" --update-card -q
      done
    fi
    # With EMA: the last step's weights too (not into the card), to see what the average brings.
    local last=$dir/last_step/$(basename "$w")
    [ -f "$last" ] && $K eval --model "$model" --weights "$last" --quality "$q" \
      --data $(printf "$KD/data/%s " ${EVAL_SETS:-LIVE1_gray Classic5}) --device "$DEVICE" -q; } >"$dir/eval.md" 2>&1
}

hrcnn_start() {  # quality input -> "--init-from W" with HRCNN_FROM=DIR: DIR's weights of that quality
  # when their card has the same activation and input, else DIR's q10 ones (the loop rescales them
  # to the quality's table), else nothing (the IDCT start)
  [ -n "${HRCNN_FROM:-}" ] || return 0
  python3 - "$HRCNN_FROM" "$1" "$2" "${HRCNN_ACT:-none}" <<'PY'
import json, sys
from pathlib import Path
folder, quality, input_, act = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
for q in (quality, "10"):
    card = folder / f"hrcnn_q{q}.json"
    kw = json.loads(card.read_text())["arch_kwargs"] if card.is_file() else {}
    if kw and kw.get("activation", "none") == act and kw.get("input", "quantized") == input_:
        print("--init-from", card.with_suffix(".safetensors"))
        break
PY
}

left() {  # seconds of training left, minus a margin (at least 30: a budget of 0 would mean none)
  local s=$(( END - $(date +%s) - ${1:-0} )); echo $(( s < 30 ? 30 : s ))
}

trainall() {  # background (setsid): every run, with its evaluation, ending by $END
  local R=$KD/runs q
  export OMP_NUM_THREADS=2  # ten processes share 16 cores
  mkdir -p "$R"
  local common=(--data-root "$KD/data" --train-sets "${TRAIN_SETS:-BSDS500/train,BSDS500/test,Train400}" --val-set BSD68 --val-images 8
                --scales "${SCALES:-1,0.9,0.8,0.7,0.6}" --steps 10000000 --cache-dir "$KD/cache" --device "$DEVICE"
                --checkpoint-every 1000 --val-every 2000 -q)
  [ -n "${EMA:-}" ] && common+=(--ema "$EMA")  # the runs ship a moving average of their weights
  local hq=${HRCNN_QUALITIES:-10 20 30 40 50} jobs=" ${JOBS:-hrcnn hrcnn_input dmcnn d3} "
  local d3_augment=${D3_AUGMENT:-flips+transposed+shifted}
  while [ ! -f "$KD/benched" ]; do sleep 2; done  # the throughput figures are taken on the quiet machine
  # JPEG pairs of every training image at every quality, made once, shared by all runs.
  $K train --model hrcnn --quality "$(echo $hq 10 20 | tr ' ' '\n' | sort -nu | paste -sd,)" --prepare-only --workers 12 "${common[@]}" 2>&1 | tail -2
  # D3 trains on files also transposed and grid-shifted: its pairs too, with every core, before the clock starts
  [[ $jobs == *" d3 "* ]] && $K train --model d3 --quality 10,20 \
    --augment "$d3_augment" --prepare-only --workers 12 "${common[@]}" 2>&1 | tail -2
  echo "pairs ready $(date +%T)"
  while [ ! -f "$KD/go" ]; do sleep 2; done  # the quick phase owns the GPU until then
  END=${DEADLINE:-$(( $(date +%s) + ${TRAIN_SECONDS:-1020} ))}  # lease15 sets DEADLINE (the pairs' making counted in)
  echo "training from $(date +%T) until $(date -d @$END +%T)"
  local dry=()
  [ -n "${DRY:-}" ] && dry=(--batch 2 --patch 32 --val-images 1)

  hrcnn() {  # quality input name
    $K train --model hrcnn --quality "$1" --input "$2" --start idct --lr "${HRCNN_LR:-5e-4}" --warmup 300 \
      --hrcnn-activation "${HRCNN_ACT:-none}" $(hrcnn_start "$1" "$2") \
      --out "$R/$3" --time-budget "$(left 40)" "${common[@]}" "${dry[@]}" >"$R/$3.log" 2>&1
    run_eval "$R/$3" hrcnn "$1"
  }
  if [[ $jobs == *" hrcnn "* ]]; then for q in $hq; do hrcnn "$q" quantized "hrcnn_q$q" & done; fi
  # the input ablation: q10 on dequantized input from the IDCT start; "hrcnn_input_pair" adds the
  # quantized input from the same start beside it (the shipped-weights runs start elsewhere)
  [[ $jobs == *" hrcnn_input "* || $jobs == *" hrcnn_input_pair "* ]] && HRCNN_FROM= hrcnn 10 dequantized hrcnn_q10_dequantized &
  [[ $jobs == *" hrcnn_input_pair "* ]] && HRCNN_FROM= hrcnn 10 quantized hrcnn_q10_quantized_scratch &

  if [[ $jobs == *" dmcnn_more "* ]]; then  # continue the shipped DMCNN weights, one run a quality
    # Batch 80, the paper's (Sec. 3.1): at batch 20 of 112x112 session 3's H100 ran 44 steps/s alone,
    # 11 MP/s, about 18 TFLOP/s for DMCNN's 1.65 MFLOP a pixel a training step (FlopCounterMode): a
    # few percent of the GPU, the rest launch overhead. Four times the pixels a launch. Transposed
    # files beside the originals (session 44: one CPU stage +0.007 / +0.005 dB, more than six flips-only stages).
    for q in 10 20; do
      { $K train --model dmcnn --quality $q --out "$R/dmcnn_q$q" --init-from "kdecode/weights/dmcnn_q$q.safetensors" \
          --augment "${DMCNN_AUGMENT:-flips+transposed}" --patch 112 --batch "${DMCNN_BATCH:-80}" --lr "${DMCNN_LR:-3e-4}" --warmup 100 --time-budget "$(left 60)" "${common[@]}" "${dry[@]}" \
          >"$R/dmcnn_q$q.log" 2>&1
        run_eval "$R/dmcnn_q$q" dmcnn $q $( [ $q = 10 ] && echo nonijg ); } &
    done
  fi
  [[ $jobs == *" dmcnn "* ]] && (  # DMCNN, easy to hard (Sec. 3.1): q20 on 56x56, then 112x112, then q10 from it (with and without DRU)
    total=$(left 60)
    $K train --model dmcnn --quality 20 --out "$R/dmcnn_q20_p56" --time-budget $(( total * 33 / 100 + 10 )) \
      "${common[@]}" "${dry[@]}" >"$R/dmcnn_q20_p56.log" 2>&1
    $K train --model dmcnn --quality 20 --out "$R/dmcnn_q20" --init-from "$R/dmcnn_q20_p56" --patch 112 --batch 20 \
      --lr 3e-4 --warmup 100 --time-budget $(( total * 17 / 100 + 10 )) "${common[@]}" "${dry[@]}" >"$R/dmcnn_q20.log" 2>&1
    run_eval "$R/dmcnn_q20" dmcnn 20 &
    for dru in "" --no-dru; do
      name=dmcnn_q10${dru:+_nodru}
      { $K train --model dmcnn --quality 10 --out "$R/$name" --init-from "$R/dmcnn_q20" --patch 112 --batch 20 --lr 3e-4 \
          --warmup 100 --time-budget "$(left 60)" $dru "${common[@]}" "${dry[@]}" >"$R/$name.log" 2>&1
        run_eval "$R/$name" dmcnn 10 ${dru:-nonijg}; } &
    done
    wait
  ) &
  [[ $jobs == *" d3 "* ]] && for q in 10 20; do  # D3-256 continued from the shipped weights with the CPU stages'
    # recipe (sessions 43 and 49: batch 32, Adam 5e-5 to a cosine floor, EMA 0.999 when EMA is set, files
    # flipped, transposed and shifted before compression); session 3's batch 16 at 5e-4 gained 0.01 dB
    { $K train --model d3 --quality $q --out "$R/d3_q$q" --init-from "kdecode/weights/d3_q$q.safetensors" \
        --batch "${D3_BATCH:-32}" --lr "${D3_LR:-5e-5}" --lr-min 1e-6 --augment "$d3_augment" \
        --warmup 100 --time-budget "$(left 40)" "${common[@]}" "${dry[@]}" >"$R/d3_q$q.log" 2>&1
      run_eval "$R/d3_q$q" d3 $q nonijg; } &
  done
  wait
  echo "all runs and evaluations done $(date +%T)"
  touch "$KD/DONE"
}

progress() {  # one line a run: its last logged step (loss, speed) and validation
  local f
  echo "== $(date +%T) ($(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null))"
  for f in "$KD"/runs/*/log.jsonl; do
    [ -f "$f" ] || continue
    python3 - "$f" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
last = next((r for r in reversed(rows) if "loss" in r), {})
val = next((r["val_psnr"] for r in reversed(rows) if "val_psnr" in r), None)
name = sys.argv[1].split("/")[-2]
print(f"{name:24s} step {last.get('step', 0):6d} loss {last.get('loss', float('nan')):.3e} "
      f"{last.get('mpx_per_s', 0):6.1f} Mpx/s t {last.get('elapsed', 0):6.0f}s val {val}")
EOF
  done
}

watch() {  # progress every minute for $1 seconds (or until everything is done)
  local until=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$until" ] && [ ! -f "$KD/DONE" ]; do
    progress; sleep $(( until - $(date +%s) < 60 ? (until - $(date +%s) > 0 ? until - $(date +%s) : 0) : 60 ))
  done
  progress
  tail -3 "$KD/trainall.log"
  snapshot
}

snapshot() {  # the newest weights of every run (from its checkpoint, as float16) into $OUT: insurance
  python3 - "$KD/runs" "$OUT" <<'EOF'
import io, pathlib, sys, tarfile, torch
from safetensors.torch import save
runs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for family in ("hrcnn", "dmcnn", "d3"):  # one file each: a file that comes back is at most 16 MiB
    with tarfile.open(out / f"snapshot_{family}.tar.gz", "w:gz") as tar:
        for ck in sorted(runs.glob(f"{family}_*/checkpoint.pt")):
            state = torch.load(ck, map_location="cpu", weights_only=False)
            net = {k[4:]: v.half().contiguous() for k, v in state["model"].items() if k.startswith("net.")}
            data = save(net, metadata={"step": str(state["step"])})
            info = tarfile.TarInfo(f"{ck.parent.name}/step{state['step']}.safetensors")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            tar.add(ck.parent / "log.jsonl", f"{ck.parent.name}/log.jsonl")
EOF
  ls -la "$OUT"
}

finish() {  # wait for the runs, return them, then the throughput suite on the quiet GPU
  collect
  # A dry run (not CUDA) stops here: the copy below would overwrite this checkout's shipped weights.
  [ "$DEVICE" = cuda ] || return 0
  # The new weights in this checkout (the device's copy), so that the suite measures every model.
  for f in "$KD"/runs/hrcnn_q[1-5]0/hrcnn_q*.safetensors "$KD"/runs/dmcnn_q[12]0/dmcnn_q*.safetensors; do
    [ -f "$f" ] && cp "$f" "${f%.safetensors}.json" kdecode/weights/
  done
  # LIVE1 first: HR-CNN's figure (issue 7) is its batch of 64 LIVE1-sized images.
  bench --limit 64 --min-files 64 --sets live1-q10 bsds500-q50 bsds500-q10 bsds500-q90 photo3840x2160-q90 \
    --bf16 --repeat 2 --min-time 0.2 --name throughput_cuda
  ls -la "$OUT"
}

collect() {  # wait for the runs (at most WAIT_MAX s), then return them and their evaluations
  local waited=0
  while [ ! -f "$KD/DONE" ] && [ $waited -lt ${WAIT_MAX:-400} ]; do
    [ $(( waited % 60 )) = 0 ] && progress; sleep 5; waited=$(( waited + 5 ))
  done
  [ -f "$KD/DONE" ] || echo "runs not done after ${WAIT_MAX:-400} s: returning what there is"
  cp "$KD/trainall.log" "$KD/device.txt" "$KD/runs/" 2>/dev/null
  ( cd "$KD/runs" && for fam in hrcnn d3; do  # HR-CNN weights are 2 MB a run: the ablation runs in a file of their own
      tar czf "$OUT/$fam.tar.gz" --exclude=checkpoint.pt --exclude='*.tmp' $(ls -d ${fam}_q[0-9]* | grep -E "^${fam}_q[0-9]+(\.log)?$") \
        device.txt trainall.log 2>/dev/null; done
    tar czf "$OUT/hrcnn_ablation.tar.gz" --exclude=checkpoint.pt --exclude='*.tmp' $(ls -d hrcnn_q* | grep -vE "^hrcnn_q[0-9]+(\.log)?$") 2>/dev/null
    for run in dmcnn_q20 dmcnn_q10 dmcnn_q10_nodru; do  # ~8 MB of weights each (with EMA, the last
      # step's too would bring the file to the 16 MiB a returned file may hold: its eval.md has its figures)
      tar czf "$OUT/$run.tar.gz" --exclude=checkpoint.pt --exclude='*.tmp' --exclude='dmcnn_q20_p56/*.safetensors' --exclude=last_step \
        $run $run.log $( [ $run = dmcnn_q20 ] && echo dmcnn_q20_p56 dmcnn_q20_p56.log ) 2>/dev/null; done )
  for f in "$KD"/runs/*/eval.md; do echo "## $(basename "$(dirname "$f")")"; grep -v "^$" "$f" | tail -12; done
}

call1() {
  setup
  rm -f "$KD/go" "$KD/DONE" "$KD/benched"
  setsid nohup bash "$0" trainall >"$KD/trainall.log" 2>&1 </dev/null &
  quick
  touch "$KD/go"
  checks
  cat "$KD/trainall.log"
  watch $(( ${CALL1_SECONDS:-560} - SECONDS ))
}

lease15() {  # the whole 15-minute lease in one call (header): figures, training, tests, collect
  local budget=${CALL_SECONDS:-560}
  setup
  rm -f "$KD/go" "$KD/DONE" "$KD/benched"
  QUICK=short quick
  # The runs end by DEADLINE, leaving EVAL_MARGIN for their evaluations (LIVE1_gray and Classic5
  # on the GPU) and the packing; the making of the training pairs counts against it.
  export DEADLINE=$(( $(date +%s) + budget - SECONDS - ${EVAL_MARGIN:-110} ))
  touch "$KD/go"
  if [ $(( DEADLINE - $(date +%s) )) -ge 90 ]; then
    setsid nohup bash "$0" trainall >"$KD/trainall.log" 2>&1 </dev/null &
  else
    echo "no training: $(( DEADLINE - $(date +%s) )) s left for it" | tee "$KD/trainall.log"; touch "$KD/DONE"
  fi
  checks
  WAIT_MAX=$(( budget - SECONDS - 25 )) collect
  cat "$KD/trainall.log"
  # At most 8 files come back: the empty families go, the reports travel as one file.
  ( cd "$OUT" && find . -maxdepth 1 -name '*.tar.gz' -size -100c -delete
    reports=$(ls | grep -v '\.tar\.gz$'); [ -z "$reports" ] || tar czf report.tar.gz --remove-files $reports )
  ls -la "$OUT"
}

bench() {  # the throughput suite alone (options passed on), on whatever the checkout ships
  KDECODE_DATA=$KD/data timeout ${BENCH_SECONDS:-300} python3 benchmarks/throughput.py --device cuda --out "$OUT" "$@" 2>&1 \
    | tee "$OUT/bench.log" | tail -80
}

case "${1:-}" in
  bench) shift; bench "$@" ;;
  pack) pack "${2:-../shared/data}" ;;
  call1) call1 ;;
  trainall) trainall ;;
  watch) watch "${2:-570}" ;;
  finish) finish ;;
  collect) collect ;;
  lease15) lease15 ;;
  progress) progress ;;
  *) sed -n 2,35p "$0"; exit 2 ;;
esac
