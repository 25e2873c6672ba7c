"""Generation benchmark: greedy decoding speed of the default model with n layers removed against the original,
compared with the ideal speed-up L/(L-n) (every layer costs the same, nothing else costs anything). Prints
measured/limit per n (target: at least 0.85). Runs are interleaved (original, pruned, original, ...) and the
median of ``--repeats`` is used, so machine load affects both sides alike. Speed is also given per second of
process CPU time, which other processes on a shared machine disturb far less than wall-clock time (with one torch
thread, ``OMP_NUM_THREADS=1``, CPU time is the compute itself).

The embedding and the output projection (49152 x 576, about a fifth of SmolLM2-135M's compute per token) and the
decoding loop do not shrink when layers are removed, so on this model the ratio stays below 1 even in theory.

Run: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generation.py [--ns 3,6,9,12] [--tokens 64] [--repeats 3]`
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from prune_core.models import load_model
from prune_core.prune import drop_layers
from prune_core.similarity import deepest_layers

TARGET = 0.85
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@torch.no_grad()
def tokens_per_second(model, inputs: dict, tokens: int) -> tuple[float, float]:
    """Greedy decoding of exactly ``tokens`` new tokens (EOS ignored), with the KV cache: (tokens per wall-clock
    second, tokens per CPU second)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, temperature=None,
                         top_p=None, top_k=None, pad_token_id=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert out.shape[1] - inputs["input_ids"].shape[1] == tokens
    return tokens / wall, tokens / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ns", default="3,6,9,12", help="numbers of layers removed")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    loaded = load_model("default", device="cpu")
    model, tok, L = loaded.model, loaded.tokenizer, loaded.num_layers
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    inputs = dict(tok(text, add_special_tokens=False, return_tensors="pt"))
    tokens_per_second(model, inputs, 8)  # warm-up
    print(f"greedy generation, {args.tokens} new tokens, {L} layers, torch threads {torch.get_num_threads()}")
    print(f"{'n':>3} {'layers':>6} {'clock':>6} {'orig tok/s':>10} {'pruned tok/s':>12} {'speed-up':>8} {'limit':>6} "
          f"{'measured/limit':>14}")
    for n in (int(x) for x in args.ns.split(",")):
        pruned = drop_layers(model, deepest_layers(L, n), share_weights=True)  # speed depends on n, not on which
        runs = [(tokens_per_second(model, inputs, args.tokens), tokens_per_second(pruned, inputs, args.tokens))
                for _ in range(args.repeats)]
        limit = L / (L - n)
        for k, clock in enumerate(("wall", "cpu")):
            base = statistics.median(r[0][k] for r in runs)
            cut = statistics.median(r[1][k] for r in runs)
            print(f"{n:>3} {L - n:>6} {clock:>6} {base:>10.1f} {cut:>12.1f} {cut / base:>8.3f} {limit:>6.3f} "
                  f"{cut / base / limit:>14.3f}")
    print(f"target: measured/limit >= {TARGET}")


if __name__ == "__main__":
    main()
