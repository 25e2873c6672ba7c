"""`prune-core compare`: the same prompts through the original model and pruned variants (or other models), side by
side, with speed and size."""

from __future__ import annotations

from pathlib import Path

HELP = "generate with a model and its pruned variants (or other models) under the same settings, side by side"


def add_arguments(parser) -> None:
    from prune_core.cli.info import add_model_arguments
    from prune_core.cli.similarity import add_data_arguments

    add_model_arguments(parser)
    parser.add_argument("--also", action="append", default=[], metavar="MODEL",
                        help="another model to compare (repeatable): a folder, a .gguf file or a hub id")
    parser.add_argument("--drop-best", action="append", type=int, default=[], metavar="N",
                        help="add --model without its most redundant block of N layers (repeatable)")
    parser.add_argument("--drop-deepest", action="append", type=int, default=[], metavar="N",
                        help="add --model without its N deepest layers except the last (repeatable)")
    parser.add_argument("--drop-layers", action="append", default=[], metavar="SPEC",
                        help="add --model without these 0-based layers, e.g. '20-25,27' (repeatable)")
    add_data_arguments(parser)  # calibration text for --drop-best
    parser.add_argument("--samples", type=int, default=64, help="calibration windows for --drop-best (default 64)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per calibration window (default 256)")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", default=None, help="a text file with one prompt per line")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--sample", action="store_true", help="sample (seeded) instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    parser.add_argument("--csv", default=None, help="write every row (text, latency, tokens/s, size) to this CSV")


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        lines = Path(args.prompts_file).expanduser().read_text(encoding="utf-8").splitlines()
        prompts += [line for line in lines if line.strip()]
    if not prompts:
        raise ValueError("give at least one --prompt or a --prompts-file")
    return prompts


def build_models(args, loaded) -> dict[str, tuple]:
    """name -> (model, tokenizer): --model, its pruned variants, then the --also models."""
    from prune_core.cli.info import load_from_args
    from prune_core.cli.similarity import source_from_args
    from prune_core.progress import TqdmProgress
    from prune_core.prune import drop_layers, parse_layer_spec, select_layers
    from prune_core.similarity import compute_similarity

    base, tok, L = loaded.model, loaded.tokenizer, loaded.num_layers
    models = {f"{loaded.name} ({L} layers)": (base, tok)}
    result = None
    if args.drop_best:
        source = source_from_args(args)
        result = compute_similarity(base, tok, source, n_samples=args.samples, max_length=args.max_length,
                                    progress=TqdmProgress())
    variants = [("similarity", n, None) for n in args.drop_best] + [("deepest", n, None) for n in args.drop_deepest]
    variants += [("manual", None, parse_layer_spec(spec)) for spec in args.drop_layers]
    for strategy, n, layers in variants:
        drop = select_layers(L, strategy, n=n, layers=layers, result=result)
        models[f"{strategy} -{len(drop)} [{_ranges(drop)}]"] = (drop_layers(base, drop, share_weights=True,
                                                                            method=strategy), tok)
    for source in args.also:
        other = load_from_args(_with_model(args, source))
        models[f"{other.name} ({other.num_layers} layers)"] = (other.model, other.tokenizer)
    return models


def _ranges(layers: list[int]) -> str:
    contiguous = layers == list(range(layers[0], layers[-1] + 1))
    return f"{layers[0]}-{layers[-1]}" if contiguous else ",".join(map(str, layers))


def _with_model(args, source: str):
    import argparse

    return argparse.Namespace(**{**vars(args), "model": source})


def run(args) -> int:
    import pandas as pd

    from prune_core.cli.info import load_from_args
    from prune_core.generate import GenerationSettings, compare_generations
    from prune_core.progress import TqdmProgress

    prompts = _prompts(args)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                                  temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                  chat_template=False if args.no_chat_template else None)
    models = build_models(args, load_from_args(args))
    rows = compare_generations(models, prompts, settings, progress=TqdmProgress())
    for prompt in prompts:
        print(f"\n=== {prompt}")
        for r in (r for r in rows if r["prompt"] == prompt):
            print(f"--- {r['model']}: {r['num_layers']} layers, {r['num_params'] / 1e6:.1f}M params, "
                  f"{r['memory_mb']:.0f} MB, {r['new_tokens']} tokens in {r['latency_s']:.2f} s "
                  f"({r['tokens_per_s']:.1f} tok/s)")
            print(r["text"].strip())
    if args.csv:
        pd.DataFrame(rows).to_csv(Path(args.csv).expanduser(), index=False)
        print(f"\nwrote {args.csv}")
    return 0
