"""`prune-core eval`: held-out loss, the capital probe, multiple-choice sets and (optionally) lm-eval tasks."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "evaluate a model: held-out loss/perplexity, capital-city probe, MMLU/BoolQ/JSONL multiple choice, lm-eval"


def add_arguments(parser) -> None:
    from prune_core.cli.info import add_model_arguments
    from prune_core.cli.similarity import add_data_arguments
    from prune_core.probe import TEMPLATES

    add_model_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--samples", type=int, default=32, help="held-out windows for the loss (default 32)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per window (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    parser.add_argument("--no-loss", action="store_true", help="skip the held-out loss")
    parser.add_argument("--no-probe", action="store_true", help="skip the capital-city probe")
    parser.add_argument("--probe-template", choices=TEMPLATES, default="auto",
                        help="auto: the chat template when the tokenizer has one (default)")
    parser.add_argument("--probe-limit", type=int, default=None, help="only the first N probe countries")
    parser.add_argument("--mc", action="append", default=[],
                        help="multiple-choice set (repeatable): mmlu, boolq, mmlu:PATH, boolq:PATH or a .jsonl file "
                             "with question, choices, answer")
    parser.add_argument("--mc-limit", type=int, default=None, help="questions per set (per subject for MMLU)")
    parser.add_argument("--shots", type=int, default=5, help="MMLU shots from the dev split, 0-5 (default 5)")
    parser.add_argument("--lm-eval", default=None,
                        help="comma-separated lm-evaluation-harness tasks (needs: pip install lm-eval==0.4.13)")
    parser.add_argument("--lm-eval-include", default=None, help="folder of extra lm-eval task YAML files")
    parser.add_argument("--lm-eval-limit", type=int, default=None, help="examples per lm-eval task")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")


def evaluate_all(loaded, args, progress=None) -> dict:
    """Every measure the options ask for, as one dict."""
    from prune_core.cli.similarity import source_from_args
    from prune_core.evaluate import heldout_loss, question_set, run_lm_eval, score_questions
    from prune_core.probe import capital_probe

    out: dict = {"model": loaded.name, **loaded.summary()}
    if not args.no_loss:
        source = source_from_args(args)
        out["loss"] = heldout_loss(loaded.model, loaded.tokenizer, source, n_samples=args.samples,
                                   max_length=args.max_length, batch_size=args.batch_size, progress=progress)
        out["loss"]["data"] = source.describe()
    if not args.no_probe:
        probe = capital_probe(loaded.model, loaded.tokenizer, template=args.probe_template, limit=args.probe_limit,
                              progress=progress)
        out["probe"] = {k: v for k, v in probe.items() if k != "correct"}
    for spec in args.mc:
        questions = question_set(spec, limit=args.mc_limit, shots=args.shots)
        result = score_questions(loaded.model, loaded.tokenizer, questions, batch_size=args.batch_size,
                                 progress=progress)
        out.setdefault("mc", {})[spec] = {k: result[k] for k in ("accuracy", "subject_accuracy", "n", "chance")}
    if args.lm_eval:
        out["lm_eval"] = run_lm_eval(loaded.model, loaded.tokenizer, args.lm_eval.split(","),
                                     include_path=args.lm_eval_include, limit=args.lm_eval_limit,
                                     batch_size=args.batch_size)
    return out


def _print_text(result: dict) -> None:
    print(f"model: {result['model']} ({result['layers']} layers, {result['parameters'] / 1e6:.1f}M parameters)")
    if "loss" in result:
        loss = result["loss"]
        print(f"held-out loss: {loss['loss']:.4f}  perplexity: {loss['perplexity']:.2f}  "
              f"loss/log(vocab): {loss['normalized_loss']:.4f}  ({loss['tokens']} tokens of {loss['data']})")
    if "probe" in result:
        p = result["probe"]
        print(f"capital probe: {p['accuracy']:.3f} on {p['n']} countries (chance {p['chance']:.2f}, "
              f"{p['template']} template)")
    for spec, r in result.get("mc", {}).items():
        print(f"{spec}: accuracy {r['accuracy']:.3f}, mean over subjects {r['subject_accuracy']:.3f} "
              f"({r['n']} questions, chance {r['chance']:.2f})")
    for task, values in result.get("lm_eval", {}).items():
        print(f"lm-eval {task}: " + ", ".join(f"{k}={v}" for k, v in values.items() if k not in ("name", "alias")))


def run(args) -> int:
    from prune_core.cli.info import load_from_args
    from prune_core.progress import TqdmProgress

    for flag, value in (("--samples", args.samples), ("--max-length", args.max_length),
                        ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1 (got {value})")
    loaded = load_from_args(args)
    result = evaluate_all(loaded, args, progress=TqdmProgress())
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        Path(args.out).expanduser().write_text(text)
    if args.json:
        print(text)
    else:
        _print_text(result)
    return 0
