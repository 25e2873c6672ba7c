"""Plotly figures of a similarity result: layout, marked minima, hover text and row normalisation."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from prune_core.plots import heatmap_figure, layers_label, min_distance_figure, row_normalized
from prune_core.similarity import SimilarityResult, pairwise_to_blocks


def _result(L: int = 8) -> SimilarityResult:
    rng = np.random.default_rng(0)
    points = np.cumsum(rng.normal(size=(L + 1, 5)), axis=0)
    pairwise = np.linalg.norm(points[:, None] - points[None], axis=-1) / 40
    return SimilarityResult(pairwise_to_blocks(pairwise), {"model": "m", "source": "python-docs", "n_samples": 4,
                                                             "max_length": 16, "metric": "angular_last"})


def test_layers_label():
    assert layers_label(5, 1) == "layer 5"
    assert layers_label(21, 6) == "layers 21–26"


def test_row_normalized():
    rows = np.array([[2.0, 4.0, 3.0], [1.0, np.nan, 1.0]])
    out = row_normalized(rows)
    np.testing.assert_allclose(out[0], [0, 1, 0.5])
    assert out[1, 0] == 0 and np.isnan(out[1, 1])


def test_heatmap_raw_and_normalized():
    result = _result()
    L = result.num_layers
    raw = heatmap_figure(result)
    heat, marks = raw.data
    assert isinstance(heat, go.Heatmap) and isinstance(marks, go.Scatter)
    z = np.array(heat.z, dtype=float)
    assert z.shape == (L - 1, L) and list(heat.y) == list(range(1, L)) and list(heat.x) == list(range(L))
    assert z[2, 4] == result.distances[3, 4]  # block size 3 starting at layer 4
    assert np.isnan(z[2, L - 2])  # a block of 3 cannot start at L-2
    assert list(marks.x) == [result.best_start(n) for n in range(1, L)]
    assert heat.text[2][4].startswith("n=3, l=4: drops layers 4–6")
    assert "l*(n)" in marks.name and "drops" in marks.text[0]
    norm = np.array(heatmap_figure(result, normalize=True).data[0].z, dtype=float)
    assert np.allclose(np.nanmin(norm, axis=1), 0) and np.allclose(np.nanmax(norm, axis=1), 1)
    assert np.array_equal(np.nanargmin(norm, axis=1), np.array(marks.x))


def test_min_distance_curve():
    result = _result()
    fig = min_distance_figure(result)
    best, deep = fig.data
    table = result.best_table()
    np.testing.assert_allclose(best.y, table["distance"])
    np.testing.assert_allclose(deep.y, table["deepest_distance"])
    assert np.all(np.array(best.y) <= np.array(deep.y))  # the minimum is never above the heuristic's block
    assert deep.text[0] == f"n=1: drops layer {result.num_layers - 2}"
