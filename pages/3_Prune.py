"""Prune: remove the most similar block, the deepest layers (the paper's simple heuristic) or a manual range."""

import streamlit as st

import ui
from prune_core.export import similarity_card
from prune_core.models import LoadedModel
from prune_core.prune import drop_layers, mergekit_config, parse_layer_spec, prune_info, save_model, select_layers
from ui import state
from ui.widgets import before_after, layer_list

METHODS = {"similarity": "Most similar block (needs the similarity)", "deepest": "Deepest layers except the last",
           "manual": "Manual list"}



ui.page_setup("Prune")
base = ui.require_model()
L = base.num_layers
result = state.get("similarity")

method = st.radio("What to remove", list(METHODS), format_func=METHODS.get, key="prune_method",
                  index=0 if result is not None else 1)
n, manual = None, None
if method == "manual":
    spec = st.text_input("Layers (0-based, ranges inclusive)", placeholder=f"e.g. {L // 2}-{L // 2 + 2}",
                         key="prune_manual")
    try:
        manual = parse_layer_spec(spec)
    except ValueError as err:
        st.error(str(err))
        st.stop()
else:
    n = st.slider("Layers to remove (n)", 1, L - 1, min(st.session_state.get("block_n", max(1, L // 4)), L - 1),
                  key="prune_n")
    if method == "similarity" and result is None:
        st.info("The most similar block comes from the similarity result: compute it first.")
        st.page_link("pages/2_Similarity.py", label="Go to Similarity", icon=":material/arrow_forward:")
        st.stop()
    if method == "deepest":
        st.caption("The paper's heuristic needs healing afterwards: without it the model collapses quickly.")
try:
    layers = select_layers(L, method, n=n, layers=manual, result=result) if method != "manual" or manual else []
except ValueError as err:
    st.error(str(err))
    st.stop()
st.markdown(f"Removes **{len(layers)}** of {L} layers: **{layer_list(layers)}**")

if st.button("Prune", key="prune_run", type="primary", disabled=not layers):
    try:
        with st.spinner("Copying the kept layers..."):
            model = drop_layers(base.model, layers, method=method)
    except ValueError as err:
        st.error(str(err))
    else:
        state.put("pruned", LoadedModel(model, base.tokenizer, f"{base.name}, {len(layers)} layers removed",
                                        base.source, notes=[f"removed layers {layer_list(layers)} ({method})"]))
        st.session_state["prune_card"] = similarity_card(result, layers) if method == "similarity" else {}

pruned = state.get("pruned")
if pruned is None:
    st.stop()
info = prune_info(pruned.model)
st.subheader("Pruned model")
st.markdown(f"Removed (original numbering): **{layer_list(info['removed_layers'])}** · method: {info['method']}")
before_after(base, pruned)

yaml = mergekit_config(info["base_model"] or base.source, info["base_num_layers"], info["removed_layers"])
cols = st.columns(2)
with cols[0]:
    folder = st.text_input("Save to folder", value=f"{ui.runs_dir()}/pruned-{ui.session_tag()}", key="prune_folder")
    overwrite = st.checkbox("Replace the folder's contents", key="prune_overwrite")
    if st.button("Save", key="prune_save"):
        try:
            with st.spinner("Saving..."):
                out = save_model(pruned.model, pruned.tokenizer, folder, overwrite=overwrite,
                                 card=st.session_state.get("prune_card"))
                (out / "mergekit.yml").write_text(yaml)
        except (ValueError, OSError) as err:
            st.error(str(err))
        else:
            st.success(f"Saved to {out}")
with cols[1]:
    st.download_button("Download the mergekit configuration", yaml, file_name="prune.yml", mime="text/yaml",
                       key="prune_mergekit")
    st.code(yaml, language="yaml")
st.page_link("pages/4_Heal.py", label="Next: heal the cut", icon=":material/arrow_forward:")
