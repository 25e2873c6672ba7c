"""Layer surgery on tiny random models of every family in the architecture table."""

from __future__ import annotations

import errno
import shutil

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from prune_core.models import get_layers, num_layers
from prune_core.prune import drop_layers, kept_ranges, mergekit_config, parse_layer_spec, prune_info, save_model
from prune_core.testing import TINY_ARCHITECTURES, tiny_model, tiny_tokenizer

TEXT = ["The quick brown fox jumps over the lazy dog.", "Layers"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _ids(tok):
    return tok(TEXT[0], return_tensors="pt").input_ids


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_dropping_nothing_is_identity(model_type, tok):
    model = tiny_model(model_type)
    copy = drop_layers(model, [])
    assert copy is not model and num_layers(copy) == num_layers(model)
    ids = _ids(tok)
    torch.testing.assert_close(copy(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_input_model_untouched(model_type, tok):
    model = tiny_model(model_type)
    ids = _ids(tok)
    logits, state, cfg = model(ids).logits, _state(model), model.config.to_dict()
    pruned = drop_layers(model, [1, 2])
    with torch.no_grad():  # writing into the copy must not reach the original
        for p in pruned.parameters():
            p.add_(1.0)
    assert num_layers(model) == 6 and model.config.to_dict() == cfg
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    torch.testing.assert_close(model(ids).logits, logits, rtol=0, atol=0)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_cached_generation_equals_uncached_after_drop(model_type, tok):
    pruned = drop_layers(tiny_model(model_type), [2, 3], method="similarity")
    assert num_layers(pruned) == 4
    for new_idx, block in enumerate(get_layers(pruned)):
        idx = [m.layer_idx for m in block.modules() if isinstance(getattr(m, "layer_idx", None), int)]
        assert set(idx) <= {new_idx}
    ids = _ids(tok)
    cached = pruned.generate(ids, max_new_tokens=10, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = pruned.generate(ids, max_new_tokens=10, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_save_then_reload_gives_same_logits(model_type, tok, tmp_path):
    pruned = drop_layers(tiny_model(model_type), [0, 4], method="manual")
    out = save_model(pruned, tok, tmp_path / "out", card={"note": "test"})
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert num_layers(reloaded) == 4
    assert prune_info(reloaded)["removed_layers"] == [0, 4]
    ids = _ids(tok)
    torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, rtol=1e-5, atol=1e-5)
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "prune.json"} <= {
        p.name for p in out.iterdir()}


def test_per_layer_config_lists_follow_the_kept_layers():
    gemma2 = tiny_model("gemma2")
    types = list(gemma2.config.layer_types)
    assert drop_layers(gemma2, [0, 3]).config.layer_types == [types[i] for i in (1, 2, 4, 5)]
    qwen2 = tiny_model("qwen2")  # max_window_layers=2: "the first two layers"
    assert drop_layers(qwen2, [1, 4]).config.max_window_layers == 1
    moe = tiny_model("qwen2_moe")  # step 2 and mlp_only [0]: layers 0, 2, 4 dense; 1, 3, 5 sparse
    pruned = drop_layers(moe, [1, 2])  # keeps 0 (dense), 3 (sparse), 4 (dense), 5 (sparse)
    assert pruned.config.mlp_only_layers == [0, 2] and pruned.config.decoder_sparse_step == 1


def test_removed_layers_are_recorded_in_original_numbering():
    model = tiny_model("llama", num_layers=8)
    once = drop_layers(model, [2, 3], method="similarity")
    twice = drop_layers(once, [2, 5], method="manual")  # current 2 and 5 are original 4 and 7
    info = prune_info(twice)
    assert info["removed_layers"] == [2, 3, 4, 7]
    assert info["base_num_layers"] == 8 and info["method"] == "similarity+manual"
    assert prune_info(model)["removed_layers"] == []


@pytest.mark.parametrize("bad", [[6], [-1], [0, 1, 2, 3, 4, 5], [0, 99]])
def test_bad_indices_are_refused(bad):
    with pytest.raises(ValueError, match="out of range|cannot remove all"):
        drop_layers(tiny_model("llama"), bad)


def test_shared_weights_share_storage_and_leave_the_input_intact(tok):
    model = tiny_model("llama")
    shared = drop_layers(model, [5], share_weights=True)
    kept = get_layers(shared)[0].mlp.up_proj.weight
    assert kept.data_ptr() == get_layers(model)[0].mlp.up_proj.weight.data_ptr()
    assert num_layers(model) == 6 and num_layers(shared) == 5


def test_save_refuses_a_non_empty_folder_and_overwrites_on_request(tok, tmp_path):
    pruned = drop_layers(tiny_model("llama"), [1])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="already holds files"):
        save_model(pruned, tok, out)
    assert (out / "keep.txt").read_text() == "precious"
    save_model(pruned, tok, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_failed_save_leaves_nothing_behind(tok, tmp_path, monkeypatch):
    pruned = drop_layers(tiny_model("llama"), [1])

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(pruned), "save_pretrained", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_model(pruned, tok, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_save_checks_free_space_first(tok, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(OSError, match="not enough disk space"):
        save_model(drop_layers(tiny_model("llama"), [1]), tok, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_mergekit_config_lists_the_kept_slices():
    assert kept_ranges(30, range(21, 27)) == [(0, 21), (27, 30)]
    cfg = yaml.safe_load(mergekit_config("HuggingFaceTB/SmolLM2-135M-Instruct", 30, range(21, 27)))
    assert cfg["merge_method"] == "passthrough"
    assert [s["sources"][0]["layer_range"] for s in cfg["slices"]] == [[0, 21], [27, 30]]
    with pytest.raises(ValueError):
        mergekit_config("m", 4, [4])


def test_parse_layer_spec():
    assert parse_layer_spec("21-26, 28") == [21, 22, 23, 24, 25, 26, 28]
    assert parse_layer_spec("3") == [3]
    for bad in ("a-b", "5-3"):
        with pytest.raises(ValueError):
            parse_layer_spec(bad)
