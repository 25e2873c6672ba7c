"""Hugging Face ``Trainer`` plumbing for healing: the collator, the live-progress / stop callback, the training
arguments, the model to train (a frozen or 4-bit copy with LoRA), resumable checkpoints, the output folder, and
clear errors for out-of-memory and a full disk. The recipe itself lives in :mod:`prune_core.heal`."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback, TrainingArguments

from prune_core.heal_config import RESUME_FIELDS, HealConfig
from prune_core.models import bnb_4bit_config, disable_avx512_bf16
from prune_core.progress import ProgressFn, report
from prune_core.prune import move_into_place

CHECKPOINT_PREFIX = "checkpoint-"


def collate_fn(pad_id: int):
    """Right-pad a list of ``{"input_ids": [...]}`` into input_ids / attention_mask / labels (-100 on padding)."""

    def collate(features: list[dict]) -> dict:
        T = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), T), pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(features), T), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            mask[i, : len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    return collate


def training_arguments(config: HealConfig, checkpoint_dir: Path, device: torch.device) -> TrainingArguments:
    """The paper's schedule as ``TrainingArguments``: cosine with warm-up, checkpoints every ``save_steps``,
    bf16 (fp16 where bf16 is missing) on CUDA, full precision elsewhere."""
    cuda = device.type == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=str(checkpoint_dir), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr, lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, seed=config.seed,
        data_seed=config.seed, bf16=bf16, fp16=cuda and not bf16, use_cpu=not cuda,
        logging_steps=1, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, report_to="none", disable_tqdm=True,
        remove_unused_columns=False, include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
    )


class HealCallback(TrainerCallback):
    """Reports every optimizer step (loss, learning rate, tokens/s, time left) and stops at the next step once
    ``cancel`` is set, saving a checkpoint there so the run can resume and the adapter is kept."""

    def __init__(self, progress: ProgressFn | None, cancel: threading.Event | None) -> None:
        self.progress, self.cancel = progress, cancel
        self.history: list[dict] = []
        self.stopped = False
        self._start = self._end = 0.0
        self._first_step = 0
        self._first_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        self._first_step, self._first_tokens = state.global_step, state.num_input_tokens_seen
        report(self.progress, "healing", state.global_step, state.max_steps)

    def on_train_end(self, args, state, control, **kwargs):
        self._end = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.cancel is not None and self.cancel.is_set():
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        steps = max(state.global_step - self._first_step, 1)
        row = {"step": state.global_step, "loss": float(logs["loss"]),
               "lr": float(logs.get("learning_rate", 0.0)),
               "tokens_per_s": (state.num_input_tokens_seen - self._first_tokens) / elapsed,
               "eta_s": (state.max_steps - state.global_step) * elapsed / steps}
        self.history.append(row)
        report(self.progress, "healing", state.global_step, state.max_steps,
               **{k: v for k, v in row.items() if k != "step"})

    def session_tokens_per_s(self, state) -> float:
        """Tokens per second over this session's steps (not counting steps before a resume)."""
        elapsed = max((self._end or time.perf_counter()) - self._start, 1e-9)
        return (state.num_input_tokens_seen - self._first_tokens) / elapsed


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest *complete* checkpoint (its trainer_state.json is written last), or None."""
    if not checkpoint_dir.is_dir():
        return None
    done = [p for p in checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*")
            if p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]), default=None)


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and ("out of memory" in str(err).lower()
                                              or "can't allocate memory" in str(err).lower())


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    text = str(err).lower()
    return isinstance(err, (OSError, RuntimeError)) and ("no space left" in text or "file write failed" in text)


@contextmanager
def clear_failures(config: HealConfig, checkpoint_dir: Path):
    """Re-raise out-of-memory as ``MemoryError`` and a full disk as ``OSError(ENOSPC)``, with what to do next."""
    try:
        yield
    except BaseException as err:
        resumable = last_checkpoint(checkpoint_dir)
        tail = f"; the last complete checkpoint ({resumable.name}) resumes with resume=True (--resume)" \
            if resumable else ""
        if _is_oom(err):
            raise MemoryError(
                f"out of memory while healing with batch_size={config.batch_size}, max_length={config.max_length}: "
                f"lower --batch-size (raise --grad-accum to keep the global batch), lower --max-length, or use "
                f"--load-in-4bit{tail}") from err
        if _is_disk_full(err):
            raise OSError(errno.ENOSPC, f"disk full while writing to {checkpoint_dir.parent}: free some space or "
                                        f"choose another output folder{tail}") from err
        raise


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed (``accelerate launch``) run."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def build_trainer(peft_model, train: list[list[int]], config: HealConfig, out: Path, pad_id: int,
                  progress: ProgressFn | None, cancel: threading.Event | None):
    """A ``Trainer`` for ``peft_model`` on ``train``, with checkpoints in ``out/checkpoints``; and its callback."""
    from transformers import PrinterCallback, Trainer

    args = training_arguments(config, out / "checkpoints", next(peft_model.parameters()).device)
    args.label_names = ["labels"]
    callback = HealCallback(progress, cancel)
    trainer = Trainer(model=peft_model, args=args, train_dataset=[{"input_ids": s} for s in train],
                      data_collator=collate_fn(pad_id), callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # progress goes through our callback, not print()
    return trainer, callback


# --------------------------------------------------------------------------------------------------------------
# The model to train


def is_quantized(model: nn.Module) -> bool:
    """True for a model loaded with bitsandbytes (4- or 8-bit) weights."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
                or getattr(model, "hf_quantizer", None) is not None)


