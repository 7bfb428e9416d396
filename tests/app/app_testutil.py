"""Helpers for the app tests: tiny models, tokenizers with markers, sample documents, scripted decoding,
a hand-written PDF."""

from __future__ import annotations

import torch

from app import prompt as L
from tests.helpers import byte_tokenizer, make_model

DOCS = {
    "rsync.txt": "Rsync copies files between machines. The -r option copies directories recursively. "
                 "The -n option performs a dry run that changes nothing.\n\n"
                 "The --delete option removes files on the receiver that the sender does not have.",
    "gzip.md": "# Gzip\n\nGzip compresses files with Lempel-Ziv coding. The -d option decompresses. "
               "The -k option keeps the input files.",
    "tar.txt": "Tar stores many files in one archive. The -x option extracts an archive and -c creates one. "
               "The -z option filters the archive through gzip.",
}


def special_tokenizer():
    """The byte tokenizer plus the layout's markers as special tokens (ids 256..)."""
    tok = byte_tokenizer()
    tok.add_special_tokens(list(L.MARKERS))
    return tok


def tiny_model(vocab_size: int = 256, seed: int = 0, **overrides):
    return make_model(seed=seed, dtype=torch.float32, vocab_size=vocab_size, **overrides)


def scripted_tokens(monkeypatch, ids):
    """Make the decode loop (retnet.generation.DecodeLoop, which the app's decoder runs) sample exactly
    ``ids`` (then repeat the last one)."""
    import retnet.generation as G

    seq = list(ids)
    calls = {"n": 0}

    def fake_next_token(logits, cfg, generated=None, generator=None):
        i = min(calls["n"], len(seq) - 1)
        calls["n"] += 1
        return torch.tensor([seq[i]])

    monkeypatch.setattr(G, "next_token", fake_next_token)
    return calls


def text_pdf(pages: list[str]) -> bytes:
    """A minimal PDF, written by hand: page i shows ``pages[i]`` (one line per newline) in Helvetica."""
    objs: list[bytes] = []
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        lines = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in text.split("\n")]
        ops = " ".join(f"({ln}) Tj T*" for ln in lines)
        content = f"BT /F1 11 Tf 14 TL 72 740 Td {ops} ET".encode("latin-1")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
                    "/Resources << /Font << /F1 3 0 R >> >> >>".encode())
        objs.append(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
