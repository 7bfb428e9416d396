#!/usr/bin/env bash
# Bring trained runs back from the GPU machine (run there after scripts/train_default_gpu.sh):
#
#   bash scripts/export_gpu_runs.sh retnet tf      # NAMEs of the runs
#
# For each run: a bf16 copy of /tmp/run_NAME/last (model, config, tokenizer; the optimizer state
# stays behind), its config and log, then the reading probe over all of them. Everything is packed
# into $OUT/runs.tar.gz.part-* pieces of 15 MB (the device returns files of at most 16 MiB):
#   cat runs.tar.gz.part-* | tar xz -C data/build/checkpoints
set -euo pipefail
: "${OUT:?OUT must name the folder that comes back}"
STAGE=$(mktemp -d)
for name in "$@"; do
    python3 - "/tmp/run_$name/last" "$STAGE/$name" <<'PY'
import sys
from pathlib import Path
import torch
sys.path.insert(0, "benchmarks")
from reading_probe import load  # RetNet or Transformer baseline, by config.json
model, tokenizer = load(Path(sys.argv[1]))
model.to(torch.bfloat16).save_pretrained(sys.argv[2], tokenizer=tokenizer)
PY
    cp "/tmp/config_$name.json" "$STAGE/$name/train_config.json"
    cp "/tmp/run_$name/log.jsonl" "$STAGE/$name/train_log.jsonl"
done
python3 experiments/reading_probe.py $(for n in "$@"; do echo "$STAGE/$n"; done) --threads 8 | tee "$STAGE/reading_probe.md"
tar czf - -C "$STAGE" . | split -b 15M - "$OUT/runs.tar.gz.part-"
ls -la "$OUT"
