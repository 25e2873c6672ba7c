"""`prune-core sweep`: quality against the number of layers removed, similarity method vs deepest-layers heuristic,
healed and not; one JSON per point (a stopped sweep resumes), results.csv and an offline sweep.html."""

from __future__ import annotations

HELP = "sweep the number of layers removed (similarity vs deepest, optionally healed) and plot the paper's figures"


def add_arguments(parser) -> None:
    from prune_core.cli.info import add_model_arguments
    from prune_core.cli.similarity import add_data_arguments
    from prune_core.heal_config import PRESETS
    from prune_core.probe import TEMPLATES
    from prune_core.sweep import STRATEGIES

    add_model_arguments(parser)
    add_data_arguments(parser)  # its calibration split picks blocks, its eval split scores, its heal split heals
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--ns", help="comma-separated numbers of layers to remove, e.g. 2,4,6,8")
    size.add_argument("--fractions", help="comma-separated fractions of the layers, e.g. 0.1,0.2,0.3")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, from: "
                        + ", ".join(STRATEGIES))
    parser.add_argument("--heal", choices=tuple(PRESETS), default=None, help="also heal every point with this preset")
    parser.add_argument("--heal-steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--heal-data", default=None, help="healing text (default: --data, its heal split)")
    parser.add_argument("--calib-samples", type=int, default=64, help="calibration windows (default 64)")
    parser.add_argument("--calib-max-length", type=int, default=256, help="tokens per calibration window")
    parser.add_argument("--eval-samples", type=int, default=32, help="held-out windows for the loss (default 32)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per held-out window (default 256)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-probe", action="store_true", help="skip the capital-city probe")
    parser.add_argument("--probe-template", choices=TEMPLATES, default="auto")
    parser.add_argument("--probe-limit", type=int, default=None, help="only the first N probe countries")
    parser.add_argument("--mc", default=None, help="also score a multiple-choice set: mmlu, boolq, NAME:PATH or .jsonl")
    parser.add_argument("--mc-limit", type=int, default=None, help="questions (per subject for MMLU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="sweep folder (reused: finished points are not recomputed)")


def _numbers(text: str, kind, flag: str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"{flag} takes comma-separated numbers, got {text!r}") from err


def run(args) -> int:
    from prune_core.cli.info import load_from_args
    from prune_core.cli.similarity import source_from_args
    from prune_core.data import parse_source
    from prune_core.progress import TqdmProgress
    from prune_core.similarity import compute_similarity
    from prune_core.sweep import SweepConfig, markdown_table, resolve_ns, run_sweep

    loaded = load_from_args(args)
    ns = resolve_ns(loaded.num_layers, ns=_numbers(args.ns, int, "--ns") if args.ns else None,
                    fractions=_numbers(args.fractions, float, "--fractions") if args.fractions else None)
    source = source_from_args(args)
    config = SweepConfig(ns=tuple(ns), strategies=tuple(s.strip() for s in args.strategies.split(",")),
                         eval_source=source, eval_samples=args.eval_samples, max_length=args.max_length,
                         batch_size=args.batch_size, probe=not args.no_probe, probe_template=args.probe_template,
                         probe_limit=args.probe_limit, mc=args.mc, mc_limit=args.mc_limit, heal_preset=args.heal,
                         heal_source=parse_source(args.heal_data) if args.heal_data else None,
                         heal_steps=args.heal_steps, seed=args.seed)
    progress = TqdmProgress()
    result = None
    if "similarity" in config.strategies:
        result = compute_similarity(loaded.model, loaded.tokenizer, source, n_samples=args.calib_samples,
                                    max_length=args.calib_max_length, batch_size=args.batch_size, seed=args.seed,
                                    progress=progress)
    frame = run_sweep(loaded.model, loaded.tokenizer, result, config, out_dir=args.out, progress=progress)
    columns = [c for c in ("point", "layers", "loss", "normalized_loss", "probe_accuracy", "mc_accuracy")
               if c in frame]
    print(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print()
    print(markdown_table(frame))
    print(f"wrote {args.out}/results.csv and {args.out}/sweep.html")
    return 0
