"""Healing on tiny random models: only LoRA trains, the loss falls, merge matches the peft model, stop/resume,
the base is untouched, clear errors."""

from __future__ import annotations

import errno
import json
import threading

import pytest
import torch

from prune_core.heal import HealConfig, heal, lora_targets, merge_adapter, preset, save_healed
from prune_core.heal_config import PRESETS
from prune_core.models import ArchSpec
from prune_core.testing import tiny_model, tiny_tokenizer

CORPUS = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 30
FAST = HealConfig(rank=8, steps=12, lr=2e-2, warmup_steps=1, batch_size=4, grad_accum=1, max_length=48,
                  save_steps=4, eval_samples=6)


def token_data() -> dict:
    ids = tiny_tokenizer()(CORPUS)["input_ids"]
    return {"heal": [ids[i : i + 48] for i in range(0, 1200, 24)],
            "eval": [ids[i : i + 48] for i in range(1300, 1900, 100)]}


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(model, before: dict) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed"


@pytest.fixture(scope="module")
def healed(tmp_path_factory):
    """One healing run on a tiny llama, shared by the tests that only read its results."""
    model, tok = tiny_model("llama", num_layers=4), tiny_tokenizer()
    before = snapshot(model)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    reports = []
    result = heal(model, tok, token_data(), FAST, output_dir=tmp_path_factory.mktemp("heal") / "run",
                  progress=reports.append)
    return model, tok, result, before, grads, reports


# ----------------------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("field, value", [("rank", 0), ("steps", -1), ("dropout", 1.0), ("lr", 0.0),
                                          ("batch_size", 0), ("grad_accum", 0), ("max_length", 4), ("alpha", -2.0),
                                          ("warmup_steps", 5000), ("scheduler", "step"), ("n_samples", 1),
                                          ("target_modules", ())])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        HealConfig(**{field: value})


def test_presets_follow_the_paper_and_overrides_apply():
    paper = PRESETS["paper"]
    assert (paper.rank, paper.steps, paper.global_batch(), paper.max_length, paper.warmup_steps) == (64, 5000, 16,
                                                                                                      2048, 100)
    assert paper.lora_alpha == 64 and paper.dropout == 0.05 and paper.lr == 3e-4 and paper.scheduler == "cosine"
    quick = preset("quick-cpu", rank=4, steps=None)
    assert quick.rank == 4 and quick.steps == PRESETS["quick-cpu"].steps
    assert preset("paper", steps=50).warmup_steps == 5  # warm-up shortened to fit
    with pytest.raises(ValueError, match="quick-cpu"):
        preset("fast")
    with pytest.raises(ValueError, match="unknown heal setting"):
        paper.replace(ranks=3)


# ----------------------------------------------------------------------------------------------------------------
# Targets


def test_default_targets_are_the_feed_forward_projections():
    assert lora_targets(tiny_model("llama", 2)) == (["gate_proj", "up_proj", "down_proj"], None)
    assert lora_targets(tiny_model("gpt2", 2)) == (["mlp.c_fc", "mlp.c_proj"], None)


def test_targets_fall_back_to_the_mlp_and_say_so(monkeypatch):
    monkeypatch.setattr("prune_core.heal.arch_spec", lambda m: ArchSpec(ffn_modules=("w1", "w2")))
    targets, note = lora_targets(tiny_model("llama", 2))
    assert targets == ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert "inferred" in note


def test_no_matching_target_modules():
    with pytest.raises(ValueError, match="no matching target modules"):
        lora_targets(tiny_model("mixtral", 2))  # experts are fused parameters, no Linear in the MLP
    with pytest.raises(ValueError, match="no matching target modules"):
        lora_targets(tiny_model("llama", 2), ["w_missing"])


# ----------------------------------------------------------------------------------------------------------------
# Training


def test_only_lora_parameters_train(healed):
    model, _, result, *_ = healed
    trainable = [n for n, p in result.peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == {"gate_proj", "up_proj", "down_proj"}
    base = dict(model.named_parameters())
    for name, p in result.peft_model.named_parameters():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base[key]), f"{name} changed"


def test_loss_falls_and_progress_reports_every_step(healed):
    _, _, result, _, _, reports = healed
    assert result.loss_after < result.loss_before - 0.05
    assert result.global_step == FAST.steps and not result.stopped
    steps = [p.done for p in reports if p.stage == "healing" and "loss" in p.info]
    assert steps == list(range(1, FAST.steps + 1))
    assert {"loss", "lr", "tokens_per_s", "eta_s"} <= set(reports[-1].info)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    meta = json.loads((result.output_dir / "heal.json").read_text())
    assert meta["status"] == "done" and meta["steps_done"] == FAST.steps
    assert (result.adapter_dir / "adapter_config.json").is_file()


def test_base_unchanged_after_heal_and_merge(healed):
    model, _, result, before, grads, _ = healed
    merge_adapter(model, result)
    assert_same(model, before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert not model.training


def test_merged_logits_equal_peft_logits(healed):
    model, _, result, *_ = healed
    merged = merge_adapter(model, result.adapter_dir)
    assert not any("lora" in type(m).__name__.lower() for m in merged.modules())
    ids = torch.tensor(token_data()["eval"][:2])
    result.peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, result.peft_model(ids).logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(merged(ids).logits, model(ids).logits, atol=1e-4)  # the adapter did something


def test_save_healed_keeps_prune_metadata_and_heal_settings(healed, tmp_path):
    from prune_core.models import load_model
    from prune_core.prune import drop_layers

    model, tok, result, *_ = healed
    pruned = drop_layers(model, [1])
    merged = merge_adapter(model, result)
    with pytest.raises(ValueError, match="merge it first"):
        save_healed(result.peft_model, tok, tmp_path / "x", result)
    out = save_healed(drop_layers(merged, [1]), tok, tmp_path / "healed", result)
    info = json.loads((out / "prune.json").read_text())
    assert info["removed_layers"] == [1] and info["healing"]["rank"] == FAST.rank
    assert "Healing" in (out / "README.md").read_text()
    reloaded = load_model(str(out), device="cpu").model
    ids = torch.tensor(token_data()["eval"][:1])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, drop_layers(merged, [1])(ids).logits)
    assert reloaded.config.num_hidden_layers == pruned.config.num_hidden_layers


