"""The real embedded SmolLM2-135M-Instruct: loading, a sensible answer, and surgery that survives save/reload."""

from __future__ import annotations

import pytest
import torch

from prune_core.models import default_gguf_path, load_model
from prune_core.prune import drop_layers, prune_info, save_model

pytestmark = pytest.mark.integration


def _chat_ids(tokenizer, question: str) -> torch.Tensor:
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)["input_ids"]


def test_default_model_loads_and_answers(default_model):
    assert default_model.num_layers == 30 and default_model.model.config.model_type == "llama"
    assert 130e6 < default_model.num_params < 140e6
    ids = _chat_ids(default_model.tokenizer, "What is the capital of France?")
    out = default_model.model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in default_model.tokenizer.decode(out[0, ids.shape[1]:])


def test_cached_weights_equal_the_gguf_file(default_model):
    gguf = load_model(str(default_gguf_path()), device="cpu")
    ids = default_model.tokenizer("The unreasonable ineffectiveness of the deeper layers", return_tensors="pt")
    torch.testing.assert_close(gguf.model(**ids).logits, default_model.model(**ids).logits)


def test_drop_block_save_reload_and_run(default_model, tmp_path):
    pruned = drop_layers(default_model.model, range(20, 26), method="manual")
    assert default_model.num_layers == 30
    out = save_model(pruned, default_model.tokenizer, tmp_path / "pruned")
    reloaded = load_model(str(out), device="cpu")
    assert reloaded.num_layers == 24
    assert prune_info(reloaded.model)["removed_layers"] == list(range(20, 26))
    ids = _chat_ids(default_model.tokenizer, "Name a primary colour.")
    torch.testing.assert_close(reloaded.model(ids).logits, pruned(ids).logits, rtol=1e-4, atol=1e-4)
    cached = reloaded.model.generate(ids, max_new_tokens=16, do_sample=False, use_cache=True)
    uncached = reloaded.model.generate(ids, max_new_tokens=16, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert reloaded.tokenizer.decode(cached[0, ids.shape[1]:]).strip()