def quantized_copy(model: nn.Module, staging: Path) -> nn.Module:
    """A 4-bit NF4 copy of an in-memory model: saved once per machine to a folder in ``staging`` and reloaded with
    bitsandbytes by every process (under ``accelerate launch`` the other local processes wait for the first)."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM

    device, state = next(model.parameters()).device, PartialState()
    folder = staging / f".quantize-{socket.gethostname()}"
    where = device.index or 0 if device.type == "cuda" else "cpu"
    try:
        with state.local_main_process_first():
            if state.is_local_main_process:
                shutil.rmtree(folder, ignore_errors=True)
                model.save_pretrained(folder, safe_serialization=True)
            quantized = AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb_4bit_config(),
                                                             device_map={"": where}, dtype=torch.bfloat16)
        state.wait_for_everyone()
    finally:
        if state.is_local_main_process:
            shutil.rmtree(folder, ignore_errors=True)
    quantized.config.name_or_path = model.config.name_or_path  # not the deleted staging folder (peft reads both)
    quantized.name_or_path = getattr(model, "name_or_path", model.config.name_or_path)
    if device.type == "cpu":
        disable_avx512_bf16(quantized)  # before any forward pass: its AVX512-BF16 path corrupts later gradients
    return quantized


def frozen_copy(model: nn.Module) -> nn.Module:
    """New modules around ``model``'s weight storage, frozen: LoRA training never writes base weights, so this
    costs no weight memory and leaves ``model`` (and its requires_grad flags) untouched."""
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def training_model(model: nn.Module, config: HealConfig, targets: list[str], use_4bit: bool,
                   staging: Path) -> nn.Module:
    """A peft model around a copy (4-bit for QLoRA) of ``model``: only the LoRA weights require gradients."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    if use_4bit:
        base = copy.deepcopy(model) if is_quantized(model) else quantized_copy(model, staging)
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=config.gradient_checkpointing)
    else:
        base = frozen_copy(model)
        if config.gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
    base.config.use_cache = False
    set_seed(config.seed)  # LoRA's A matrices are drawn here
    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=config.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


# --------------------------------------------------------------------------------------------------------------
# The output folder


def prepare_output(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Check ``out`` and return the checkpoint to resume from (None to start at step 0)."""
    if resume and overwrite:
        raise ValueError("choose resume (continue the run in the folder) or overwrite (replace it), not both")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder")
    busy = out.is_dir() and any(out.iterdir())
    if busy and not (resume or overwrite) and is_main_process():  # other ranks may see the main one's files
        raise FileExistsError(f"{out} already holds files; pass resume=True (--resume) to continue its run or "
                              f"overwrite=True (--overwrite) to replace it")
    return last_checkpoint(out / "checkpoints") if resume else None


RUN_ENTRIES = ("checkpoints", "adapter", "heal.json", "model")  # what a run writes in its folder


def start_run(out: Path, config: HealConfig, source: str, *, clear: bool) -> None:
    """Create the run folder (``clear``: first remove what an earlier run wrote there, and nothing else) and
    record the settings, so that a resume can check them."""
    if clear:
        for name in RUN_ENTRIES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "heal.json", {"status": "running", "config": config.to_dict(), "source": source})


def check_resumable(out: Path, config: HealConfig) -> None:
    """Refuse to resume a run in ``out`` with settings that change the checkpoint's shapes or batches."""
    meta = out / "heal.json"
    if not meta.is_file():
        return
    old = json.loads(meta.read_text()).get("config", {})
    new = config.to_dict()
    changed = [f"{k} ({old.get(k)} -> {new[k]})" for k in RESUME_FIELDS if k in old and old[k] != new[k]]
    if changed:
        raise ValueError(f"cannot resume with different settings: {', '.join(changed)}; use the run's settings or "
                         f"overwrite=True (--overwrite) to start again")


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file, so a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def save_adapter(peft_model: nn.Module, target: Path) -> None:
    """Write the adapter to a temporary folder beside ``target`` and move it into place."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        peft_model.save_pretrained(tmp)
        move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