def test_stop_then_resume_continues_from_the_checkpoint(tmp_path):
    model, tok = tiny_model("llama", num_layers=2), tiny_tokenizer()
    config = FAST.replace(steps=8, save_steps=100)
    cancel = threading.Event()

    def stop_after_three(p):
        if p.stage == "healing" and p.done >= 3:
            cancel.set()

    first = heal(model, tok, token_data(), config, output_dir=tmp_path, progress=stop_after_three, cancel=cancel)
    assert first.stopped and 3 <= first.global_step < config.steps and first.loss_after is None
    assert (tmp_path / "checkpoints" / f"checkpoint-{first.global_step}").is_dir()
    assert (first.adapter_dir / "adapter_model.safetensors").is_file()
    seen = []
    second = heal(model, tok, token_data(), config, output_dir=tmp_path, progress=seen.append, resume=True)
    steps = [p.done for p in seen if p.stage == "healing" and "loss" in p.info]
    assert steps == list(range(first.global_step + 1, config.steps + 1))
    assert second.global_step == config.steps and not second.stopped
    assert [h["step"] for h in second.history] == list(range(1, config.steps + 1))


def test_output_folder_rules(tmp_path, healed):
    model, tok = tiny_model("llama", num_layers=2), tiny_tokenizer()
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        heal(model, tok, token_data(), FAST, output_dir=tmp_path)
    with pytest.raises(ValueError, match="not both"):
        heal(model, tok, token_data(), FAST, output_dir=tmp_path, resume=True, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="rank"):
        heal(model, tok, token_data(), FAST.replace(rank=4), output_dir=healed[2].output_dir, resume=True)
    (tmp_path / "heal.json").write_text("{}")  # an earlier run's files go, the user's stay
    heal(model, tok, token_data(), FAST.replace(steps=2), output_dir=tmp_path, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert json.loads((tmp_path / "heal.json").read_text())["status"] == "done"


def test_disk_full_and_out_of_memory_give_clear_errors(tmp_path, monkeypatch):
    from transformers import Trainer

    model, tok = tiny_model("llama", num_layers=2), tiny_tokenizer()
    config = FAST.replace(steps=3, save_steps=1)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_checkpoint", full_disk)
    with pytest.raises(OSError, match="disk full") as err:
        heal(model, tok, token_data(), config, output_dir=tmp_path / "a")
    assert err.value.errno == errno.ENOSPC

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "training_step", oom)
    with pytest.raises(MemoryError, match="--batch-size"):
        heal(model, tok, token_data(), config, output_dir=tmp_path / "b")


def test_cpu_default_is_full_precision_lora_with_a_note(healed):
    result = healed[2]
    assert not result.load_in_4bit and any("full-precision" in n for n in result.notes)


def test_4bit_on_cpu_when_asked(tmp_path):
    pytest.importorskip("bitsandbytes")
    model, tok = tiny_model("llama", num_layers=2, hidden_size=64, intermediate_size=128), tiny_tokenizer()
    before = snapshot(model)
    result = heal(model, tok, token_data(), FAST.replace(steps=3, load_in_4bit=True), output_dir=tmp_path)
    assert result.load_in_4bit and result.global_step == 3
    assert not list(tmp_path.glob(".quantize-*"))  # the full-precision staging copy is gone
    assert type(result.peft_model.base_model.model.model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear4bit"
    merged = merge_adapter(model, result)  # into a full-precision copy
    assert merged.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="quantized"):
        merge_adapter(result.peft_model.base_model.model, result)
    assert_same(model, before)


# ----------------------------------------------------------------------------------------------------------------
# CLI


def cli_args(tmp_path) -> list[str]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    text = "\n\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(40)) + f" {i}." for i in range(400))
    (tmp_path / "corpus.txt").write_text(text)
    return ["heal", "--model", "tiny:llama", "--data", str(tmp_path / "corpus.txt"), "--steps", "3", "--rank", "4",
            "--batch-size", "2", "--max-length", "48", "--eval-samples", "4", "--save-steps", "2",
            "--out", str(tmp_path / "run")]


def test_cli_heals_merges_and_saves(tmp_path, capsys):
    from prune_core.cli import main
    from prune_core.models import load_model

    out = tmp_path / "run"
    argv = cli_args(tmp_path)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "held-out loss: before" in printed and "healed model saved" in printed
    meta = json.loads((out / "heal.json").read_text())
    assert meta["steps_done"] == 3 and meta["config"]["rank"] == 4
    assert load_model(str(out / "model"), device="cpu").num_layers == 6
    assert main(argv) == 2  # the folder now holds a run: refused without --resume / --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_cli_out_of_memory_exits_with_advice(tmp_path, capsys, monkeypatch):
    from transformers import Trainer

    from prune_core.cli import main

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "training_step", oom)
    assert main(cli_args(tmp_path)) == 2
    assert "--batch-size" in capsys.readouterr().err
