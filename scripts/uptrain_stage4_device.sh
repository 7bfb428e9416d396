#!/usr/bin/env bash
# Stage 4 of the SmolLM2 reader on the lent H200 (issue 12), started by the last of three device calls.
# The GGUF travels in pieces (64 MiB tree limit) that earlier calls left in /root/parts; the reading
# data in data/build/uptrain/reading (carried). Runs detached (setsid) so later calls can poll it.
#   bash scripts/uptrain_stage4_device.sh SECONDS
# Poll in the very next call (a machine goes back 30 s after a call ends), and bring the newest
# checkpoint home every time (the run saves adapter_stage4/ every save_every_s):
#   sleep 540; cp -r /root/stage4/adapter_stage4 /root/stage4/log.txt /root/stage4/metrics.json $OUT/
set -euo pipefail
budget=${1:-840}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
cat /root/parts/gguf.part* > /root/model.gguf
sha256sum /root/model.gguf
mkdir -p /root/stage4
cd "$(dirname "$0")/.."
PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 setsid nohup python3 -m training.uptrain_stage3 \
    --config training/uptrain_stage4_h200.json --gguf /root/model.gguf \
    --adapter data/readers/smollm2-135m-retnet --tag stage4 --data data/build/uptrain/reading \
    --rag data/build/uptrain/data/rag_prompts.json --out /root/stage4 --total-seconds "$budget" \
    > /root/stage4/stdout.txt 2>&1 < /dev/null &
sleep 60
tail -5 /root/stage4/stdout.txt
