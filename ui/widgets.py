"""Small display helpers shared by the pages."""

from __future__ import annotations

import streamlit as st

from prune_core.models import LoadedModel
from prune_core.system import format_bytes

PIPELINE = [  # (page, title, icon): the navigation and the landing page's links
    ("pages/1_Model_and_data.py", "Model and data", ":material/memory:"),
    ("pages/2_Similarity.py", "Similarity", ":material/grid_on:"),
    ("pages/3_Prune.py", "Prune", ":material/content_cut:"),
    ("pages/4_Heal.py", "Heal", ":material/healing:"),
    ("pages/5_Compare.py", "Compare", ":material/compare:"),
    ("pages/6_Evaluate.py", "Evaluate", ":material/analytics:"),
    ("pages/7_Export.py", "Export", ":material/upload:"),
]


def model_metrics(loaded: LoadedModel, label: str | None = None) -> None:
    """Name, layers, parameters, device and memory of a model, as a row of metrics."""
    s = loaded.summary()
    if label:
        st.markdown(f"**{label}**: {s['name']}")
    cols = st.columns(4)
    cols[0].metric("Layers", s["layers"])
    cols[1].metric("Parameters", f"{s['parameters'] / 1e6:.1f} M")
    cols[2].metric("Device / dtype", f"{s['device']} · {s['dtype']}")
    cols[3].metric("Memory", format_bytes(loaded.memory_bytes))
    for note in loaded.notes:
        st.caption(note)


def before_after(before: LoadedModel, after: LoadedModel) -> None:
    """Layers, parameters and memory before and after pruning, with the change."""
    b, a = before.summary(), after.summary()
    cols = st.columns(3)
    cols[0].metric("Layers", a["layers"], delta=a["layers"] - b["layers"], delta_color="off")
    cols[1].metric("Parameters", f"{a['parameters'] / 1e6:.1f} M",
                   delta=f"{(a['parameters'] - b['parameters']) / 1e6:.1f} M", delta_color="off")
    cols[2].metric("Memory", format_bytes(after.memory_bytes),
                   delta=f"-{format_bytes(before.memory_bytes - after.memory_bytes)}", delta_color="off")


def next_steps() -> None:
    """Links to every page of the pipeline."""
    for i, (page, title, icon) in enumerate(PIPELINE, start=1):
        st.page_link(page, label=f"{i} · {title}", icon=icon)


def layer_list(layers: list[int]) -> str:
    """``[21, 22, 23, 28] -> '21-23, 28'`` (0-based, inclusive ranges)."""
    parts: list[tuple[int, int]] = []
    for i in sorted(layers):
        if parts and parts[-1][1] == i - 1:
            parts[-1] = (parts[-1][0], i)
        else:
            parts.append((i, i))
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts) or "none"
