"""Fixtures for tests/retnet: converted weights are cached in a temporary folder, never in ~/.cache;
Triton's interpreter refuses the tl.dot shapes that compiled Triton refuses."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _conversion_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RETNET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "retnet-cache"))


def _nvidia_min_dot_size(lhs_type, rhs_type):
    """(M, N, K) lower bounds of a compiled tl.dot, as in Triton 3.6's backends/nvidia/compiler.py."""
    return (1, 1, 32 if lhs_type.scalar.primitive_bitwidth == 8 else 16)


@pytest.fixture(autouse=True)
def _compiled_dot_limits(monkeypatch):
    """The interpreter (TRITON_INTERPRET=1, how CPU runs test the kernels) accepts a tl.dot of any shape;
    compiled Triton 3.6 on an NVIDIA GPU wants inner dimensions >= 16. Hold the interpreter to the GPU's
    rule so that a tiling the GPU cannot compile fails on CPU too."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    monkeypatch.setitem(interpreter.interpreter_builder.codegen_fns, "min_dot_size", _nvidia_min_dot_size)
