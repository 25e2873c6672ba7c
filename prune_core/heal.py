"""Healing a pruned model with LoRA / QLoRA (Gromov et al. 2024, arXiv 2403.17887, appendix: "healing").

After a block of layers is removed, a little parameter-efficient finetuning on generic text repairs the mismatch
at the seam. The recipe: LoRA on the feed-forward projections only, alpha = rank, dropout 0.05, cosine schedule with
warm-up, peak learning rate 3e-4, 4-bit NF4 base weights on GPUs (QLoRA). Training is peft + the Hugging Face
``Trainer`` (gradient accumulation, checkpoints, mixed precision and ``accelerate launch`` come from there).

Layout of ``output_dir``: ``checkpoints/checkpoint-N`` (resumable), ``adapter/`` (the LoRA weights, written when
training ends or is stopped) and ``heal.json`` (settings, losses, history). The input model is never changed.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prune_core.evaluate import pad_id_of, sequences_loss
from prune_core.heal_config import PRESETS, HealConfig, preset
from prune_core.heal_trainer import (
    build_trainer,
    check_resumable,
    clear_failures,
    is_main_process,
    is_quantized,
    prepare_output,
    save_adapter,
    start_run,
    training_model,
    write_json,
)
from prune_core.models import arch_spec, get_layers
from prune_core.progress import ProgressFn, check_cancel

__all__ = ["HealConfig", "HealResult", "PRESETS", "heal", "lora_targets", "merge_adapter", "preset", "save_healed"]

_LINEAR = (nn.Linear, Conv1D)  # bitsandbytes' Linear4bit is an nn.Linear too
_FFN_HINTS = ("mlp", "ffn", "feed_forward", "fc")  # names of feed-forward submodules, for the fallback
CPU_NOTE = ("CPU: LoRA on full-precision weights (4-bit QLoRA saves memory on GPUs but is slow on CPUs and needs "
            "bitsandbytes' CPU kernels); pass load_in_4bit=True (--load-in-4bit) to quantize anyway")


@dataclass
class HealResult:
    """What a healing run did: where its files are, the losses before and after, and the step history."""

    output_dir: Path
    adapter_dir: Path
    config: HealConfig
    target_modules: list[str]
    loss_before: float | None
    loss_after: float | None
    global_step: int
    stopped: bool
    history: list[dict]  # one row per optimizer step: step, loss, lr
    tokens_per_s: float
    train_seconds: float
    load_in_4bit: bool
    source: str
    notes: list[str] = field(default_factory=list)
    peft_model: nn.Module | None = field(default=None, repr=False)  # the trained model, adapter not merged

    def summary(self) -> dict:
        """Plain values, for JSON, the model card and display."""
        return {"source": self.source, "steps_done": self.global_step, "stopped": self.stopped,
                "loss_before": self.loss_before, "loss_after": self.loss_after, "target_modules": self.target_modules,
                "load_in_4bit": self.load_in_4bit, "tokens_per_s": round(self.tokens_per_s, 1),
                "train_seconds": round(self.train_seconds, 1), "notes": self.notes, "config": self.config.to_dict()}


# --------------------------------------------------------------------------------------------------------------
# LoRA targets


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, _LINEAR)]


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)  # peft's rule for a list of target names


def _infer_ffn_targets(model: nn.Module) -> list[str]:
    """Linear / Conv1D layers inside each decoder block's feed-forward submodule, named relative to the block."""
    found: list[str] = []
    for block in get_layers(model):
        for name, module in block.named_modules():
            top = name.split(".")[0].lower()
            if isinstance(module, _LINEAR) and any(hint in top for hint in _FFN_HINTS) and name not in found:
                found.append(name)
    return found


