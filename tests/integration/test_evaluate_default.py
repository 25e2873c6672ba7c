"""The real default model (SmolLM2-135M-Instruct, 30 layers): the probe, the paper's loss gap between the similarity
method and the deepest-layers heuristic before healing, and the generation comparison."""

from __future__ import annotations

import pytest

from prune_core.generate import GenerationSettings, compare_generations
from prune_core.probe import capital_probe
from prune_core.prune import drop_layers
from prune_core.similarity import compute_similarity
from prune_core.sweep import SweepConfig, run_sweep

pytestmark = pytest.mark.integration


def test_capital_probe_scores_far_above_chance(default_model):
    result = capital_probe(default_model.model, default_model.tokenizer, limit=60)  # all 250: prune-core eval --no-loss
    assert result["template"] == "chat" and result["n"] == 60 and result["chance"] == 0.25
    assert result["accuracy"] > 0.6  # measured on all 250: 0.868 (chat template, summed log-probability)


def test_similarity_beats_the_deepest_heuristic_on_loss_before_healing(default_model, tmp_path):
    model, tok = default_model.model, default_model.tokenizer
    result = compute_similarity(model, tok, "python-docs", n_samples=16, max_length=128)
    config = SweepConfig(ns=(3,), eval_samples=8, max_length=128, probe=False)
    frame = run_sweep(model, tok, result, config, out_dir=tmp_path / "sweep").set_index("point")
    base, sim, deep = (frame.loc[p, "loss"] for p in ("unpruned", "similarity_n003_pruned", "deepest_n003_pruned"))
    assert frame.loc["deepest_n003_pruned", "layers"] == "26,27,28"
    assert base < sim < deep and deep - sim > 2.0  # measured: 3.12, 3.53, 9.31
    assert deep < frame.loc["unpruned", "uniform_loss"]  # log(49152) = 10.8


def test_compare_generations_on_the_default_model_and_a_pruned_copy(default_model):
    model, tok = default_model.model, default_model.tokenizer
    pruned = drop_layers(model, [13, 14, 15], share_weights=True)
    rows = compare_generations({"original": (model, tok), "pruned": (pruned, tok)}, "What is the capital of France?",
                               GenerationSettings(max_new_tokens=12))
    assert [r["num_layers"] for r in rows] == [30, 27] and rows[1]["num_params"] < rows[0]["num_params"]
    assert "Paris" in rows[0]["text"] and all(r["new_tokens"] > 0 and r["tokens_per_s"] > 0 for r in rows)
