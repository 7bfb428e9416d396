"""Check a shipped uptraining adapter on this machine: base GGUF + adapter -> retention model.

    python -m training.uptrain_eval --gguf PATH --adapter DIR --data DIR [--rows 4 --seq-len 512]

Loads the base from the GGUF, puts the adapter on it (unmerged: the teacher reads the LoRA
wrappers' base weights, so merging would change the teacher too), and reports: the three retention
forms' agreement in float32 (parallel vs chunkwise with odd chunks vs recurrent, PyTorch reference
on the CPU), and held-out cross-entropy of teacher and student on the first rows of eval.npy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from training.adapter import load_adapter
from training.uptrain import TokenStream, forms_agreement, held_out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--adapter", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    args = ap.parse_args(argv)
    from retnet.convert.llama_gguf import from_llama_gguf

    t = time.time()
    model = from_llama_gguf(args.gguf).eval()
    spec = load_adapter(model, args.adapter)
    report = {"load_s": time.time() - t, "adapter": spec.get("info")}
    rows = TokenStream(np.load(args.data / "eval.npy"), args.seq_len, 0).rows(args.rows, "cpu")
    report["forms_fp32"] = forms_agreement(model, rows[:1, :96])
    report["held_out"] = held_out(model, rows, torch.autocast("cpu", enabled=False), batch=2)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
