"""The similarity engine on the real default model (SmolLM2-135M-Instruct, 30 layers) with the python-docs corpus."""

from __future__ import annotations

import numpy as np
import pytest

from prune_core.models import model_fingerprint
from prune_core.similarity import compute_similarity, layer_distances

pytestmark = pytest.mark.integration


def test_default_model_table(default_model):
    model, tok = default_model.model, default_model.tokenizer
    L = default_model.num_layers
    before = model_fingerprint(model)
    result = compute_similarity(model, tok, "python-docs", n_samples=16, max_length=128, batch_size=8,
                                use_cache=False)
    assert model_fingerprint(model) == before
    assert result.distances.shape == (L + 1, L + 1)
    for n in range(1, L):
        row = result.row(n)
        assert row.shape == (L - n + 1,) and np.isfinite(row).all()
        assert (row > 0).all() and (row < 1).all()
    assert np.isnan(result.distances[2, L]) and np.isnan(result.distances[L, 1])
    for n in (1, 2, 3):
        assert result.best_layers(n)[-1] != L - 1, f"the best block of {n} layers should not end at the final layer"
        assert result.row(n)[-1] > np.median(result.row(n))  # the block ending at the final layer is far
    assert result.metadata["num_layers"] == L and result.metadata["vectors"] == 16


def test_default_model_all_token_metrics(default_model):
    from prune_core.data import token_samples

    samples = token_samples(default_model.tokenizer, "python-docs", "calibration", n_samples=4, max_length=64)
    for metric in ("angular_mean", "block_influence"):
        pairwise, count = layer_distances(default_model.model, samples, metric=metric, batch_size=4)
        assert count == 4 * 64 and np.isfinite(pairwise).all()
        assert np.all(pairwise >= 0) and np.all(np.diag(pairwise) < 1e-6)
