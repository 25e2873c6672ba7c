"""Generation and side-by-side comparison of models (original, pruned, healed) under identical settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from prune_core.evaluate import model_device, pad_id_of
from prune_core.models import count_parameters, memory_bytes, num_layers
from prune_core.progress import ProgressFn, check_cancel, report


@dataclass(frozen=True)
class GenerationSettings:
    """One set of settings shared by every model of a comparison. Greedy unless ``do_sample``; sampling reseeds
    torch with ``seed`` before each generation, so every model sees the same random stream. ``chat_template`` None
    means: use it when the tokenizer has one."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    chat_template: bool | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 8192:
            raise ValueError(f"max_new_tokens must be between 1 and 8192, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def generate_kwargs(self) -> dict:
        """Keyword arguments for ``model.generate`` (sampling knobs only when sampling, so greedy is warning-free)."""
        kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, use_cache=self.use_cache)
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


def encode_prompt(tokenizer, prompt: str, chat_template: bool | None = None) -> dict:
    """Input ids and attention mask for one prompt, wrapped as a user message when the chat template is used."""
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat_template is None else chat_template
    if use_chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat_template=True needs a tokenizer with a chat template")
    if use_chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    else:
        enc = tokenizer(prompt, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def model_stats(model: torch.nn.Module) -> dict:
    """Parameter count, decoder layer count and memory footprint (weights and buffers) of a model."""
    return {"num_params": count_parameters(model), "num_layers": num_layers(model),
            "memory_mb": round(memory_bytes(model) / 2**20, 1)}


@torch.no_grad()
def generate_text(model: torch.nn.Module, tokenizer, prompt: str, settings: GenerationSettings | None = None) -> dict:
    """Generate a reply to ``prompt``. Returns text, new_tokens, latency_s, tokens_per_s and the new token_ids."""
    settings = settings or GenerationSettings()
    inputs = {k: v.to(model_device(model)) for k, v in encode_prompt(tokenizer, prompt, settings.chat_template).items()}
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    start = time.perf_counter()
    out = model.generate(**inputs, pad_token_id=pad_id_of(tokenizer), **settings.generate_kwargs())
    latency = time.perf_counter() - start
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    return {"text": tokenizer.decode(new, skip_special_tokens=True), "new_tokens": len(new),
            "latency_s": latency, "tokens_per_s": len(new) / latency if latency > 0 else float("inf"),
            "token_ids": new}


def compare_generations(models: dict[str, tuple], prompts: str | list[str], settings: GenerationSettings | None = None,
                        *, progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> list[dict]:
    """Generate every prompt with every model (``name -> (model, tokenizer)``) under the same settings. One row per
    (model, prompt): model, prompt, text, new_tokens, latency_s, tokens_per_s, num_params, num_layers, memory_mb."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not models:
        raise ValueError("no models to compare")
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("give at least one non-empty prompt")
    settings = settings or GenerationSettings()
    rows, total = [], len(models) * len(prompts)
    for name, (model, tokenizer) in models.items():
        stats = model_stats(model)
        for prompt in prompts:
            check_cancel(cancel)
            result = generate_text(model, tokenizer, prompt, settings)
            result.pop("token_ids")
            rows.append({"model": name, "prompt": prompt, **result, **stats})
            report(progress, "generating", len(rows), total, model=name)
    return rows


def stream_generation(model: torch.nn.Module, tokenizer, prompt: str,
                      settings: GenerationSettings | None = None) -> Iterator[str]:
    """Yield the reply to ``prompt`` in text chunks as they are generated (for live display)."""
    from transformers import TextIteratorStreamer

    settings = settings or GenerationSettings()
    inputs = {k: v.to(model_device(model)) for k, v in encode_prompt(tokenizer, prompt, settings.chat_template).items()}
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            if settings.do_sample:
                torch.manual_seed(settings.seed)
            with torch.no_grad():
                model.generate(**inputs, streamer=streamer, pad_token_id=pad_id_of(tokenizer),
                               **settings.generate_kwargs())
        except Exception as err:  # re-raised in the caller's thread below
            errors.append(err)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield from (chunk for chunk in streamer if chunk)
    thread.join()
    if errors:
        raise errors[0]

