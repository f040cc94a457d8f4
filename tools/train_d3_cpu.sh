#!/usr/bin/env bash
# The recipe of the shipped D3 weights, as run on a shared 2-core CPU (one thread per run, niced):
#   lane A: D3-256 ("d3") q20 -> q10 -> q5 (easy-to-hard transfer, Sec. 4.1: each quality starts
#           from the one above);
#   lane B: D3-128 ("d3_128") q20 -> q10 -> q5, then the ablation: D3-256 q10 without the box
#           constraint (--no-box: no L_B, no clamp), from the same q20 weights with the same budget
#           as lane A's q10 (only the constraint differs); it is not shipped: its metrics go into
#           the d3_q10 card under "ablation".
# Then every shipped D3 card gets its LIVE1_gray metrics (IJG tables, and the non-IJG tables with
# real vs assumed intervals) from `kdecode eval --update-card`, and a "status" against the issue's
# targets. Resumable: run it again and every run continues from its checkpoint in RUNS.
#
# usage: tools/train_d3_cpu.sh DATA_ROOT RUNS_DIR [TIME_SCALE]
#   TIME_SCALE multiplies every training time budget (1 = the budgets below, in seconds).
set -uo pipefail
DATA=${1:-../shared/data}
RUNS=${2:-runs}
SCALE=${3:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
K="nice -n 19 ${PYTHON:-python3} -m kdecode.train.cli"
COMMON=(--data-root "$DATA" --cache-dir "$RUNS/cache" --steps 10000000 --batch 8 --val-every 5000 -q)
mkdir -p "$RUNS"
secs() { ${PYTHON:-python3} -c "print(int($1 * $SCALE))"; }

$K train --model d3 --quality 5 10 20 --prepare-only "${COMMON[@]}" || exit 1

# run NAME QUALITY BUDGET INIT [ARGS...]: one training run into $RUNS/NAME, installed unless --no-install
run() {
  local name=$1 q=$2 budget=$3 init=$4; shift 4
  local extra=(--lr 1e-3) install=(--install)
  if [ -n "$init" ]; then extra=(--init-from "$init" --lr 5e-4 --warmup 200); fi
  if [ "${1:-}" = "--no-install" ]; then install=(); shift; fi
  ls "$RUNS/$name"/*.safetensors >/dev/null 2>&1 && return 0   # finished earlier
  $K train --model d3 --quality "$q" --out "$RUNS/$name" "${extra[@]}" "${install[@]}" \
    --time-budget "$(secs "$budget")" "${COMMON[@]}" "$@"
}

# LANES=a or LANES=b runs one lane only (to resume it while the other still runs).
[[ ${LANES:-ab} == *a* ]] && { run d3_q20 20 1800 "" &&
  run d3_q10 10 1500 "$RUNS/d3_q20" &&
  run d3_q5 5 900 "$RUNS/d3_q10"; } >"$RUNS/lane_a.log" 2>&1 &
[[ ${LANES:-ab} == *b* ]] && { run d3_128_q20 20 720 "" --atoms 128 &&
  run d3_128_q10 10 720 "$RUNS/d3_128_q20" --atoms 128 &&
  { while [ ! -f "$RUNS/d3_q20/d3_q20.safetensors" ]; do sleep 30; done; } &&
  run d3_nobox_q10 10 1500 "$RUNS/d3_q20" --no-install --no-box &&
  run d3_128_q5 5 480 "$RUNS/d3_128_q10" --atoms 128; } >"$RUNS/lane_b.log" 2>&1 &
wait
[ "${EVAL:-1}" = 1 ] || exit 0

E="nice -n 19 ${PYTHON:-python3} -m kdecode.train.cli eval -q --update-card"
for model in d3 d3_128; do
  for q in 5 10 20; do
    $E --model $model --quality $q --data "$DATA/LIVE1_gray" "$DATA/Classic5"
  done
  for intervals in real assumed; do
    $E --model $model --quality 10 20 --data "$DATA/LIVE1_gray" --tables nonijg --intervals $intervals
  done
done
$E --model d3 --weights "$RUNS/d3_nobox_q10/d3_q10.safetensors" --quality 10 --data "$DATA/LIVE1_gray" "$DATA/Classic5"
${PYTHON:-python3} tools/d3_cards.py "$RUNS/d3_nobox_q10/d3_q10.json"
