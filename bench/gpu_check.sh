#!/usr/bin/env bash
# What only a GPU can show, in three stages that each fit one device call (10 minutes at most):
#
#   bash bench/gpu_check.sh prepare   # here, once: .device/ (git-ignored) gets what the GPU machine cannot fetch
#   bash bench/gpu_check.sh check     # there, with the device tool: carry [".device"]
#   bash bench/gpu_check.sh speed
#   bash bench/gpu_check.sh tune
#   bash bench/gpu_check.sh ladder
#
#   prepare  the tiktoken files and Tiny Shakespeare from ../shared, and wheels of `datasets` and the two
#            packages it needs that the GPU machine's image lacks (fineweb.py reads every corpus through it)
#   check    the CUDA tests; gpt2 trained for STEPS steps with bf16 + compile + fused AdamW on Tiny Shakespeare,
#            and on a synthetic corpus stopped at step 30 and resumed; val loss, HellaSwag and samples on,
#            recompiles counted
#   speed    one optimizer step at T for each B in B_LIST: the lecture's configuration, eager, compiled, compiled
#            with the chunked loss (tokens/s, MFU, peak memory); the real training loop at B_TOP, compiled, with
#            and without the chunked loss; a profile of the compiled step
#   tune     at B_TOP: compile mode max-autotune, activation checkpointing and cuDNN attention; B=2*B_TOP with the chunked loss; sampling
#            and HellaSwag speed (compiled and not)
#   ladder   the lecture's speed ladder (bench/lecture_ladder.py): gpt2, B=16, T=1024, rung by rung
#
# Every figure goes to $OUT (what the device tool brings back) as soon as it is made, or to bench/results/
# without OUT. MODEL, B_LIST, B_TOP, TOTAL, STEPS, T and DEVICE change the workload: DEVICE=cpu MODEL=tiny T=128
# B_LIST=4 B_TOP=4 TOTAL=1024 STEPS=32 PY=python is a dry run of the plumbing on a CPU (in a scratch clone).
set -uo pipefail  # no -e: a failing part must not cost the figures of the others
MODEL=${MODEL:-gpt2}
B_LIST=${B_LIST:-"32 64"}
B_TOP=${B_TOP:-64}
TOTAL=${TOTAL:-524288}  # tokens per optimizer step in the training-loop measurement: the GPT-2 recipe's
STEPS=${STEPS:-50}
T=${T:-1024}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
WORK=${WORK:-/tmp/gpu_check}
export TIKTOKEN_CACHE_DIR="$PWD/.device/tiktoken_cache" SHARED_DIR="$PWD/.device" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export BENCH_RESULTS="${OUT:-$PWD/bench/results}"
mkdir -p "$WORK" "$BENCH_RESULTS"
log() { echo "=== $(date -u +%H:%M:%S) $*"; }
run() { timeout "$1" "${@:2}" || echo "!!! exit $? from: ${*:2}" >&2; }  # each part gets a time limit of its own

if [ "${1:-}" = prepare ]; then
  mkdir -p .device/data .device/whl
  cp -r ../shared/tiktoken_cache .device/ && cp ../shared/data/tinyshakespeare.txt .device/data/
  # the versions this project is tested with; py3.12, the GPU image's Python
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .device/whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  ls -l .device .device/whl
  exit
fi

log "device"
if ! $PY -c "import datasets" 2> /dev/null && ls .device/whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
$PY -m pip list 2> /dev/null | grep -iE "^(datasets|pyarrow|fsspec|huggingface.hub|transformers|tiktoken|numpy|triton|pytest) "

