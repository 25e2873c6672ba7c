"""Evaluate: held-out loss, the capital-city probe and multiple-choice questions on the original, pruned and healed
models; the sweep of quality against the fraction of layers removed (the paper's figures)."""

import streamlit as st

import ui
from prune_core.heal import PRESETS
from prune_core.sweep import STRATEGIES, SweepConfig, available_metrics, resolve_ns, run_sweep, sweep_figure
from ui import jobs, state
from ui.evaluation import TASKS, results_table, run_evaluations
from ui.uploads import UPLOAD_LIMIT_MB, save_upload

MC_SETS = {"upload": "A .jsonl file (question, choices, answer)", "mmlu": "MMLU (cais/mmlu, 5-shot, from the Hub)",
           "boolq": "BoolQ (google/boolq, from the Hub)"}

ui.page_setup("Evaluate")
base = ui.require_model()
data = state.data_settings()


def mc_spec() -> str | None:
    """The question set for multiple choice: a hub set's name or the path of an uploaded file."""
    kind = st.selectbox("Question set", list(MC_SETS), format_func=MC_SETS.get, key="eval_mc_set")
    if kind != "upload":
        return kind
    upload = st.file_uploader(f"Questions (at most {UPLOAD_LIMIT_MB} MB)", type=["jsonl"],
                              max_upload_size=UPLOAD_LIMIT_MB, key="eval_mc_file")
    if upload is None:
        return None
    try:
        return str(save_upload(upload.name, upload.getvalue()))
    except ValueError as err:
        st.error(str(err))
        return None


# ---- Models side by side
st.header("Models")
available = {label: m for label, m in (("original", base), ("pruned", state.get("pruned")),
                                       ("healed", state.get("healed"))) if m is not None}
chosen = st.multiselect("Models", list(available), default=list(available), key="eval_models")
tasks = st.multiselect("Evaluations", list(TASKS), default=["loss", "probe"], format_func=TASKS.get, key="eval_tasks")
cols = st.columns(3)
n_samples = cols[0].number_input("Loss: samples", 1, 10_000, data["n_samples"], key="eval_n_samples")
probe_limit = cols[1].number_input("Probe: questions", 1, 1000, 100, key="eval_probe_limit")
mc_limit = cols[2].number_input("Multiple choice: questions (per subject)", 1, 100_000, 50, key="eval_mc_limit")
mc = mc_spec() if "mc" in tasks else None
st.caption(f"The loss uses the *eval* split of **{data['source'].describe()}**, disjoint from the calibration and "
           "healing text; it is also shown divided by log(vocabulary size), as in the paper.")
ready = bool(chosen and tasks) and ("mc" not in tasks or mc is not None)
if st.button("Evaluate", key="eval_run", type="primary", disabled=jobs.busy() or not ready):
    settings = dict(data, n_samples=int(n_samples), probe_limit=int(probe_limit), mc=mc, mc_limit=int(mc_limit))
    jobs.start("evaluate", "Evaluating", run_evaluations, {k: available[k] for k in chosen}, tasks, settings,
               on_done=lambda results: state.put("evals", results))
jobs.panel("evaluate")
results = state.get("evals")
if results is not None:
    st.dataframe(results_table(results), hide_index=True)

# ---- Sweep
st.header("Sweep: quality against the fraction of layers removed")
similarity = state.get("similarity")
strategies = st.multiselect("Strategies", STRATEGIES, default=STRATEGIES if similarity else ["deepest"],
                            key="sweep_strategies", help="similarity needs the result of the Similarity page")
fractions = st.multiselect("Fractions of layers to remove", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                           default=[0.1, 0.2, 0.3], key="sweep_fractions")
cols = st.columns(3)
heal_preset = cols[0].selectbox("Heal every point", ["no", *PRESETS], key="sweep_heal")
heal_steps = cols[1].number_input("Healing steps", 1, 100_000, PRESETS["quick-cpu"].steps, key="sweep_heal_steps",
                                  disabled=heal_preset == "no")
folder = cols[2].text_input("Sweep folder (finished points are reused)", value=f"{ui.runs_dir()}/sweep-"
                            f"{ui.session_tag()}", key="sweep_dir")
if st.button("Run the sweep", key="sweep_run", disabled=jobs.busy() or not strategies or not fractions):
    try:
        config = SweepConfig(ns=tuple(resolve_ns(base.num_layers, fractions=fractions)), strategies=tuple(strategies),
                             eval_source=data["source"], eval_samples=int(n_samples), max_length=data["max_length"],
                             batch_size=data["batch_size"], probe_limit=int(probe_limit),
                             heal_preset=None if heal_preset == "no" else heal_preset,
                             heal_steps=None if heal_preset == "no" else int(heal_steps))
    except ValueError as err:
        st.error(str(err))
    else:
        jobs.start("sweep", "Sweeping", run_sweep, base.model, base.tokenizer, similarity, config, out_dir=folder,
                   on_done=lambda frame: state.put("sweep", frame))
jobs.panel("sweep")
frame = state.get("sweep")
if frame is not None:
    metric = st.selectbox("Metric", available_metrics(frame), key="sweep_metric")
    st.plotly_chart(sweep_figure(frame, metric), key="sweep_figure")
    st.dataframe(frame, hide_index=True)
