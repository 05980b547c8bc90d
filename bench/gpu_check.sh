#!/usr/bin/env bash
# What only a GPU can show, in one device call of at most 10 minutes (a GPU lease is 15 minutes in all, the
# machine's start included):
#
#   bash bench/gpu_check.sh prepare                         # here, once: .device/ (git-ignored) gets what the GPU
#                                                           # machine cannot fetch
#   OUT=... bash bench/gpu_check.sh 2>&1 | tee $OUT/gpu_check.log   # there (device tool, carry [".device"]): all parts
#   bash bench/gpu_check.sh train                           # one part on its own
#
# The parts run in this order, the most important first, each under a time limit of its own (LIMIT_<PART>
# seconds), so that a call cut short still brings back what came before; every figure is written to $OUT the moment
# it exists:
#   device    device, torch and CUDA versions; the CUDA tests that do not compile (the device's own choices,
#             float16 with the gradient scaler, bf16, fused AdamW)                       gpu_check_device.txt
#   train     the trainer: MODEL, --dtype auto, --compile, -B TRAIN_B, Tiny Shakespeare shards, val loss,
#             HellaSwag-format examples and samples on; a second run resumed from the first's middle checkpoint
#             (its loss against the uninterrupted run's); recompiles counted  gpu_check_train.json (+ _logs.txt)
#   step      one optimizer step at B_TOP x T: ours compiled (the train part's graph: read back from the
#             inductor cache) against the lecture's compiled configuration: tokens/s, MFU, peak memory against
#             the memory plan that -B auto trusts                                  train_throughput_*_step.json
#   modern    a --recipe modern step (Muon, its model switches) against ours at B_TOP  train_throughput_*_modern.json
#   compiled  tests/test_cuda.py's tests that compile (generation, a bf16 compiled run resumed)
#                                                                       appended to gpu_check_device.txt
#   ladder    the lecture's speed ladder, B=LADDER_B, a few steps a rung (each rung as it ends) lecture_ladder_*.json
# Limits: compiling one gpt2 training graph takes about 45 to 70 s on an H100; train compiles one (its resumed
# run reads it back), step and modern one new graph each, the ladder several: the limits add up to 580 s.
# gpu_check_parts.json says how long each part took, how it ended and how many seconds compiling took. One inductor
# cache (TORCHINDUCTOR_CACHE_DIR) serves every part: a graph compiled once is read back from it, not compiled again.
#
# MODEL, T, TRAIN_B, B_TOP, LADDER_B, STEPS and DEVICE change the workload. COMPILE=0 leaves torch.compile out
# (eager variants, the ladder's first three rungs): with DEVICE=cpu MODEL=tiny and small shapes, that is the dry run
# of the plumbing that CI runs (tests/test_bench.py), in seconds where compiling on a CPU would take minutes.
set -uo pipefail  # no -e: a failing part must not cost the figures of the others
MODEL=${MODEL:-gpt2}
T=${T:-1024}
TRAIN_B=${TRAIN_B:-16}
B_TOP=${B_TOP:-$TRAIN_B}  # the train part's shape: its compiled graph is in the cache
LADDER_B=${LADDER_B:-16}
STEPS=${STEPS:-30}
DEVICE=${DEVICE:-cuda}
COMPILE=${COMPILE:-1}
PY=${PY:-python3}
WORK=${WORK:-/tmp/gpu_check}
LIMIT_DEVICE=${LIMIT_DEVICE:-60}
LIMIT_TRAIN=${LIMIT_TRAIN:-170}
LIMIT_STEP=${LIMIT_STEP:-100}
LIMIT_MODERN=${LIMIT_MODERN:-90}
LIMIT_COMPILED=${LIMIT_COMPILED:-90}
LIMIT_LADDER=${LIMIT_LADDER:-70}
PARTS=(device train step modern compiled ladder)
export TIKTOKEN_CACHE_DIR="$PWD/.device/tiktoken_cache" SHARED_DIR="$PWD/.device" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export BENCH_RESULTS="${OUT:-$PWD/bench/results}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$WORK/inductor_cache}" TORCHINDUCTOR_FX_GRAPH_CACHE=1 \
  TORCHINDUCTOR_AUTOGRAD_CACHE=1
mkdir -p "$WORK" "$BENCH_RESULTS"
log() { echo "=== $(date -u +%H:%M:%S) $*"; }

if [ "$COMPILE" = 1 ]; then
  compile=(--compile) step_variants=compiled,lecture_compiled modern_variants=compiled,modern rungs=7
else
  compile=() step_variants=eager,lecture modern_variants=eager,modern_eager rungs=3
fi