check() {
  log "CUDA tests"
  run 240 $PY -m pytest -q -rfE -p no:cacheprovider tests/test_cuda.py > "$BENCH_RESULTS/gpu_check_tests.txt" 2>&1
  tail -n 15 "$BENCH_RESULTS/gpu_check_tests.txt"

  log "data: Tiny Shakespeare shards, a learnable synthetic corpus, HellaSwag-format examples (offline)"
  rm -rf "$WORK"/ts "$WORK"/synthetic "$WORK"/run_*
  $PY fineweb.py --dataset tinyshakespeare --input .device/data/tinyshakespeare.txt --out "$WORK/ts" > /dev/null
  $PY - "$WORK" <<'PY'
import sys, numpy as np
sys.path.insert(0, "tests")
from pathlib import Path
from helpers import make_examples, write_jsonl
work = Path(sys.argv[1])
(work / "synthetic").mkdir(exist_ok=True)
block = np.random.default_rng(0).integers(0, 50257, 4096, dtype=np.uint16)  # a random block, repeated: copyable
np.save(work / "synthetic" / "synthetic_val_000000.npy", np.tile(block, 40))
np.save(work / "synthetic" / "synthetic_train_000001.npy", np.tile(block, 400))
write_jsonl(work / "hellaswag_val.jsonl", make_examples(256, seed=0))
PY
  for data in ts synthetic; do
    dir="$WORK/run_$data" out="$BENCH_RESULTS/gpu_check_train_$data"
    common=(--model "$MODEL" --device "$DEVICE" --compile --data-dir "$WORK/$data" --out-dir "$dir" -B 16 -T "$T"
            --total-batch-size $((16 * T * 4)) --max-steps "$STEPS" --warmup-steps 10 --eval-interval 25
            --eval-steps 1 --hellaswag-interval 25 --hellaswag-dir "$WORK" --sample-interval 25
            --checkpoint-interval 25)
    if [ "$data" = ts ]; then
      log "train $MODEL on Tiny Shakespeare for $STEPS steps"
      TORCH_LOGS=recompiles run 200 $PY train_gpt2.py "${common[@]}" > "$out.txt" 2> "$out.stderr"
    else
      log "train $MODEL on the synthetic corpus to step 30, then resume to step $STEPS"
      TORCH_LOGS=recompiles run 200 $PY train_gpt2.py "${common[@]}" --stop-at 30 > "$out.txt" 2> "$out.stderr"
      TORCH_LOGS=recompiles run 150 $PY train_gpt2.py "${common[@]}" --resume >> "$out.txt" 2>> "$out.stderr"
    fi
    echo "recompiles: $(grep -c 'Recompiling function' "$out.stderr") (expected: one per invocation, for val loss)"
    grep -E "val loss|HellaSwag|step +(0|9|29|30|49) \|" "$out.txt"
    tail -n 3 "$out.stderr"
    cp "$dir/log.txt" "${out}_log.txt"
  done
}

speed() {
  for B in $B_LIST; do
    log "one optimizer step, B=$B T=$T"
    run 240 $PY bench/train_throughput.py --model "$MODEL" -B "$B" -T "$T" --device "$DEVICE" --steps 10 \
      --variants lecture,eager,compiled,compiled_chunked | grep -E "^[a-z_]+ [{:]"
  done
  for chunk in 0 8192; do
    log "the training loop (train_gpt2.py --compile --loss-chunk-size $chunk), B=$B_TOP"
    run 150 $PY bench/trainer_speed.py --model "$MODEL" -B "$B_TOP" -T "$T" --total-batch-size "$TOTAL" \
      --device "$DEVICE" --steps 15 \
      --label "compiled_chunk$chunk" -- --compile --loss-chunk-size "$chunk" | grep -E '"(tokens_per_s|mfu)"'
  done
  log "profile of the compiled step, B=$B_TOP"
  run 150 $PY bench/profile_step.py --model "$MODEL" -B "$B_TOP" -T "$T" --device "$DEVICE" --variant compiled \
    | grep -A8 share_by_kind
}

tune() {
  log "compile modes and attention kernels, B=$B_TOP"
  run 330 $PY bench/train_throughput.py --model "$MODEL" -B "$B_TOP" -T "$T" --device "$DEVICE" --steps 10 \
    --variants compiled,compiled_ac,cudnn_attention,max_autotune --label tune | grep -E "^[a-z_]+ [{:]"
  log "twice the micro-batch, B=$((2 * B_TOP)), with and without the chunked loss"
  run 150 $PY bench/train_throughput.py --model "$MODEL" -B $((2 * B_TOP)) -T "$T" --device "$DEVICE" --steps 5 \
    --variants compiled_chunked,compiled | grep -E "^[a-z_]+ [{:]"
  log "sampling and HellaSwag speed"
  run 60 $PY bench/sample_kvcache.py --model "$MODEL" --device "$DEVICE" | grep -E "tokens_per_s|speedup"
  run 120 $PY bench/hellaswag_speed.py --model "$MODEL" --device "$DEVICE" --examples 512 --compile \
    --text .device/data/tinyshakespeare.txt | grep -E "examples_per_s|speedup|identical"
}

ladder() {
  log "the lecture's speed ladder, $MODEL B=16 T=$T"
  run 540 $PY bench/lecture_ladder.py --model "$MODEL" -B 16 -T "$T" --device "$DEVICE" --steps 10
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(check speed tune ladder)
for stage in "${stages[@]}"; do
  case $stage in
    check|speed|tune|ladder) $stage ;;
    *) echo "unknown stage '$stage'; stages: check speed tune ladder" >&2; exit 2 ;;
  esac
done
log "done: figures in $BENCH_RESULTS"
