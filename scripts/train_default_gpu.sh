#!/usr/bin/env bash
# Train the default reader on one GPU (run from the repo root on the GPU machine).
#   MINUTES=12 bash scripts/train_default_gpu.sh    # builds /tmp/train, probes speed, trains in the background
# Needs data/build/{pretrain,episodes,tokenizer} from the corpus builder (see data/corpus/README.md).
set -euo pipefail
export PYTHONUNBUFFERED=1
MINUTES=${MINUTES:-12}
LOG=${LOG:-/tmp/train.log}
python3 -m data.training_set --build-dir data/build --out /tmp/train --row-length 2048 --workers "$(nproc)" \
    --max-distractors 7 2>&1 | grep -v '^layout' || true
cat /tmp/train/summary.json
# Probe throughput for 60 steps (the last 10 after warm-up), then size max_steps to the time budget.
python3 -m retnet.train --config data/train_default.json --max-steps 60 --out-dir /tmp/probe | grep tokens_per_s | tail -1 > /tmp/probe.json
STEPS=$(python3 -c "
import json; r = json.load(open('/tmp/probe.json')); tps = r['tokens_per_s']
cfg = json.load(open('data/train_default.json')); print(int($MINUTES * 60 * tps / (cfg['batch_size'] * 2047)))")
echo "probe: $(cat /tmp/probe.json) -> max_steps=$STEPS"
python3 - "$STEPS" <<'PY'
import json, sys
cfg = json.load(open("data/train_default.json"))
cfg["max_steps"] = int(sys.argv[1])
cfg["warmup_steps"] = min(cfg["warmup_steps"], cfg["max_steps"] // 10)
json.dump(cfg, open("/tmp/train_config.json", "w"), indent=1)
PY
setsid nohup python3 -m retnet.train --config /tmp/train_config.json > "$LOG" 2>&1 < /dev/null &
echo $! > /tmp/train.pid
echo "training started, log at $LOG"
