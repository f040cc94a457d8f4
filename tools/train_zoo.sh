#!/usr/bin/env bash
# The recipe of the shipped weights, as run on one GPU: AR-CNN and Fast AR-CNN chains
# q40 -> q30 -> q20 -> q10 (easy-to-hard transfer: each quality starts from the one above) and one
# DCSC for q 10/20/30, trained side by side, installed into kdecode/weights, then measured by
# `kdecode eval` on LIVE1_gray and Classic5 into their cards. Resumable: run it again and every
# run continues from its checkpoint in RUNS.
#
# usage: tools/train_zoo.sh DATA_ROOT RUNS_DIR [TIME_SCALE]
#   TIME_SCALE multiplies every training time budget (1 = the budgets below, in seconds).
set -uo pipefail
DATA=${1:-../shared/data}
RUNS=${2:-runs}
SCALE=${3:-1}
K="${PYTHON:-python3} -m kdecode.train.cli"
COMMON=(--data-root "$DATA" --cache-dir "$RUNS/cache" --scales 1,0.9,0.8,0.7,0.6 --steps 10000000 -q)
mkdir -p "$RUNS"
secs() { ${PYTHON:-python3} -c "print(int($1 * $SCALE))"; }

# JPEG pairs of every training image at every quality, once, shared by all runs.
$K train --model arcnn --quality ${PREPARE_QUALITIES:-10 20 30 40} --prepare-only --workers "${WORKERS:-16}" "${COMMON[@]}" || exit 1

chain() {  # model, then the time budget of q40 q30 q20 q10
  local model=$1 prev="" budgets=("$2" "$3" "$4" "$5") i=0
  for q in 40 30 20 10; do
    if [ -f "$RUNS/${model}_q$q/${model}_q$q.safetensors" ]; then  # finished earlier
      prev="$RUNS/${model}_q$q"; i=$((i + 1)); continue
    fi
    local init=() lr=(--lr 1e-3)
    if [ -n "$prev" ]; then init=(--init-from "$prev"); lr=(--lr 5e-4 --warmup 200); fi
    $K train --model "$model" --quality $q --out "$RUNS/${model}_q$q" "${init[@]}" "${lr[@]}" \
      --time-budget "$(secs "${budgets[$i]}")" --install "${COMMON[@]}" || return 1
    prev="$RUNS/${model}_q$q"; i=$((i + 1))
  done
}

chain arcnn 45 45 100 160 >"$RUNS/arcnn.log" 2>&1 &
chain fast_arcnn 45 45 100 160 >"$RUNS/fast_arcnn.log" 2>&1 &
# DCSC: stage 1 (lr 5e-4 cosine), then stage 2, a low-learning-rate fine-tune from stage 1's
# weights (what the shipped card records: 300 s + 140 s on an H100).
{ $K train --model dcsc --quality 10 20 30 --iterations "${DCSC_R:-20}" --out "$RUNS/dcsc" \
    --time-budget "$(secs "${DCSC_BUDGET:-380}")" "${COMMON[@]}" &&
  $K train --model dcsc --quality 10 20 30 --iterations "${DCSC_R:-20}" --out "$RUNS/dcsc_ft" \
    --init-from "$RUNS/dcsc/dcsc.safetensors" --lr 1e-4 --lr-min 1e-6 --warmup 100 --val-set '' \
    --time-budget "$(secs "${DCSC_FINETUNE:-140}")" --install "${COMMON[@]}"; } >"$RUNS/dcsc.log" 2>&1 &
wait
[ "${EVAL:-1}" = 1 ] || exit 0

# Measure every shipped model into its card (CPU metrics, so one process per card).
for m in arcnn fast_arcnn; do
  for q in 10 20 30 40; do
    OMP_NUM_THREADS=1 $K eval --model $m --quality $q --data "$DATA/LIVE1_gray" "$DATA/Classic5" \
      --update-card -q >"$RUNS/eval_${m}_q$q.md" 2>&1 &
  done
done
OMP_NUM_THREADS=4 $K eval --model dcsc --quality 10 20 30 --data "$DATA/LIVE1_gray" "$DATA/Classic5" \
  --update-card -q >"$RUNS/eval_dcsc.md" 2>&1 &
wait
cat "$RUNS"/eval_*.md