def lora_targets(model: nn.Module, requested: Sequence[str] | None = None) -> tuple[list[str], str | None]:
    """The module names LoRA adapts, and a note when they had to be inferred.

    ``requested`` names are checked against the model; by default the family's feed-forward projections come from
    :data:`prune_core.models.ARCHITECTURES`, falling back to the linear layers inside each block's MLP.
    """
    names = _linear_names(model)
    wanted = list(requested) if requested else list(arch_spec(model).ffn_modules)
    found = [t for t in wanted if any(_matches(n, t) for n in names)]
    if requested:
        missing = [t for t in wanted if t not in found]
        if missing:
            raise ValueError(f"no matching target modules for {missing}; linear layers of the first block: "
                             f"{_infer_all_block_linears(model)}")
        return found, None
    if found:
        return found, None
    inferred = _infer_ffn_targets(model)
    if not inferred:
        raise ValueError(f"no matching target modules: {model.config.model_type!r} has none of {wanted} and no "
                         f"linear layer inside an MLP submodule; pass target_modules (--target-modules) from "
                         f"{_infer_all_block_linears(model)}")
    return inferred, (f"{model.config.model_type!r}: none of {wanted} found; LoRA targets inferred from the "
                      f"feed-forward submodule: {inferred}")


def _infer_all_block_linears(model: nn.Module) -> list[str]:
    return [n for n, m in get_layers(model)[0].named_modules() if isinstance(m, _LINEAR)]


# --------------------------------------------------------------------------------------------------------------
# Data, precision, the model to train


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _token_data(tokenizer, source, config: HealConfig, notes: list[str]) -> tuple[list, list, str]:
    """Training sequences (role "heal"), held-out ones (role "eval") and a description of the source.
    ``source`` is a data source (spec or DataSource) or a mapping ``{"heal": [[ids]], "eval": [[ids]]}``."""
    if isinstance(source, Mapping):
        if set(source) != {"heal", "eval"}:
            raise ValueError(f"token data must have exactly the keys 'heal' and 'eval', got {sorted(source)}")
        return [list(s) for s in source["heal"]], [list(s) for s in source["eval"]], "token ids"
    from prune_core.data import parse_source

    src = parse_source(source)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    wanted = config.n_samples or config.steps * config.global_batch(world)
    train = _up_to(tokenizer, src, "heal", wanted, config.max_length, config.seed)
    if len(train) < wanted:
        notes.append(f"the heal split of {src.describe()} holds {len(train)} sequences of {config.max_length} tokens "
                     f"({wanted} wanted): training cycles over them")
    held = _up_to(tokenizer, src, "eval", config.eval_samples, config.max_length, config.seed)
    return train, held, src.describe()


def _up_to(tokenizer, src, role: str, n: int, max_length: int, seed: int) -> list[list[int]]:
    """``n`` token windows of the ``role`` split, or all it has when that is fewer (at least one)."""
    from prune_core.data import token_samples

    return token_samples(tokenizer, src, role, n_samples=n, max_length=max_length, seed=seed, allow_fewer=True)


def _use_4bit(config: HealConfig, model: nn.Module, notes: list[str]) -> bool:
    device = _model_device(model)
    if is_quantized(model):
        return True
    if config.load_in_4bit is None and device.type != "cuda":
        notes.append(CPU_NOTE if device.type == "cpu" else f"{device.type}: LoRA on full-precision weights")
    return config.load_in_4bit if config.load_in_4bit is not None else device.type == "cuda"


