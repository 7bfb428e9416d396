#!/usr/bin/env bash
# A reading stage of the SmolLM2 reader on the lent H200 (issue 12), started by the last of three device
# calls: stage 4 by default; TAG=stage5 CONFIG=training/uptrain_stage5_h200.json DATA=data/build/uptrain/reading_v5
# for the next one. It trains on from the shipped reader (data/readers/smollm2-135m-retnet).
# The GGUF travels in pieces (64 MiB tree limit) that earlier calls left in /root/parts; the reading
# data in $DATA (carried). Runs detached (setsid) so later calls can poll it.
#   bash scripts/uptrain_reading_device.sh SECONDS
# Poll in the very next call (a machine goes back 30 s after a call ends), and bring the newest
# checkpoint home every time (the run saves adapter_$TAG/ every save_every_s). Wait for the end with
# `pgrep -f "m training[.]uptrain_stage3"` (a bare pattern also matches the poll's own command line):
#   sleep 540; cp -r /root/$TAG/adapter_$TAG /root/$TAG/log.txt /root/$TAG/metrics.json $OUT/
set -euo pipefail
budget=${1:-840}
TAG=${TAG:-stage4}
CONFIG=${CONFIG:-training/uptrain_stage4_h200.json}
DATA=${DATA:-data/build/uptrain/reading}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
cat /root/parts/gguf.part* > /root/model.gguf
sha256sum /root/model.gguf
mkdir -p "/root/$TAG"
cd "$(dirname "$0")/.."
PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 setsid nohup python3 -m training.uptrain_stage3 \
    --config "$CONFIG" --gguf /root/model.gguf \
    --adapter data/readers/smollm2-135m-retnet --tag "$TAG" --data "$DATA" \
    --rag data/build/uptrain/data/rag_prompts.json --out "/root/$TAG" --total-seconds "$budget" \
    > "/root/$TAG/stdout.txt" 2>&1 < /dev/null &
sleep 60
tail -5 "/root/$TAG/stdout.txt"
