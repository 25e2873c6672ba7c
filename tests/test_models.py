"""Model loading and the architecture table, on tiny models and local files (nothing is downloaded)."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import BertConfig

import prune_core.models as models
from prune_core.models import (
    ARCHITECTURES,
    arch_spec,
    count_parameters,
    get_final_norm,
    get_layers,
    load_model,
    model_fingerprint,
    num_layers,
    pick_dtype,
)
from prune_core.testing import TINY_ARCHITECTURES, tiny_model, tiny_tokenizer


def test_table_covers_the_required_families():
    assert set(TINY_ARCHITECTURES) <= set(ARCHITECTURES)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_spec_finds_blocks_and_final_norm(model_type):
    model = tiny_model(model_type, num_layers=3)
    assert num_layers(model) == 3 == getattr(model.config, arch_spec(model).num_layers_key)
    assert isinstance(get_final_norm(model), torch.nn.Module)
    assert all(module in dict(model.named_modules()).values() for module in get_layers(model))


def test_unknown_family_is_inferred_and_says_so(monkeypatch, caplog):
    monkeypatch.delitem(ARCHITECTURES, "llama")
    with caplog.at_level(logging.WARNING):
        spec = arch_spec(tiny_model("llama", num_layers=3))
    assert spec.inferred and spec.layers == "model.layers" and spec.final_norm == "model.norm"
    assert "not in the table" in caplog.text


def test_load_local_folder_and_tiny_source(tmp_path):
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="cpu")
    assert loaded.num_layers == 6 and loaded.model.config.model_type == "qwen2"
    ids = tok("hello", return_tensors="pt").input_ids
    torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)
    assert load_model("tiny:gpt2").summary()["layers"] == 6


def test_trust_remote_code_is_off_unless_asked(tmp_path, monkeypatch):
    seen = []
    real = models._from_pretrained
    monkeypatch.setattr(models, "_from_pretrained", lambda src, **kw: seen.append(kw) or real(src, **kw))
    tiny_model("llama").save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    load_model(str(tmp_path))
    load_model(str(tmp_path), trust_remote_code=True)
    assert [kw["trust_remote_code"] for kw in seen] == [False, True]


@pytest.mark.parametrize("source, error, message", [
    ("", ValueError, "no model given"),
    ("/no/such/folder", FileNotFoundError, "no such file"),
    ("missing.gguf", FileNotFoundError, "GGUF file not found"),
    ("tiny:bert", ValueError, "unknown tiny model"),
])
def test_bad_sources_get_clear_messages(source, error, message):
    with pytest.raises(error, match=message):
        load_model(source)


def test_encoder_models_are_refused(tmp_path):
    BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path)
    with pytest.raises(ValueError, match="not a decoder-only causal language model"):
        load_model(str(tmp_path))


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_not_a_gguf_file_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file" * 10)
    with pytest.raises(ValueError, match="cannot load GGUF file"):
        load_model(str(bad))


def test_unsupported_gguf_architecture_is_refused(tmp_path):
    import gguf

    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="cannot load GGUF file"):
        load_model(str(path))


def test_hub_id_without_network_fails_fast(monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ConnectionError, match="cannot reach the Hugging Face Hub"):
        load_model("some-org/some-model-that-is-not-cached")


def test_fingerprint_tracks_weights_and_config():
    a, b = tiny_model("llama"), tiny_model("llama")
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        get_layers(b)[3].mlp.down_proj.weight[0, 0] += 1.0
    assert model_fingerprint(a) != model_fingerprint(b)


def test_dtype_choice_and_validation():
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="allowed"):
        pick_dtype(torch.device("cpu"), "float8")


def test_memory_estimate_matches_a_real_model():
    model = tiny_model("llama")
    estimate = models.estimate_load_bytes(model.config, torch.float32)
    assert estimate == count_parameters(model) * 4
