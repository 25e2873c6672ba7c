"""Evaluate: held-out loss, the capital-city probe and multiple-choice questions on the original, pruned and
healed models."""

import streamlit as st

import ui
from ui import jobs, state
from ui.evaluation import TASKS, results_table, run_evaluations
from ui.uploads import UPLOAD_LIMIT_MB, save_upload

ui.page_setup("Evaluate")
base = ui.require_model()
available = {label: m for label, m in (("original", base), ("pruned", state.get("pruned")),
                                       ("healed", state.get("healed"))) if m is not None}
data = state.data_settings()

chosen = st.multiselect("Models", list(available), default=list(available), key="eval_models")
tasks = st.multiselect("Evaluations", list(TASKS), default=["loss", "probe"], format_func=TASKS.get, key="eval_tasks")
cols = st.columns(3)
n_samples = cols[0].number_input("Loss: samples", 1, 10_000, data["n_samples"], key="eval_n_samples")
probe_limit = cols[1].number_input("Probe: questions", 1, 1000, 100, key="eval_probe_limit")
mc_path = None
if "mc" in tasks:
    upload = st.file_uploader(f"Questions (.jsonl with question, choices, answer; at most {UPLOAD_LIMIT_MB} MB)",
                              type=["jsonl"], max_upload_size=UPLOAD_LIMIT_MB, key="eval_mc_file")
    if upload is not None:
        try:
            mc_path = str(save_upload(upload.name, upload.getvalue()))
        except ValueError as err:
            st.error(str(err))
st.caption(f"The loss uses the *eval* split of **{data['source'].describe()}**, disjoint from the calibration and "
           "healing text; it is also shown divided by log(vocabulary size), as in the paper.")

if st.button("Evaluate", key="eval_run", type="primary", disabled=jobs.busy() or not chosen or not tasks):
    settings = dict(data, n_samples=int(n_samples), probe_limit=int(probe_limit), mc_path=mc_path)
    jobs.start("evaluate", "Evaluating", run_evaluations, {k: available[k] for k in chosen}, tasks, settings,
               on_done=lambda results: state.put("evals", results))
jobs.panel("evaluate")

results = state.get("evals")
if results is not None:
    st.subheader("Results")
    st.dataframe(results_table(results), hide_index=True, key="eval_table")
