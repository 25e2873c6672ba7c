"""Model and data: choose the model to prune and the calibration text the similarity is measured on."""

import streamlit as st

import ui
from prune_core import system
from prune_core.data import BUILTIN_SOURCES, parse_source
from prune_core.testing import TINY_ARCHITECTURES
from ui import jobs, state
from ui.models import SOURCE_KINDS, device_choices, estimate_bytes, load_checked, source_string
from ui.uploads import UPLOAD_LIMIT_MB, UPLOAD_TYPES, save_upload
from ui.widgets import model_metrics

ui.page_setup("Model and data")

info = system.machine_info()
defaults = system.safe_defaults(info)
st.caption(f"This machine: {info['cpus']} CPU cores, {system.format_bytes(info['available_memory_bytes'])} of "
           f"{system.format_bytes(info['total_memory_bytes'])} RAM free, "
           f"{len(info['gpus'])} GPU(s). Models over {system.format_bytes(defaults['max_model_bytes'])} are "
           "not advised here (the session also holds a pruned copy).")

# ---- Model
st.header("Model")
kind = st.radio("Source", list(SOURCE_KINDS), format_func=SOURCE_KINDS.get, horizontal=True, key="model_kind")
value = ""
if kind == "hub":
    value = st.text_input("Hub id", placeholder="HuggingFaceTB/SmolLM2-360M", key="model_hub")
elif kind == "folder":
    value = st.text_input("Folder with config.json and safetensors", key="model_folder")
elif kind == "gguf":
    value = st.text_input("Path to a .gguf file", key="model_gguf")
elif kind == "tiny":
    value = st.selectbox("Family", TINY_ARCHITECTURES, key="model_tiny")
cols = st.columns(3)
device = cols[0].selectbox("Device", device_choices(), key="model_device")
dtype = cols[1].selectbox("Precision", ["auto", "float32", "bfloat16", "float16"], key="model_dtype")
in_4bit = cols[2].checkbox("Load in 4-bit (CUDA)", key="model_4bit", disabled=device != "cuda")

if st.button("Load model", key="model_load", type="primary", disabled=jobs.busy()):
    try:
        source = source_string(kind, value)
    except ValueError as err:
        st.error(str(err))
    else:
        jobs.start("load", f"Loading {source}", load_checked, source, device, None if dtype == "auto" else dtype,
                   in_4bit and device == "cuda", on_done=lambda loaded: state.put("base", loaded))
jobs.panel("load")

base = state.get("base")
if base is not None:
    model_metrics(base, "Loaded")
    dtype_name = str(base.dtype).replace("torch.", "")
    need = estimate_bytes(base.source, base.device.type, dtype_name, bool(getattr(base.model, "is_loaded_in_4bit", 0)))
    st.caption(f"Memory check before loading: {system.format_bytes(need)} of weights estimated from the config, "
               f"{system.format_bytes(system.memory_budget(info, base.device.type))} available.")

# ---- Calibration data
st.header("Calibration data")
current = state.data_settings()
data_kind = st.radio("Text", ["builtin", "upload", "hub"], horizontal=True, key="data_kind",
                     format_func={"builtin": "Built-in corpus", "upload": "Upload a file",
                                  "hub": "Hugging Face dataset"}.get)
spec, column, config, split = None, None, None, None
if data_kind == "builtin":
    spec = st.selectbox("Corpus", BUILTIN_SOURCES, key="data_builtin")
elif data_kind == "upload":
    upload = st.file_uploader(f"A .txt, .jsonl or .csv file (at most {UPLOAD_LIMIT_MB} MB)", type=list(UPLOAD_TYPES),
                              max_upload_size=UPLOAD_LIMIT_MB, key="data_upload")
    column = st.text_input("Text column (.jsonl / .csv)", value="text", key="data_column")
    if upload is not None:
        try:
            spec = str(save_upload(upload.name, upload.getvalue()))
        except ValueError as err:
            st.error(str(err))
else:
    name = st.text_input("Dataset id", placeholder="allenai/c4", key="data_hub")
    spec = f"hf:{name.strip()}" if name.strip() else None
    cols = st.columns(3)
    column = cols[0].text_input("Column", value="text", key="data_hub_column")
    config = cols[1].text_input("Config", value="", key="data_hub_config") or None
    split = cols[2].text_input("Split", value="", key="data_hub_split") or None

cols = st.columns(3)
n_samples = cols[0].number_input("Samples", 1, 10_000, current["n_samples"], key="data_n_samples")
max_length = cols[1].number_input("Tokens per sample", 8, 8192, current["max_length"], key="data_max_length")
batch_size = cols[2].number_input("Batch size", 1, 256, current["batch_size"], key="data_batch_size")
if st.button("Use this data", key="data_apply", disabled=spec is None):
    try:
        source = parse_source(spec, column=column or None, config=config, split=split)
    except (ValueError, FileNotFoundError) as err:
        st.error(str(err))
    else:
        state.put("data", dict(source=source, n_samples=int(n_samples), max_length=int(max_length),
                               batch_size=int(batch_size)))
        current = state.data_settings()
st.caption(f"Calibration: **{current['source'].describe()}**, {current['n_samples']} samples of at most "
           f"{current['max_length']} tokens, batches of {current['batch_size']}.")
if base is not None:
    st.page_link("pages/2_Similarity.py", label="Next: the similarity heatmap", icon=":material/arrow_forward:")
