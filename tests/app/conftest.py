"""AppTest set-up: the app's folder on sys.path (as `streamlit run` has it) and fresh caches for every test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import streamlit as st

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, Path(__file__).parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(autouse=True)
def no_autoload(monkeypatch):
    """A new session loads nothing by itself here (the app loads the default model on a first visit otherwise);
    test_landing_autoloads_the_configured_model turns it back on."""
    monkeypatch.setenv("PRUNE_APP_AUTOLOAD", "")


@pytest.fixture(autouse=True)
def clear_caches():
    """Fresh Streamlit caches for every test (base models, configs)."""
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()
