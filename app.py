"""Layer Pruning Explorer: the entry point. The landing page (what the tool does, what is loaded, where to go next)
and the navigation to one page per stage of the pipeline."""

import os

# Before torch loads OpenMP: threads that spin while waiting starve each other when the cores are shared (a busy
# machine, a small cloud instance). Setting it here halves the first heatmap's time on a busy 2-core machine; setting
# it in the environment of `streamlit run` (the Makefile, the Dockerfile) does better still (see bench_app.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402

import ui  # noqa: E402
from ui import jobs, state  # noqa: E402
from ui.models import load_checked  # noqa: E402
from ui.widgets import PIPELINE, model_metrics, next_steps  # noqa: E402


def home() -> None:
    ui.page_setup("Layer Pruning Explorer")
    st.markdown(
        "Find the redundant layers of an open-weight language model from the **angular distance** between the "
        "hidden states before and after each block of layers, **remove** the most similar block, **heal** the cut "
        "with LoRA, then **compare** and **evaluate** the result. After Gromov et al., *The Unreasonable "
        "Ineffectiveness of the Deeper Layers* ([arXiv 2403.17887](https://arxiv.org/abs/2403.17887))."
    )
    st.subheader("Loaded model")
    base = state.get("base")
    if base is not None:
        model_metrics(base, "Original")
        pruned = state.get("pruned")
        if pruned is not None:
            model_metrics(pruned, "Pruned")
    else:
        st.info("No model is loaded in this session yet. Load the embedded default here, or pick another model and "
                "the calibration data on the *Model and data* page.")
        autoload = os.environ.get("PRUNE_APP_AUTOLOAD", "default")  # what a new session loads; "" for nothing
        first_visit = not st.session_state.get("home_autoload_started")
        clicked = st.button("Load the default model", key="home_load_default", type="primary", disabled=jobs.busy())
        if clicked or (autoload and first_visit and not jobs.busy()):
            st.session_state["home_autoload_started"] = True
            source = "default" if clicked else autoload
            jobs.start("load", f"Loading the {source} model", load_checked, source,
                       on_done=lambda loaded: state.put("base", loaded))
            if state.get("base") is not None:  # already cached: loaded at once
                st.rerun()
    jobs.panel("load")
    st.subheader("Where to go next")
    next_steps()


pages = [st.Page(home, title="Home", icon=":material/home:", default=True)]
pages += [st.Page(path, title=title, icon=icon) for path, title, icon in PIPELINE]
st.navigation(pages).run()
