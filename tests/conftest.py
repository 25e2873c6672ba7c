"""Shared fixtures. Tiers: unmarked tests run on tiny random models; `integration` on the real default model;
`app` through Streamlit's AppTest; `browser` in headless Chromium. `make test` runs them all."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def default_model():
    """The embedded SmolLM2-135M-Instruct, loaded once per test session. Never mutate it."""
    from prune_core.models import load_model

    return load_model("default", device="cpu")


@pytest.fixture()
def tiny_llama():
    """A fresh tiny random llama model and its byte-level tokenizer."""
    from prune_core.testing import tiny_model, tiny_tokenizer

    return tiny_model("llama"), tiny_tokenizer()