prepare() {
  mkdir -p .device/data .device/whl
  cp -r ../shared/tiktoken_cache .device/ && cp ../shared/data/tinyshakespeare.txt .device/data/
  # the versions this project is tested with; py3.12, the GPU image's Python
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .device/whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  ls -l .device .device/whl
}

use_carried_wheels() {  # fineweb.py reads every corpus through `datasets`, which the GPU image lacks
  if ! $PY -c "import datasets" 2> /dev/null && ls .device/whl/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .device/whl/*.whl
  fi
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
}

device() {
  {
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, '|',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda device')"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
      --format=csv,noheader
    $PY -m pip list 2> /dev/null | grep -iE "^(datasets|transformers|tiktoken|numpy|triton|pytest) "
    $PY -m pytest -q -rfE -p no:cacheprovider -m "not slow" tests/test_cuda.py 2>&1
  } > "$BENCH_RESULTS/gpu_check_device.txt"
  cat "$BENCH_RESULTS/gpu_check_device.txt"
}

compiled() {  # appended to the device part's file: the device tool brings back few files
  echo "##### the CUDA tests that compile" >> "$BENCH_RESULTS/gpu_check_device.txt"
  $PY -m pytest -q -rfE -p no:cacheprovider -m slow tests/test_cuda.py 2>&1 | tee -a "$BENCH_RESULTS/gpu_check_device.txt"
}

train() {
  log "data: Tiny Shakespeare shards and HellaSwag-format examples (offline)"
  rm -rf "$WORK/ts" "$WORK/straight" "$WORK/resumed"
  $PY fineweb.py --dataset tinyshakespeare --input .device/data/tinyshakespeare.txt --out "$WORK/ts" > /dev/null
  $PY -c "import sys, pathlib; sys.path.insert(0, 'tests'); from helpers import make_examples, write_jsonl
write_jsonl(pathlib.Path(sys.argv[1], 'hellaswag_val.jsonl'), make_examples(256, seed=0))" "$WORK" || return
  local mid=$((STEPS / 2)) logs="$BENCH_RESULTS/gpu_check_train_logs.txt"
  local common=(--model "$MODEL" --device "$DEVICE" "${compile[@]}" --data-dir "$WORK/ts"
                -B "$TRAIN_B" -T "$T" --total-batch-size $((TRAIN_B * T * 2)) --max-steps "$STEPS" --warmup-steps 5
                --eval-interval "$mid" --eval-steps 1 --hellaswag-interval "$mid" --hellaswag-dir "$WORK"
                --sample-interval "$mid" --checkpoint-interval "$mid")
  log "train $MODEL for $STEPS steps, uninterrupted"
  TORCH_LOGS=recompiles $PY train_gpt2.py "${common[@]}" --out-dir "$WORK/straight" > "$WORK/straight.txt" \
    2> "$WORK/straight.stderr"
  log "the same run resumed from its checkpoint at step $mid"
  mkdir -p "$WORK/resumed" && cp "$WORK/straight/ckpt_$(printf %06d "$mid").pt" "$WORK/resumed/"
  TORCH_LOGS=recompiles $PY train_gpt2.py "${common[@]}" --out-dir "$WORK/resumed" --resume > "$WORK/resumed.txt" \
    2> "$WORK/resumed.stderr"
  for run in straight resumed; do
    echo "##### $run: stdout"; cat "$WORK/$run.txt"; echo "##### $run: stderr (end)"; tail -n 40 "$WORK/$run.stderr"
  done > "$logs"
  $PY - "$WORK" "$mid" "$BENCH_RESULTS/gpu_check_train.json" "$COMPILE" "$DEVICE" "${common[*]}" <<'PY'
import datetime, json, re, statistics, sys
import torch
sys.path.insert(0, "bench")
from common import device_name
from plot import read_log
work, mid, out, compiled, device, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", *sys.argv[5:]
STEP = re.compile(r"^step +(\d+) \| loss ([\d.]+) .*\| dt (\d+)ms \| tok/sec ([\d,]+)")
summary = {"command": f"python train_gpt2.py {flags} --out-dir straight; the same --out-dir resumed --resume from "
                      f"straight's ckpt_{mid:06d}.pt", "device": device_name(device), "torch": torch.__version__,
           "date": datetime.date.today().isoformat(), "resumed_from_step": mid}
for run in ("straight", "resumed"):
    stdout, stderr = open(f"{work}/{run}.txt").read(), open(f"{work}/{run}.stderr").read()
    steps = [m.groups() for m in map(STEP.match, stdout.splitlines()) if m]
    dts = [int(dt) / 1000 for _, _, dt, _ in steps]
    series = read_log(f"{work}/{run}")
    summary[run] = {
        "train_loss": series["train"], "val_loss": series["val"], "hellaswag": series["hella"],
        "samples": stdout.count(" sample "), "recompiles": stderr.count("Recompiling function"),
        "tokens_per_s_median": statistics.median(int(t.replace(",", "")) for *_, t in steps[1:]) if len(steps) > 1
        else None,
        # the first step of each process compiles the training graph: its seconds over a typical step's
        "compile_s": round(dts[0] - statistics.median(dts[1:]), 1) if compiled and len(dts) > 1 else 0.0}
straight, resumed = summary["straight"]["train_loss"], summary["resumed"]["train_loss"]
last = max(straight, default=None)
if last is not None and last in resumed:
    diff = abs(straight[last] - resumed[last])
    # bf16 autocast and compiled kernels are not bit-exact across processes: within bf16's noise is the bar
    summary.update(last_step=last, resumed_loss_difference=round(diff, 6), resume_matches=diff < 0.05)
json.dump(summary, open(out, "w"), indent=1)
print(json.dumps({k: v for k, v in summary.items() if k not in ("straight", "resumed", "command")}))
for run in ("straight", "resumed"):
    print(run, {k: v for k, v in summary[run].items() if k != "train_loss"})
PY
}

step() {
  $PY bench/train_throughput.py --model "$MODEL" -B "$B_TOP" -T "$T" --device "$DEVICE" --warmup 2 --steps 8 \
    --variants "$step_variants" --label step | grep -E "^[a-z_]+ [{:]"
}

ladder() {
  $PY bench/lecture_ladder.py --model "$MODEL" -B "$LADDER_B" -T "$T" --device "$DEVICE" --warmup 2 --steps 4 \
    --rungs "$rungs"
}

modern() {
  $PY bench/train_throughput.py --model "$MODEL" -B "$B_TOP" -T "$T" --device "$DEVICE" --warmup 2 --steps 8 \
    --variants "$modern_variants" --label modern | grep -E "^[a-z_]+ [{:]"
}

record_parts() {  # gpu_check_parts.json: each part's seconds and exit code, and the compiling they spent
  $PY - "$BENCH_RESULTS" "$WORK/parts.tsv" "$WORK/started" <<'PY'
import glob, json, os, sys
results, table, marker = sys.argv[1:]
started = os.path.getmtime(marker)  # touched when this call began: older results are not this call's
parts = [dict(zip(("part", "seconds", "limit_s", "rc"), line.split())) for line in open(table).read().splitlines()]
compile_s = {}
for path in glob.glob(os.path.join(results, "*.json")):
    if os.path.getmtime(path) < started:
        continue
    figures = json.load(open(path))
    rows = list(figures.get("results", {}).values()) + figures.get("rungs", [])
    rows += [figures[run] for run in ("straight", "resumed") if run in figures]
    seconds = sum(row.get("compile_s") or 0 for row in rows if isinstance(row, dict))
    if seconds:
        compile_s[os.path.basename(path)] = round(seconds, 1)
record = {"parts": [{k: (int(v) if k != "part" else v) for k, v in p.items()} for p in parts],
          "compile_s": compile_s, "compile_s_total": round(sum(compile_s.values()), 1)}
json.dump(record, open(os.path.join(results, "gpu_check_parts.json"), "w"), indent=1)
print(json.dumps(record))
PY
}

run_parts() {
  : > "$WORK/parts.tsv" && touch "$WORK/started"
  use_carried_wheels
  for part in "$@"; do
    local limit_var="LIMIT_${part^^}" start=$SECONDS
    log "part $part (at most ${!limit_var} s)"
    timeout -k 5 "${!limit_var}" bash "$0" "_$part"  # a part cut short is killed with everything it started
    local rc=$?
    [ "$rc" -eq 0 ] || echo "!!! part $part ended with exit code $rc (124: cut at its time limit)" >&2
    echo "$part $((SECONDS - start)) ${!limit_var} $rc" >> "$WORK/parts.tsv"
    record_parts > /dev/null
  done
  record_parts
  log "done in $SECONDS s: figures in $BENCH_RESULTS"
}

case ${1:-all} in
  prepare) prepare ;;
  all) run_parts "${PARTS[@]}" ;;
  device|train|step|modern|compiled|ladder) run_parts "$1" ;;
  _device|_train|_step|_modern|_compiled|_ladder) "${1#_}" ;;  # one part, as run_parts calls it (PYTHONPATH set)
  *) echo "unknown part '$1'; parts: prepare, all (the default), ${PARTS[*]}" >&2; exit 2 ;;
esac
