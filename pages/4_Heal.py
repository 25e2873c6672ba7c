"""Heal: LoRA on the feed-forward projections of the pruned model, with a live loss curve; stop, resume, merge."""

import pandas as pd
import streamlit as st

import ui
from prune_core import system
from prune_core.heal import PRESETS, heal, merge_adapter, preset, save_healed
from prune_core.models import LoadedModel
from ui import jobs, state

SETTINGS = ("steps", "lr", "rank", "batch_size", "max_length")

ui.page_setup("Heal")
ui.require_model()
pruned = state.require("pruned", "Prune the model")
data = state.data_settings()


def apply_preset() -> None:
    """Copy the chosen preset's values into the settings widgets."""
    chosen = PRESETS[st.session_state["heal_preset"]]
    for name in SETTINGS:
        st.session_state[f"heal_{name}"] = getattr(chosen, name)


if "heal_preset" not in st.session_state:
    st.session_state["heal_preset"] = system.safe_defaults()["heal_preset"]
    apply_preset()
st.selectbox("Preset", list(PRESETS), key="heal_preset", on_change=apply_preset,
             help="paper: the appendix of Gromov et al. (5000 steps, rank 64); quick-cpu: minutes on a CPU")
cols = st.columns(len(SETTINGS))
cols[0].number_input("Steps", 1, 100_000, key="heal_steps")
cols[1].number_input("Peak learning rate", 1e-7, 0.5, key="heal_lr", format="%.0e")
cols[2].number_input("LoRA rank", 1, 1024, key="heal_rank")
cols[3].number_input("Batch size", 1, 256, key="heal_batch_size")
cols[4].number_input("Tokens per sequence", 8, 8192, key="heal_max_length")
if "heal_dir" not in st.session_state:
    st.session_state["heal_dir"] = f"{ui.runs_dir()}/heal-{ui.session_tag()}"
folder = st.text_input("Run folder (checkpoints, adapter)", key="heal_dir")
st.caption(f"Training text: the *heal* split of **{data['source'].describe()}** (the held-out loss uses its *eval* "
           f"split; the two never overlap).")


def start(resume: bool) -> None:
    try:
        config = preset(st.session_state["heal_preset"],
                        **{name: st.session_state[f"heal_{name}"] for name in SETTINGS})
    except ValueError as err:
        st.error(str(err))
        return
    jobs.start("heal", "Healing", heal, pruned.model, pruned.tokenizer, data["source"], config, output_dir=folder,
               resume=resume, overwrite=not resume, on_done=finished)


def finished(result) -> None:
    result.peft_model = None  # the adapter is on disk; merging reloads it, so free the training copy now
    state.put("heal_result", result)


def live(job) -> None:
    """Loss curve, tokens/s and time left, drawn from the job's progress reports."""
    rows = [dict(step=p.done, loss=p.info["loss"]) for p in job.history if "loss" in p.info]
    if not rows:
        return
    last = job.latest.info
    cols = st.columns(3)
    cols[0].metric("Loss", f"{rows[-1]['loss']:.3f}")
    cols[1].metric("Tokens / s", f"{last.get('tokens_per_s', 0):.0f}")
    cols[2].metric("Time left", f"{last.get('eta_s', 0):.0f} s")
    st.line_chart(pd.DataFrame(rows), x="step", y="loss", height=220)


cols = st.columns(2)
if cols[0].button("Start healing", key="heal_start", type="primary", disabled=jobs.busy()):
    start(resume=False)
if cols[1].button("Resume", key="heal_resume", disabled=jobs.busy(),
                  help="continue from the last checkpoint in the run folder"):
    start(resume=True)
jobs.panel("heal", extra=live)

run = state.get("heal_result")
if run is None:
    st.stop()
st.subheader("Last run")
cols = st.columns(4)
cols[0].metric("Steps", run.global_step)
cols[1].metric("Held-out loss before", f"{run.loss_before:.3f}" if run.loss_before is not None else "-")
cols[2].metric("After", f"{run.loss_after:.3f}" if run.loss_after is not None else "-")
cols[3].metric("Tokens / s", f"{run.tokens_per_s:.0f}")
if run.history:
    st.line_chart(pd.DataFrame(run.history), x="step", y="loss", height=220)
for note in run.notes:
    st.caption(note)
if run.stopped:
    st.info(f"Stopped at step {run.global_step}: *Resume* continues from the checkpoint in {run.output_dir}.")

if st.button("Merge the adapter into the pruned model", key="heal_merge"):
    try:
        with st.spinner("Merging..."):
            merged = merge_adapter(pruned.model, run)
    except (ValueError, FileNotFoundError) as err:
        st.error(str(err))
    else:
        state.put("healed", LoadedModel(merged, pruned.tokenizer, f"{pruned.name}, healed", pruned.source,
                                        notes=[f"LoRA rank {run.config.rank}, {run.global_step} steps"]))
healed = state.get("healed")
if healed is None:
    st.stop()
st.success("The healed model is ready: compare it on the *Compare* page, or save it.")
out = st.text_input("Save to folder", value=f"{folder}/merged", key="heal_save_dir")
overwrite = st.checkbox("Replace the folder's contents", key="heal_overwrite")
if st.button("Save", key="heal_save"):
    try:
        with st.spinner("Saving..."):
            path = save_healed(healed.model, healed.tokenizer, out, run, overwrite=overwrite)
    except (ValueError, OSError) as err:
        st.error(str(err))
    else:
        st.success(f"Saved to {path}")
st.page_link("pages/5_Compare.py", label="Next: compare generations", icon=":material/arrow_forward:")
