"""Streamlit helpers of the Layer Pruning Explorer app: session state, background jobs, cached loaders, widgets.

Nothing here computes results: every action calls ``prune_core``.
"""

from __future__ import annotations

import streamlit as st

# transformers resolves its names lazily, and two threads resolving them at once can fail ("cannot import name
# 'AutoConfig'"): resolve the ones the app uses here, on the script thread, before any job thread starts.
from transformers import (  # noqa: F401
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from ui import jobs


def page_setup(title: str, icon: str = ":material/layers:") -> None:
    """Page config, then the outcome of a finished background job, then the title."""
    st.set_page_config(page_title=f"{title} · Layer Pruning Explorer", page_icon=icon, layout="wide")
    jobs.collect()
    st.title(title)


def require_model():
    """The session's base model; without one, offer to load the default (or pick another) and stop the page."""
    from ui import state
    from ui.models import load_checked

    base = state.get("base")
    if base is not None:
        return base
    st.info("Load a model first: the embedded default here, or another one on the *Model and data* page.")
    if st.button("Load the default model", key="require_load_default", type="primary", disabled=jobs.busy()):
        jobs.start("load", "Loading the default model", load_checked, "default",
                   on_done=lambda loaded: state.put("base", loaded))
        if state.get("base") is not None:  # already cached: loaded at once
            st.rerun()
    jobs.panel("load")
    st.page_link("pages/1_Model_and_data.py", label="Go to Model and data", icon=":material/arrow_forward:")
    st.stop()


def runs_dir() -> str:
    """Where the app proposes to write runs and saved models: ``$PRUNE_APP_RUNS`` or ``runs`` (gitignored)."""
    import os

    return os.environ.get("PRUNE_APP_RUNS") or "runs"


def session_tag() -> str:
    """A short random id of this browser session, for default folder names that never collide between sessions."""
    import uuid

    if "session_tag" not in st.session_state:
        st.session_state["session_tag"] = uuid.uuid4().hex[:8]
    return st.session_state["session_tag"]
