"""Shared fixtures."""

from __future__ import annotations

import pytest

from retnet import RetNetForCausalLM
from tests.helpers import make_model


@pytest.fixture
def tiny_model() -> RetNetForCausalLM:
    return make_model()
