"""Healing the real default model (SmolLM2-135M-Instruct) after dropping its most redundant 6-layer block."""

from __future__ import annotations

import pytest
import torch

from prune_core.heal import PRESETS, heal, merge_adapter
from prune_core.models import model_fingerprint
from prune_core.prune import drop_layers, prune_info
from prune_core.similarity import compute_similarity

pytestmark = pytest.mark.integration


def test_quick_heal_lowers_the_heldout_loss(default_model, tmp_path):
    model, tok = default_model.model, default_model.tokenizer
    fingerprint = model_fingerprint(model)
    block = compute_similarity(model, tok, "python-docs", n_samples=16, max_length=128).best_layers(6)
    pruned = drop_layers(model, block, method="similarity")
    pruned_before = {k: v.clone() for k, v in pruned.state_dict().items()}
    result = heal(pruned, tok, "python-docs", PRESETS["quick-cpu"], output_dir=tmp_path / "run")
    print(f"block {block}: held-out loss {result.loss_before:.3f} -> {result.loss_after:.3f}, "
          f"{result.tokens_per_s:.0f} tokens/s, {result.train_seconds:.0f} s")
    assert result.loss_before - result.loss_after > 0.1
    assert result.global_step == PRESETS["quick-cpu"].steps and not result.load_in_4bit

    merged = merge_adapter(pruned, result)
    assert prune_info(merged)["removed_layers"] == block
    ids = torch.tensor([tok("def heal(model):\n    return model")["input_ids"]])
    result.peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, result.peft_model(ids).logits, atol=2e-4, rtol=1e-4)
    assert model_fingerprint(model) == fingerprint  # the cached base model is untouched
    for key, value in pruned.state_dict().items():
        assert torch.equal(value, pruned_before[key]), f"{key} changed"
