"""Does a model use its context at all? Two teacher-forced probes, no decoding.

    python -m experiments.reading_probe data/model [MORE_MODEL_DIRS ...] --out benchmarks/results

1. Copy: a sequence followed by itself. A model that can copy from context predicts the second
   copy far better than the first (random tokens: first copy ~ln(vocab) nats, second copy near 0
   for a Transformer with induction heads).
2. Passage use: one-fact passages ("Records show that the owner of the boat K41 is Ines Fontaine.")
   and the question about that fact, laid out by app.prompt. The answer's loss is measured with the
   fact's value in the passage, and with another value there instead. A model that reads the
   passage has a much lower loss in the first case; one that guesses has the same loss in both.

RetNet and Transformer-baseline model directories are both accepted.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from app.prompt import LAYOUTS, PassageText, encode_turn
from retnet import RetNetForCausalLM, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]

NAMES = ["Bruno Jovanovic", "Ines Fontaine", "Kira Engel", "Dalia Lund", "Nils Moreau", "Umar Zeller",
         "Greta Novak", "Omar Lindqvist"]


def load(path: Path):
    if json.loads((path / "config.json").read_text()).get("model_type") == "transformer-baseline":
        from training.transformer import TransformerForCausalLM as cls
    else:
        cls = RetNetForCausalLM
    return cls.from_pretrained(path, dtype=torch.float32).eval(), load_tokenizer(path)


@torch.no_grad()
def token_losses(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[None]).logits[0, :-1]
    return F.cross_entropy(logits, ids[1:], reduction="none")


def copy_probe(model, text: np.ndarray, vocab: int, length: int, trials: int, rng) -> dict:
    out = {}
    for kind in ("text", "random"):
        first, second = [], []
        for _ in range(trials):
            if kind == "text":
                start = int(rng.integers(0, len(text) - length))
                seq = torch.from_numpy(text[start : start + length].astype(np.int64))
            else:
                seq = torch.from_numpy(rng.integers(16, vocab, length))
            loss = token_losses(model, torch.cat([seq, seq]))
            first.append(loss[: length - 1].mean().item())
            second.append(loss[length:].mean().item())
        out[kind] = (float(np.mean(first)), float(np.mean(second)))
    return out


def passage_probe(model, tok, layout: str, trials: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    losses = {True: [], False: []}
    for _ in range(trials):
        entity = f"boat {rng.choice('ABCDEFGHKLMNPRST')}{rng.randint(10, 99)}"
        right, wrong = rng.sample(NAMES, 2)
        for holds_answer in (True, False):
            fact = f"Records show that the owner of the {entity} is {right if holds_answer else wrong}."
            turn = encode_turn(tok, f"What is the owner of the {entity}?", [PassageText(fact, "Registry sheet 1")],
                               layout=layout, answer=right)
            ids = torch.tensor(turn.ids)
            target = torch.tensor(turn.target_mask())[1:]
            losses[holds_answer].append(token_losses(model, ids)[target].mean().item())
    return float(np.mean(losses[True])), float(np.mean(losses[False]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--text", type=Path, default=ROOT / "data" / "build" / "pretrain" / "eval.npz",
                    help="held-out token stream for the text copy probe (the corpus builder's pretrain/eval.npz)")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write reading_probe.md here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not a.text.is_file():
        raise SystemExit(f"no token stream at {a.text}: build it with python -m training.corpus.pretrain, "
                         "or pass --text")
    with np.load(a.text) as z:
        text = z["tokens"]
    rows = []
    for path in a.models:
        model, tok = load(path)
        rng = np.random.default_rng(0)
        cells = []
        for length in (50, 200):
            c = copy_probe(model, text, tok.get_vocab_size(), length, a.trials, rng)
            cells += [f"{c['text'][0]:.2f} / {c['text'][1]:.2f}", f"{c['random'][0]:.2f} / {c['random'][1]:.2f}"]
        cells += [" / ".join(f"{x:.2f}" for x in passage_probe(model, tok, layout, a.trials, 0)) for layout in LAYOUTS]
        rows.append(f"| {path} | " + " | ".join(cells) + " |")
    report = "\n".join([
        "# Reading probe: does the model use its context?", "",
        f"Command: `python -m experiments.reading_probe {' '.join(map(str, a.models))}`", "",
        "Copy columns: mean loss (nats) on the first / second copy of a repeated sequence.",
        "Passage columns: answer loss with the fact's value in the passage / with another value there.", "",
        "| model | text 50 | random 50 | text 200 | random 200 | " + " | ".join(f"passage {x}" for x in LAYOUTS) + " |",
        "|---|" + "---:|" * (4 + len(LAYOUTS)), *rows])
    print(report)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "reading_probe.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
