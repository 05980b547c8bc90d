#!/usr/bin/env bash
# Everything issue 7 needs from a GPU, in one run, from the repository root on the GPU machine:
#
#   mkdir -p .device && cp -r ../shared/tiktoken_cache ../shared/data/tinyshakespeare.txt .device/   # here, first
#   bash bench/gpu_check.sh          # there (the device tool: carry [".device"]); results land in bench/results/
#
# MODEL, B_LIST, STEPS and DEVICE change the workload (DEVICE=cpu MODEL=tiny is a dry run of the plumbing).
set -euo pipefail
MODEL=${MODEL:-gpt2}
B_LIST=${B_LIST:-"16 32 64"}
STEPS=${STEPS:-50}
DEVICE=${DEVICE:-cuda}
T=${T:-1024}
WORK=${WORK:-/tmp/gpu_check}
export TIKTOKEN_CACHE_DIR="$PWD/.device/tiktoken_cache" HF_HUB_OFFLINE=1
mkdir -p "$WORK" bench/results
log() { echo "=== $(date -u +%H:%M:%S) $*"; }

log "device"
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"

log "CUDA-marked tests"
python -m pytest -q -m cuda tests || true

log "data: Tiny Shakespeare shards, a learnable synthetic corpus, HellaSwag-format examples (offline)"
rm -rf "$WORK"/ts "$WORK"/synthetic "$WORK"/run_*
python fineweb.py --dataset tinyshakespeare --input .device/tinyshakespeare.txt --out "$WORK/ts" > /dev/null
python - "$WORK" <<'PY'
import sys, numpy as np
sys.path.insert(0, "tests")
from pathlib import Path
from test_hellaswag import make_examples, write_jsonl
work = Path(sys.argv[1])
(work / "synthetic").mkdir(exist_ok=True)
block = np.random.default_rng(0).integers(0, 50257, 4096, dtype=np.uint16)  # a random block, repeated: copyable
np.save(work / "synthetic" / "synthetic_val_000000.npy", np.tile(block, 40))
np.save(work / "synthetic" / "synthetic_train_000001.npy", np.tile(block, 400))
write_jsonl(work / "hellaswag_val.jsonl", make_examples(512, seed=0))
PY

# bf16 + compile + fused AdamW, val / HellaSwag / samples with compile on, a checkpoint and a resume
for data in ts synthetic; do
  run="$WORK/run_$data"
  common=(--model "$MODEL" --device "$DEVICE" --compile --data-dir "$WORK/$data" --out-dir "$run" -B 16 -T "$T"
          --total-batch-size $((16 * T * 4)) --max-steps "$STEPS" --warmup-steps 10 --eval-interval 25
          --eval-steps 1 --hellaswag-interval 25 --hellaswag-dir "$WORK" --sample-interval 25 --checkpoint-interval 25)
  log "train $MODEL on $data, stop at step 30"
  TORCH_LOGS=recompiles python train_gpt2.py "${common[@]}" --stop-at 30 2> "$run.stderr" | tail -n 8
  echo "recompiles: $(grep -c 'Recompiling function' "$run.stderr" || true)"
  log "resume to step $STEPS"
  python train_gpt2.py "${common[@]}" --resume | tail -n 6
  python plot.py "$run" | tail -n 2
  cp "$run/log.txt" "bench/results/gpu_check_${data}_log.txt"
done

log "throughput at T=$T: lecture config vs ours eager vs ours compiled, peak memory"
for B in $B_LIST; do
  python bench/train_throughput.py --model "$MODEL" -B "$B" -T "$T" --device "$DEVICE" --steps 20 | tail -n 3 || true
  mv "bench/results/train_throughput_${DEVICE}_${MODEL}.json" "bench/results/train_throughput_${DEVICE}_${MODEL}_B${B}.json"
done

log "sampling and HellaSwag speed on the device"
python bench/sample_kvcache.py --model "$MODEL" --device "$DEVICE" | tail -n 4
python bench/hellaswag_speed.py --model "$MODEL" --device "$DEVICE" --examples 512 --text .device/tinyshakespeare.txt \
  | tail -n 4
if [ -n "${OUT:-}" ]; then tar czf "$OUT/results.tgz" bench/results; fi  # the device tool brings back few files
log "done"
