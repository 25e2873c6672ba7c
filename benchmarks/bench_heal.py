"""Healing throughput and peak memory: ``prune_core.heal.heal`` against a plain peft + ``Trainer`` script with the
same settings (model, data, LoRA config, schedule, batch), measured in the same run, each in a fresh process.

    .venv/bin/python benchmarks/bench_heal.py [--steps 8] [--model default]

Prints tokens/s and peak resident memory of both, and the ratio heal / plain (target: throughput >= 1.0).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time


def _setup(model_source: str, steps: int):
    from prune_core.data import token_samples
    from prune_core.heal import preset
    from prune_core.models import load_model
    from prune_core.prune import drop_layers

    loaded = load_model(model_source, device="cpu")
    layers = loaded.num_layers
    pruned = drop_layers(loaded.model, range(layers - 7, layers - 1))  # a 6-layer block, as in the tests
    del loaded.model
    config = preset("quick-cpu", steps=steps, warmup_steps=1, save_steps=1000, eval_samples=1)
    train = token_samples(loaded.tokenizer, "python-docs", "heal", n_samples=steps * config.batch_size,
                          max_length=config.max_length)
    return pruned, loaded.tokenizer, config, train


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_heal(model_source: str, steps: int, queue) -> None:
    from prune_core.heal import heal

    pruned, tok, config, train = _setup(model_source, steps)
    start_rss = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as out:
        result = heal(pruned, tok, {"heal": train, "eval": train[:1]}, config, output_dir=f"{out}/run")
    tokens = sum(len(s) for s in train[: config.steps * config.batch_size * config.grad_accum])
    queue.put({"tokens_per_s": tokens / result.train_seconds, "peak_mb": _peak_rss_mb(), "start_mb": start_rss})


def run_plain(model_source: str, steps: int, queue) -> None:
    """What a user would write by hand: get_peft_model on the model, a collator, Trainer.train()."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed

    pruned, tok, c, train = _setup(model_source, steps)
    start_rss = _peak_rss_mb()
    set_seed(c.seed)
    model = get_peft_model(pruned, LoraConfig(r=c.rank, lora_alpha=c.lora_alpha, lora_dropout=c.dropout,
                                              target_modules=["gate_proj", "up_proj", "down_proj"],
                                              task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=c.steps, per_device_train_batch_size=c.batch_size,
                                 gradient_accumulation_steps=c.grad_accum, learning_rate=c.lr,
                                 lr_scheduler_type=c.scheduler, warmup_steps=c.warmup_steps, seed=c.seed,
                                 logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                                 disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=[{"input_ids": s} for s in train],
                          data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    tokens = sum(len(s) for s in train[: c.steps * c.batch_size * c.grad_accum])
    queue.put({"tokens_per_s": tokens / seconds, "peak_mb": _peak_rss_mb(), "start_mb": start_rss})


def measure(target, model_source: str, steps: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(model_source, steps, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    plain = measure(run_plain, args.model, args.steps)
    ours = measure(run_heal, args.model, args.steps)
    for name, r in (("plain peft + Trainer", plain), ("prune_core.heal", ours)):
        print(f"{name:>22}: {r['tokens_per_s']:8.1f} tokens/s, peak RSS {r['peak_mb']:7.0f} MB "
              f"(+{r['peak_mb'] - r['start_mb']:.0f} MB during training)")
    print(f"throughput ratio heal / plain: {ours['tokens_per_s'] / plain['tokens_per_s']:.2f}x (target >= 1.0)")
    print(f"peak memory ratio heal / plain: {ours['peak_mb'] / plain['peak_mb']:.2f}x (lower is better)")


if __name__ == "__main__":
    main()
