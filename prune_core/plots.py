"""Plotly figures of similarity results, shared by the app and the CLI (sweep figures live in ``sweep.py``)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from prune_core.similarity import SimilarityResult


def layers_label(start: int, n: int) -> str:
    """"layer 5" or "layers 21–26" (0-based, inclusive): the layers a block of n starting at ``start`` covers."""
    return f"layer {start}" if n == 1 else f"layers {start}–{start + n - 1}"


def row_normalized(rows: np.ndarray) -> np.ndarray:
    """Each row shifted and rescaled to [0, 1] (NaN kept), as in the paper's figure 4."""
    low = np.nanmin(rows, axis=1, keepdims=True)
    span = np.nanmax(rows, axis=1, keepdims=True) - low
    return (rows - low) / np.where(span > 0, span, 1.0)


def _title(result: SimilarityResult, what: str) -> str:
    meta = result.metadata
    model = meta.get("model") or "model"
    source = meta.get("source", "?")
    return f"{what}: {model}, {source}, {meta.get('n_samples', '?')} × {meta.get('max_length', '?')} tokens"


def heatmap_figure(result: SimilarityResult, normalize: bool = False) -> go.Figure:
    """Distance of every block: start layer l on x, block size n on y, the best block of each row marked.

    ``normalize`` rescales each row to [0, 1] (the paper's figure 4); hover text names the layers a block drops.
    """
    L = result.num_layers
    raw = result.distances[1:L, :L]  # (L-1, L): row n-1 is block size n, column l is the start layer
    z = row_normalized(raw) if normalize else raw
    hover = [[f"n={n}, l={start}: drops {layers_label(start, n)}<br>distance {raw[n - 1, start]:.4f}"
              if start <= L - n else "" for start in range(L)] for n in range(1, L)]
    metric = result.metadata.get("metric", "angular_last")
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(L)), y=list(range(1, L)), text=hover, hoverinfo="text", colorscale="Viridis",
        colorbar={"title": "row-normalised" if normalize else metric}, hoverongaps=False,
    ))
    best = [result.best_start(n) for n in range(1, L)]
    fig.add_trace(go.Scatter(
        x=best, y=list(range(1, L)), mode="markers", name="best block l*(n)",
        marker={"symbol": "circle-open", "size": 9, "color": "red", "line": {"width": 2}},
        text=[f"best for n={n}: drops {layers_label(s, n)}" for n, s in enumerate(best, start=1)], hoverinfo="text",
    ))
    fig.update_layout(
        title=_title(result, "Block distance" + (" (each row rescaled to [0, 1])" if normalize else "")),
        xaxis_title="start layer l (0-based)", yaxis_title="block size n (layers dropped)",
        legend={"orientation": "h", "y": -0.15}, height=560, margin={"t": 60},
    )
    fig.update_xaxes(dtick=max(1, L // 15))
    fig.update_yaxes(dtick=max(1, L // 15))
    return fig


def min_distance_figure(result: SimilarityResult) -> go.Figure:
    """The distance of the best block, and of the deepest-layers block, against the number of layers dropped."""
    table = result.best_table()
    metric = result.metadata.get("metric", "angular_last")
    drops = lambda col: [f"n={n}: drops {layers_label(s, n)}" for n, s in zip(table["n"], table[col], strict=True)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=table["n"], y=table["distance"], mode="lines+markers", name="best block (similarity)", text=drops("start"),
        hovertemplate="%{text}<br>distance %{y:.4f}<extra></extra>",
    ))
    fig.add_trace(go.Scatter(
        x=table["n"], y=table["deepest_distance"], mode="lines", line={"dash": "dot"},
        name="deepest layers except the last (heuristic)", text=drops("deepest_start"),
        hovertemplate="%{text}<br>distance %{y:.4f}<extra></extra>",
    ))
    fig.update_layout(
        title=_title(result, "Smallest block distance"), xaxis_title="layers dropped n",
        yaxis_title=f"distance ({metric})",
        legend={"orientation": "h", "y": -0.2}, height=420, margin={"t": 60},
    )
    return fig
