"""Shared fixtures."""

from __future__ import annotations

import pytest

from helpers import make_model
from retnet import RetNetForCausalLM


@pytest.fixture
def tiny_model() -> RetNetForCausalLM:
    return make_model()
