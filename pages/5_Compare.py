"""Compare: the same prompt to the original, pruned and healed models, side by side, with latency and speed."""

import streamlit as st

import ui
from prune_core.generate import GenerationSettings, compare_generations
from ui import jobs, state

READY_PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain in two sentences why the sky is blue.",
    "Give three tips for a good night's sleep.",
]
CUSTOM = "Custom prompt..."

ui.page_setup("Compare")
base = ui.require_model()
models = {label: m for label, m in (("original", base), ("pruned", state.get("pruned")),
                                    ("healed", state.get("healed"))) if m is not None}
if len(models) == 1:
    st.info("Only the original model is loaded: prune it (and heal it) to compare the versions side by side.")
    st.page_link("pages/3_Prune.py", label="Go to Prune", icon=":material/content_cut:")

choice = st.selectbox("Prompt", [*READY_PROMPTS, CUSTOM], key="compare_prompt")
prompt = st.text_area("Your prompt", key="compare_custom") if choice == CUSTOM else choice
cols = st.columns(3)
max_new_tokens = cols[0].slider("New tokens", 8, 256, 48, key="compare_tokens")
sample = cols[1].toggle("Sample (same seed for every model)", key="compare_sample")
temperature = cols[2].slider("Temperature", 0.1, 1.5, 0.7, key="compare_temperature", disabled=not sample)
if st.button("Generate", key="compare_run", type="primary", disabled=jobs.busy() or not prompt.strip()):
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature)
    jobs.start("compare", "Generating", compare_generations, {k: (m.model, m.tokenizer) for k, m in models.items()},
               [prompt], settings, on_done=lambda rows: state.put("compare", rows))
jobs.panel("compare")

rows = state.get("compare")
if rows:
    st.markdown(f"**Prompt:** {rows[0]['prompt']}")
    for col, row in zip(st.columns(len(rows)), rows, strict=True):
        with col:
            st.subheader(row["model"])
            st.caption(f"{row['num_layers']} layers · {row['num_params'] / 1e6:.1f} M parameters")
            st.markdown(row["text"] or "*(no text)*")
            st.metric("Latency", f"{row['latency_s']:.2f} s")
            st.metric("Tokens / s", f"{row['tokens_per_s']:.1f}", help=f"{row['new_tokens']} new tokens")
