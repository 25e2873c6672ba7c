"""Healing throughput and peak memory: ``prune_core.heal.heal`` against a plain peft + ``Trainer`` script with the
same settings (model, data, LoRA config, schedule, batch), measured in the same run, each in a fresh process, in
the order plain, heal, heal, plain (so a change in machine load hits both), keeping each one's best.

    .venv/bin/python benchmarks/bench_heal.py [--steps 4] [--model default|tiny:llama]

Prints tokens/s of Trainer.train() (per wall second, and per CPU second, which is steadier on a shared machine),
peak resident memory of both, and the ratio heal / plain (target: throughput >= 1.0). The model is the default one
without its most redundant 6-layer block, healed with the quick-cpu preset.
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
    from prune_core.similarity import compute_similarity

    loaded = load_model(model_source, device="cpu")
    sim = compute_similarity(loaded.model, loaded.tokenizer, "python-docs", n_samples=16, max_length=128)  # cached
    pruned = drop_layers(loaded.model, sim.best_layers(max(1, round(loaded.num_layers / 5))))  # 6 of 30
    del loaded.model
    config = preset("quick-cpu", steps=steps, warmup_steps=1, save_steps=1000, eval_samples=1)
    train = token_samples(loaded.tokenizer, "python-docs", "heal", n_samples=steps * config.batch_size,
                          max_length=config.max_length)
    return pruned, loaded.tokenizer, config, train


def _time_trainer_train(timings: dict) -> None:
    """Measure every ``Trainer.train()`` call the same way in both scripts: wall and CPU seconds."""
    from transformers import Trainer

    original = Trainer.train

    def timed(self, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            timings.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)

    Trainer.train = timed


def _report(train: list, config, timings: dict, start_rss: float) -> dict:
    tokens = sum(len(s) for s in train[: config.steps * config.batch_size * config.grad_accum])
    return {"tokens_per_s": tokens / timings["wall"], "tokens_per_cpu_s": tokens / timings["cpu"],
            "peak_mb": _peak_rss_mb(), "start_mb": start_rss}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_heal(model_source: str, steps: int, queue) -> None:
    from prune_core.heal import heal

    pruned, tok, config, train = _setup(model_source, steps)
    timings: dict = {}
    _time_trainer_train(timings)
    start_rss = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as out:
        heal(pruned, tok, {"heal": train, "eval": train[:1]}, config, output_dir=f"{out}/run")
    queue.put(_report(train, config, timings, start_rss))


def run_plain(model_source: str, steps: int, queue) -> None:
    """What a user would write by hand: get_peft_model on the model, a collator, Trainer.train()."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed

    pruned, tok, c, train = _setup(model_source, steps)
    timings: dict = {}
    _time_trainer_train(timings)
    start_rss = _peak_rss_mb()
    set_seed(c.seed)
    model = get_peft_model(pruned, LoraConfig(r=c.rank, lora_alpha=c.lora_alpha, lora_dropout=c.dropout,
                                              target_modules=["gate_proj", "up_proj", "down_proj"],
                                              task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=c.steps, per_device_train_batch_size=c.batch_size,
                                 gradient_accumulation_steps=c.grad_accum, learning_rate=c.lr,
                                 lr_scheduler_type=c.scheduler, warmup_steps=c.warmup_steps, seed=c.seed,
                                 logging_steps=1, save_strategy="no", report_to="none", use_cpu=True)
        trainer = Trainer(model=model, args=args, train_dataset=[{"input_ids": s} for s in train],
                          data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
        trainer.train()
    queue.put(_report(train, c, timings, start_rss))


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
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    runs = {"plain": [], "heal": []}
    for name in ("plain", "heal", "heal", "plain"):
        runs[name].append(measure(run_plain if name == "plain" else run_heal, args.model, args.steps))
        r = runs[name][-1]
        print(f"{name}: {r['tokens_per_s']:.1f} tokens/s, {r['tokens_per_cpu_s']:.1f} tokens/CPU-s", flush=True)
    plain, ours = (max(runs[name], key=lambda r: r["tokens_per_s"]) for name in ("plain", "heal"))
    for name, r in (("plain peft + Trainer", plain), ("prune_core.heal", ours)):
        print(f"{name:>22}: {r['tokens_per_s']:8.1f} tokens/s ({r['tokens_per_cpu_s']:.1f} per CPU-second), peak "
              f"RSS {r['peak_mb']:7.0f} MB (+{r['peak_mb'] - r['start_mb']:.0f} MB during training)")
    cpu = max(r["tokens_per_cpu_s"] for r in runs["heal"]) / max(r["tokens_per_cpu_s"] for r in runs["plain"])
    print(f"throughput ratio heal / plain: {ours['tokens_per_s'] / plain['tokens_per_s']:.2f}x wall, {cpu:.2f}x CPU "
          f"time (target >= 1.0)")
    print(f"peak memory ratio heal / plain: {ours['peak_mb'] / plain['peak_mb']:.2f}x (lower is better)")


if __name__ == "__main__":
    main()
