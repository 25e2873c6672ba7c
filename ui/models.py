"""Model sources for the app: the process-wide cache of base models and the memory check before loading.

Base models are cached with ``st.cache_resource`` and shared by every session, so they are never mutated: pruning
and healing return new objects that live in one session's state.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch

from prune_core import system
from prune_core.models import (
    LoadedModel,
    default_model_folder,
    estimate_load_bytes,
    load_model,
    pick_device,
    pick_dtype,
)
from prune_core.progress import ProgressFn, check_cancel, report

SOURCE_KINDS = {
    "default": "Embedded default (SmolLM2-135M-Instruct)",
    "hub": "Hugging Face hub id",
    "folder": "Local folder",
    "gguf": "GGUF file",
    "tiny": "Tiny random test model",
}


def source_string(kind: str, value: str = "") -> str:
    """The ``load_model`` source for a choice in the Model page (``kind`` is one of SOURCE_KINDS)."""
    value = (value or "").strip()
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown model source kind {kind!r}; allowed: {', '.join(SOURCE_KINDS)}")
    if kind == "default":
        return "default"
    if not value:
        raise ValueError(f"enter a {SOURCE_KINDS[kind].lower()}")
    if kind == "tiny":
        return value if value.startswith("tiny:") else f"tiny:{value}"
    if kind == "gguf" and not value.endswith(".gguf"):
        raise ValueError(f"{value!r} is not a .gguf file")
    return value


@st.cache_resource(show_spinner=False, max_entries=16)
def source_config(source: str):
    """The config of ``source`` (read once per process; a GGUF file's header takes a few seconds). Do not mutate."""
    from transformers import AutoConfig

    if source.startswith("tiny:"):
        from prune_core.testing import tiny_config

        return tiny_config(source.split(":", 1)[1])
    if source == "default":  # the converted folder (made once); reading the GGUF header takes seconds
        return AutoConfig.from_pretrained(str(default_model_folder(None)))
    path = Path(source).expanduser()
    if source.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {source}")
        return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    return AutoConfig.from_pretrained(source)


@st.cache_data(show_spinner=False, max_entries=64)
def estimate_bytes(source: str, device: str | None = None, dtype: str | None = None,
                   load_in_4bit: bool = False) -> int:
    """Bytes of weights ``source`` needs once loaded, from its config alone (nothing is allocated)."""
    return estimate_load_bytes(source_config(source), pick_dtype(pick_device(device), dtype), load_in_4bit)


@st.cache_resource(show_spinner=False, max_entries=2)
def cached_base(source: str, device: str | None = None, dtype: str | None = None, load_in_4bit: bool = False,
                _progress: ProgressFn | None = None) -> LoadedModel:
    """The base model, loaded once per process and shared by every session: never mutate it."""
    return load_model(source, device=device, dtype=dtype, load_in_4bit=load_in_4bit, progress=_progress)


def load_checked(source: str, device: str | None = None, dtype: str | None = None, load_in_4bit: bool = False, *,
                 progress: ProgressFn | None = None, cancel=None) -> LoadedModel:
    """Estimate the memory ``source`` needs, refuse it (ValueError) if it will not fit, else load it (cached)."""
    report(progress, "estimating memory", 0, 1)
    try:
        need = estimate_bytes(source, device, dtype, load_in_4bit)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"cannot read the configuration of {source!r}: {err}") from err
    system.check_fits(need, device=device)
    check_cancel(cancel)
    return cached_base(source, device, dtype, load_in_4bit, _progress=progress)


def device_choices() -> list[str]:
    """Devices offered in the Model page: CPU, plus CUDA when present."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
