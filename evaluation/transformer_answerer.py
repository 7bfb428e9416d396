"""The Transformer baseline as a reader: answers an evaluation episode exactly as the RetNet reader does.

Same prompt (``app.prompt.encode_turn``, first turn, no instructions), same greedy decoding,
same end of answer (the stop tokens and stop strings of ``app.prompt.stop_conventions``, text
through ``retnet.generation.StopTextBuffer``, then stripped, as ``app.decoder.AnswerStream``
does). Only the model differs, so the scores of the two are comparable:

    reader = TransformerAnswerer("runs/transformer/last")
    text, prompt_tokens = reader.answer(question, passages, layout="qpq", max_new_tokens=48)
"""

from __future__ import annotations

from pathlib import Path

import torch

from app import prompt as L
from app.errors import ModelNotFoundError
from retnet import CheckpointError, load_tokenizer
from retnet.generation import StopTextBuffer
from training.transformer import TransformerForCausalLM


class TransformerAnswerer:
    name = "transformer"

    def __init__(self, model_dir: str | Path, device: str = "cpu"):
        path = Path(model_dir).expanduser()
        # Weights may be stored in bf16; CPUs compute far faster in float32 (as app.encoder.load_model does).
        dtype = torch.float32 if torch.device(device).type == "cpu" else None
        try:
            self.model = TransformerForCausalLM.from_pretrained(path, device=device, dtype=dtype)
        except CheckpointError as e:
            raise ModelNotFoundError(f"cannot load the Transformer baseline in {path}: {e}") from None
        self.tokenizer = load_tokenizer(path)
        if self.tokenizer is None:
            raise ModelNotFoundError(f"{path} has no tokenizer.json; a model directory needs its tokenizer")
        self.stops = L.stop_conventions(self.tokenizer)

    def answer(self, question: str, passages: list, layout: str, max_new_tokens: int) -> tuple[str, int]:
        """Greedy answer text and the number of prompt tokens."""
        prompt = L.encode_turn(self.tokenizer, question, passages, layout=layout).prompt_ids
        text = StopTextBuffer(self.tokenizer, self.stops.stop_strings)
        for tok in self.model.greedy_tokens(prompt, max_new_tokens, self.stops.stop_token_ids):
            text.push(tok)
            if text.stopped:
                break
        return text.text.strip(), len(prompt)