@torch.no_grad()
def _loss(model: nn.Module, sequences: list[list[int]], tokenizer, config: HealConfig, cancel) -> float:
    """Held-out loss per token, in eval mode (the model's train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return sequences_loss(model, sequences, batch_size=config.batch_size, pad_id=pad_id_of(tokenizer),
                              cancel=cancel)["loss"]
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------------------------
# Healing, merging, saving


def _history(log_history: list[dict]) -> list[dict]:
    return [{"step": e["step"], "loss": e["loss"], "lr": e.get("learning_rate")} for e in log_history if "loss" in e]


def heal(model: nn.Module, tokenizer, source, config: HealConfig | None = None, *, output_dir: str | Path,
         progress: ProgressFn | None = None, cancel: threading.Event | None = None, resume: bool = False,
         overwrite: bool = False) -> HealResult:
    """Train a LoRA adapter that heals ``model`` on the "heal" split of ``source``; ``model`` is not changed.

    ``config`` defaults to the paper's preset. The held-out loss (the "eval" split) is measured before and after.
    ``progress`` gets every step (loss, lr, tokens/s, eta); setting ``cancel`` stops at the next step with a
    checkpoint and the adapter saved; ``resume=True`` continues from the last checkpoint in ``output_dir``.
    """
    config = config or PRESETS["paper"]
    out = Path(output_dir).expanduser().resolve()
    checkpoint = prepare_output(out, resume, overwrite)
    if resume:
        check_resumable(out, config)
    notes: list[str] = []
    targets, note = lora_targets(model, config.target_modules)
    notes += [note] if note else []
    use_4bit = _use_4bit(config, model, notes)
    train, held_out, described = _token_data(tokenizer, source, config, notes)
    train = [s for s in train if len(s) >= 2]
    if not train:
        raise ValueError("no training sequence has at least 2 tokens: nothing to learn from")
    loss_before = _loss(model, held_out, tokenizer, config, cancel)
    check_cancel(cancel)
    with clear_failures(config, out / "checkpoints"):
        peft_model = training_model(model, config, targets, use_4bit, out)
    if resume and checkpoint is None:
        notes.append(f"no complete checkpoint in {out / 'checkpoints'}: started at step 0")
    main = is_main_process()
    if main:
        start_run(out, config, described, clear=overwrite)
    trainer, callback = build_trainer(peft_model, train, config, out, pad_id_of(tokenizer), progress, cancel)
    start = time.perf_counter()
    with clear_failures(config, out / "checkpoints"):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - start
    loss_after = None if callback.stopped else _loss(peft_model, held_out, tokenizer, config, None)
    result = HealResult(out, out / "adapter", config, targets, loss_before, loss_after, trainer.state.global_step,
                        callback.stopped, _history(trainer.state.log_history),
                        callback.session_tokens_per_s(trainer.state), seconds, use_4bit, described, notes, peft_model)
    if main:
        with clear_failures(config, out / "checkpoints"):
            save_adapter(peft_model, result.adapter_dir)
            write_json(out / "heal.json", {"status": "stopped" if callback.stopped else "done", **result.summary(),
                                            "history": result.history})
    return result


def merge_adapter(model: nn.Module, adapter: HealResult | str | Path) -> nn.Module:
    """A new model: a full-precision copy of ``model`` with the LoRA adapter merged into its weights.

    ``model`` must be the (pruned) model that was healed, in 16 or 32 bits: merging into 4-bit weights would
    round the update away (the usual QLoRA practice is to merge into a full-precision reload). ``model`` is unchanged.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter.adapter_dir if isinstance(adapter, HealResult) else adapter).expanduser()
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no LoRA adapter in {adapter_dir} (adapter_config.json is missing)")
    if is_quantized(model):
        raise ValueError("cannot merge into a quantized model: load the pruned model without 4-bit (no "
                         "--load-in-4bit) and merge into that")
    merged = PeftModel.from_pretrained(copy.deepcopy(model), str(adapter_dir)).merge_and_unload()
    return merged.eval()


def healing_card(result: HealResult) -> dict:
    """The healing settings and losses, as model-card entries."""
    c = result.config
    card = {"healing": {"method": "QLoRA (4-bit NF4)" if result.load_in_4bit else "LoRA",
                        "rank": c.rank, "alpha": c.lora_alpha, "dropout": c.dropout,
                        "targets": " ".join(result.target_modules), "steps": result.global_step, "lr": c.lr,
                        "schedule": f"{c.scheduler}, {c.warmup_steps} warm-up steps",
                        "global_batch": c.global_batch(), "max_length": c.max_length, "seed": c.seed},
            "healing_data": result.source}
    if result.loss_before is not None and result.loss_after is not None:
        card["held_out_loss"] = {"before": round(result.loss_before, 4), "after": round(result.loss_after, 4)}
    return card


def save_healed(merged: nn.Module, tokenizer, out_dir: str | Path, result: HealResult, *,
                overwrite: bool = False) -> Path:
    """Save a merged healed model (see :func:`merge_adapter`) with its prune metadata and the healing settings in
    the model card and ``prune.json``. Atomic; refuses a non-empty ``out_dir`` unless ``overwrite``."""
    from prune_core.prune import save_model

    if any(isinstance(m, nn.Module) and "lora" in type(m).__name__.lower() for m in merged.modules()):
        raise ValueError("this model still holds LoRA layers: merge it first with merge_adapter(model, result)")
    return save_model(merged, tokenizer, out_dir, overwrite=overwrite, card=healing_card(result))
