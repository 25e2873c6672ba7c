"""Per-session state: which model, data, similarity result, pruned and healed models this browser session holds.

The base model comes from a process-wide cache shared by every session and is never mutated; the pruned and
healed models belong to one session and are dropped (and their memory freed) when replaced. Setting an earlier
stage clears the stages built on it, so a page never shows a pruned model of a different base.
"""

from __future__ import annotations

import gc
from typing import Any

import streamlit as st

STAGES = ("base", "data", "similarity", "pruned", "heal_result", "healed", "compare", "evals", "sweep")
# What each stage was built on: replacing a stage drops these dependents.
DEPENDENTS = {
    "base": ("similarity", "pruned", "heal_result", "healed", "compare", "evals", "sweep"),
    "data": ("similarity",),
    "similarity": ("sweep",),
    "pruned": ("heal_result", "healed", "compare", "evals"),
    "heal_result": ("healed", "compare", "evals"),
    "healed": ("compare", "evals"),
    "compare": (),
    "evals": (),
    "sweep": (),
}
MODEL_STAGES = {"base", "pruned", "heal_result", "healed"}  # stages that hold model weights
PAGES = {
    "base": ("pages/1_Model_and_data.py", "Model and data"),
    "data": ("pages/1_Model_and_data.py", "Model and data"),
    "similarity": ("pages/2_Similarity.py", "Similarity"),
    "pruned": ("pages/3_Prune.py", "Prune"),
    "heal_result": ("pages/4_Heal.py", "Heal"),
    "healed": ("pages/4_Heal.py", "Heal"),
    "compare": ("pages/5_Compare.py", "Compare"),
    "evals": ("pages/6_Evaluate.py", "Evaluate"),
    "sweep": ("pages/6_Evaluate.py", "Evaluate"),
}


def get(stage: str) -> Any:
    """The session's object for ``stage`` (one of STAGES), or None."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
    return st.session_state.get(stage)


def put(stage: str, value: Any) -> None:
    """Set ``stage`` and drop the stages that were built on the old value; frees their memory."""
    get(stage)  # validates the name
    dropped = [key for key in (stage, *DEPENDENTS[stage]) if st.session_state.get(key) is not None]
    for key in DEPENDENTS[stage]:
        st.session_state.pop(key, None)
    st.session_state[stage] = value
    if MODEL_STAGES.intersection(dropped):
        gc.collect()  # models hold reference cycles: free their memory now (a full collection takes ~0.3 s)


def require(stage: str, what: str) -> Any:
    """Return the session's ``stage`` object, or explain what to do first (with a link) and stop the page."""
    value = get(stage)
    if value is None:
        page, label = PAGES[stage]
        st.info(f"{what} first.")
        st.page_link(page, label=f"Go to {label}", icon=":material/arrow_forward:")
        st.stop()
    return value


def data_settings() -> dict:
    """The session's calibration settings ``dict(source, n_samples, max_length, batch_size)``, or this machine's
    safe defaults on the first built-in corpus."""
    settings = get("data")
    if settings is None:
        from prune_core.data import BUILTIN_SOURCES, parse_source
        from prune_core.system import safe_defaults

        d = safe_defaults()
        settings = dict(source=parse_source(BUILTIN_SOURCES[0]), n_samples=d["n_samples"],
                        max_length=d["max_length"], batch_size=d["batch_size"])
    return settings
