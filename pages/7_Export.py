"""Export: save the pruned or healed model as a Hugging Face folder (with its card) and push it to the Hub."""

import streamlit as st

import ui
from prune_core.export import push_to_hub
from prune_core.prune import save_model
from ui import state

ui.page_setup("Export")
ui.require_model()
choices = {name: state.get(name) for name in ("healed", "pruned") if state.get(name) is not None}
if not choices:
    st.info("Nothing to export yet: prune the model first (and heal it, if you like).")
    st.page_link("pages/3_Prune.py", label="Go to Prune", icon=":material/arrow_forward:")
    st.stop()

which = st.radio("Model", list(choices), format_func=str.capitalize, horizontal=True, key="export_which")
loaded = choices[which]
st.caption(loaded.name)

folder = st.text_input("Folder", value=f"{ui.runs_dir()}/{which}-{ui.session_tag()}", key="export_folder")
overwrite = st.checkbox("Replace the folder's contents", key="export_overwrite")
if st.button("Save", key="export_save"):
    try:
        with st.spinner("Saving..."):
            out = save_model(loaded.model, loaded.tokenizer, folder, overwrite=overwrite)
    except (ValueError, OSError) as err:
        st.error(str(err))
    else:
        st.session_state["export_saved"] = str(out)
        st.success(f"Saved to {out} (safetensors, config, tokenizer, model card)")

st.subheader("Push to the Hugging Face Hub")
saved = st.session_state.get("export_saved")
if not saved:
    st.info("Save the model to a folder first.")
    st.stop()
repo_id = st.text_input("Repository id", placeholder="your-name/model-pruned", key="export_repo")
# The token is used for this push only: not kept in a file, not logged (empty: HF_TOKEN or a stored login).
token = st.text_input("Access token (write)", type="password", key="export_token")
private = st.checkbox("Private repository", value=True, key="export_private")
if st.button("Push", key="export_push", disabled=not repo_id):
    try:
        with st.spinner(f"Uploading {saved}..."):
            url = push_to_hub(saved, repo_id, token=token or None, private=private)
    except (ValueError, ConnectionError, OSError) as err:
        st.error(str(err))
    else:
        st.success(f"Pushed: {url}")
