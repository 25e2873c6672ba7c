"""Compare: the same prompt to the original, pruned and healed models, side by side, with latency and speed."""

import streamlit as st

import ui
from prune_core.generate import compare_generations
from ui import jobs, state

READY_PROMPTS = [
    "The capital of France is",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain in two sentences why the sky is blue.",
    "Once upon a time, in a small village by the sea,",
]

ui.page_setup("Compare")
base = ui.require_model()
models = {label: m for label, m in (("original", base), ("pruned", state.get("pruned")),
                                    ("healed", state.get("healed"))) if m is not None}
if len(models) == 1:
    st.info("Only the original model is loaded: prune it (and heal it) to compare the versions side by side.")
    st.page_link("pages/3_Prune.py", label="Go to Prune", icon=":material/content_cut:")

choice = st.selectbox("Prompt", [*READY_PROMPTS, "Custom..."], key="compare_prompt")
prompt = st.text_area("Your prompt", key="compare_custom") if choice == "Custom..." else choice
max_new_tokens = st.slider("New tokens", 8, 256, 48, key="compare_tokens")
if st.button("Generate", key="compare_run", type="primary", disabled=jobs.busy() or not prompt.strip()):
    jobs.start("compare", "Generating", compare_generations,
               {k: (m.model, m.tokenizer) for k, m in models.items()}, [prompt], max_new_tokens=max_new_tokens,
               on_done=lambda rows: st.session_state.update(compare_rows=rows))
jobs.panel("compare")
