"""Similarity: the angular distance between x^(l) and x^(l+n) for every block, and the block to drop for each n."""

import streamlit as st

import ui
from prune_core.plots import heatmap_figure, min_distance_figure
from prune_core.prune import block_size
from prune_core.similarity import METRICS, compute_similarity
from ui import jobs, state
from ui.widgets import layer_list

ui.page_setup("Similarity")
base = ui.require_model()
data = state.data_settings()
st.caption(f"Model **{base.name}** ({base.num_layers} layers) · calibration **{data['source'].describe()}**, "
           f"{data['n_samples']} samples x {data['max_length']} tokens. Change them on the *Model and data* page.")

metric = st.selectbox("Distance", METRICS, key="sim_metric")
if st.button("Compute similarity", key="sim_run", type="primary", disabled=jobs.busy()):
    jobs.start("similarity", "Computing layer similarity", compute_similarity, base.model, base.tokenizer,
               data["source"], metric=metric, n_samples=data["n_samples"], max_length=data["max_length"],
               batch_size=data["batch_size"], on_done=lambda result: state.put("similarity", result))
jobs.panel("similarity")

result = state.get("similarity")
if result is None:
    st.info("Compute the similarity to see which blocks of layers change the hidden state least.")
    st.stop()

normalize = st.toggle("Normalise each row to [0, 1] (as in the paper's Fig. 4)", value=True, key="sim_normalize")
st.plotly_chart(heatmap_figure(result, normalize=normalize), key="sim_heatmap")
st.plotly_chart(min_distance_figure(result), key="sim_min_distance")

st.subheader("Which layers to drop")
L = result.num_layers
by = st.radio("Choose the block size", ["layers", "fraction"], horizontal=True, key="sim_by",
              format_func={"layers": "by number of layers", "fraction": "by fraction of the model"}.get)
if by == "layers":
    n = st.slider("Layers to remove (n)", 1, L - 1, st.session_state.get("block_n", max(1, L // 4)), key="sim_n")
else:
    frac = st.slider("Fraction of layers to remove", 0.05, 0.95, 0.25, 0.05, key="sim_fraction")
    n = min(L - 1, block_size(L, fraction=frac))
st.session_state["block_n"] = n
layers = result.best_layers(n)
st.success(f"Dropping **{n}** of {L} layers ({n / L:.0%}): the best block starts at l* = {result.best_start(n)} and "
           f"removes layers **{layer_list(layers)}** (0-based).")
st.page_link("pages/3_Prune.py", label="Prune this block", icon=":material/content_cut:")
with st.expander("l*(n) for every n"):
    st.dataframe(result.best_table(), hide_index=True, key="sim_table")
