#!/usr/bin/env bash
# Train a reader model on one GPU in the background (run from the repo root on the GPU machine).
#
#   MINUTES=12 bash scripts/train_default_gpu.sh          # the default RetNet reader, training/configs/default.json
#   CONFIG=training/configs/baseline.json STEPS=4000 NAME=tf bash scripts/train_default_gpu.sh
#   CONFIG=training/configs/baseline.json MINUTES=20 MAX_STEPS=7961 NAME=tf bash ...   # time budget, capped
#   NPROC=2 BATCH=8 MINUTES=10 bash scripts/train_default_gpu.sh     # DDP on 2 GPUs, global batch 16
#   WARMUP_CONFIG=training/configs/warmup.json WARMUP_STEPS=1000 bash ...  # copy warm-up, then the main mix
#   (WARMUP_CONFIG only replaces CONFIG's train_sources, so it serves the RetNet and the baseline alike)
#
# Builds the token rows once into /tmp/train (needs data/build/{pretrain,episodes,tokenizer} from the
# corpus builder, see training/corpus/README.md). Without STEPS it probes the throughput for 60 steps and
# sizes max_steps to MINUTES. Output: /tmp/run_$NAME/last, log /tmp/train_$NAME.log, pid /tmp/train_$NAME.pid.
set -euo pipefail
export PYTHONUNBUFFERED=1
CONFIG=${CONFIG:-training/configs/default.json}
NAME=${NAME:-retnet}
MINUTES=${MINUTES:-12}
ROW=${ROW:-4096}
NPROC=${NPROC:-1}          # GPUs: more than one trains with DDP through torchrun
BATCH=${BATCH:-}           # per-GPU batch (default: the config's)
if [ "$NPROC" -gt 1 ]; then TRAIN="torchrun --standalone --nproc-per-node $NPROC -m training"
else TRAIN="python3 -m training"; fi
LOG=/tmp/train_$NAME.log
if [ ! -f /tmp/train/summary.json ]; then
    python3 -m training.training_set --build-dir data/build --out /tmp/train --row-length "$ROW" --workers "$(nproc)" \
        --max-distractors 16 2>&1 | grep -v '^layout\|^sessions' || true
fi
cat /tmp/train/summary.json
finalize() {  # config steps out_dir [sources]: the config with this run's steps, per-GPU batch, output
              # folder, and (for a curriculum stage) the train_sources of another JSON file
python3 - "$1" "$2" "$3" "${BATCH:-0}" "${4:-}" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
if sys.argv[5]:
    cfg["train_sources"] = json.load(open(sys.argv[5]))["train_sources"]
cfg["batch_size"] = int(sys.argv[4]) or cfg["batch_size"]
cfg["max_steps"] = int(sys.argv[2])
cfg["warmup_steps"] = min(cfg["warmup_steps"], cfg["max_steps"] // 10)
cfg["out_dir"] = sys.argv[3]
print(json.dumps(cfg, indent=1))
PY
}
if [ -z "${STEPS:-}" ]; then
    finalize "$CONFIG" 60 "/tmp/probe_$NAME" > "/tmp/probe_config_$NAME.json"
    $TRAIN --config "/tmp/probe_config_$NAME.json" | grep tokens_per_s | tail -1 > "/tmp/probe_$NAME.json"
    STEPS=$(python3 -c "
import json; tps = json.load(open('/tmp/probe_$NAME.json'))['tokens_per_s']
print(int($MINUTES * 60 * tps / (json.load(open('/tmp/probe_config_$NAME.json'))['batch_size'] * $ROW * $NPROC)))")
    echo "probe: $(cat "/tmp/probe_$NAME.json") -> max_steps=$STEPS"
    if [ -n "${MAX_STEPS:-}" ] && [ "$STEPS" -gt "$MAX_STEPS" ]; then STEPS=$MAX_STEPS; fi
fi
finalize "$CONFIG" "$STEPS" "/tmp/run_$NAME" > "/tmp/config_$NAME.json"
RUN="$TRAIN --config /tmp/config_$NAME.json"
if [ -n "${WARMUP_CONFIG:-}" ]; then  # curriculum: the first WARMUP_STEPS on other sources, one schedule
    finalize "$CONFIG" "$STEPS" "/tmp/run_$NAME" "$WARMUP_CONFIG" > "/tmp/config_${NAME}_warmup.json"
    RUN="$TRAIN --config /tmp/config_${NAME}_warmup.json --until ${WARMUP_STEPS:?set WARMUP_STEPS} && $RUN"
fi
setsid nohup bash -c "$RUN" > "$LOG" 2>&1 < /dev/null &
echo $! > "/tmp/train_$NAME.pid"
echo "training $NAME for $STEPS steps started, log at $LOG"
