"""`prune-core similarity`: the distance of every block of layers, the best block per size, and a heatmap."""

from __future__ import annotations

from pathlib import Path

HELP = "measure every block's angular distance (Gromov et al. 2024) and print the best block to drop per size"


def add_arguments(parser) -> None:
    from prune_core.cli.info import add_model_arguments
    from prune_core.similarity import METRICS

    add_model_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--samples", type=int, default=64, help="number of calibration windows (default 64)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per window (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the calibration texts (default 0)")
    parser.add_argument("--metric", default="angular_last", choices=list(METRICS),
                        help="; ".join(f"{k}: {v}" for k, v in METRICS.items()))
    parser.add_argument("--out", default=None, help="folder for distances.csv, best_blocks.csv, result.json and "
                                                    "heatmap.html (must be empty or new)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    parser.add_argument("--no-cache", action="store_true", help="recompute even if a cached result exists")


def add_data_arguments(parser, default: str = "python-docs", purpose: str = "") -> None:
    """The data-source options (shared by commands that read text); ``purpose`` ends the --data help."""
    from prune_core.data import BUILTIN_SOURCES

    parser.add_argument("--data", default=default,
                        help=f"{' or '.join(BUILTIN_SOURCES)}, a .txt/.jsonl/.csv file, a dataset folder, or hf:NAME "
                             f"(default {default}){purpose}")
    parser.add_argument("--column", default=None, help="text column of a .jsonl/.csv file or dataset (default text)")
    parser.add_argument("--config", default=None, help="dataset configuration, e.g. en for hf:allenai/c4")
    parser.add_argument("--split", default=None, help="dataset split, e.g. validation (default train)")


def source_from_args(args):
    """The :class:`~prune_core.data.DataSource` named by the data-source options."""
    from prune_core.data import parse_source

    return parse_source(args.data, column=args.column, config=args.config, split=args.split)


def check_out(out: str | None, overwrite: bool) -> Path | None:
    """Refuse an --out that is a file, or a non-empty folder without --overwrite (before any slow work)."""
    if out is None:
        return None
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} is not empty; choose another folder or pass --overwrite")
    return path


def _check_numbers(args) -> None:
    for flag, value, low in (("--samples", args.samples, 1), ("--max-length", args.max_length, 2),
                             ("--batch-size", args.batch_size, 1)):
        if value < low:
            raise ValueError(f"{flag} must be at least {low} (got {value})")


def write_html(result, path: Path) -> Path:
    """One self-contained page (plotly.js embedded, works offline): raw and row-normalised heatmaps and the
    min-distance curve."""
    from prune_core.plots import heatmap_figure, min_distance_figure

    figures = [heatmap_figure(result), heatmap_figure(result, normalize=True), min_distance_figure(result)]
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    title = f"Layer similarity: {result.metadata.get('model', '')}"
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head>\n<body>\n"
                    + "\n".join(parts) + "\n</body></html>\n", encoding="utf-8")
    return path


def format_table(result) -> str:
    """The l*(n) table as text: block size, layers to drop, distance, and the deepest-layers block's distance."""
    from prune_core.plots import layers_label

    table = result.best_table()
    table.insert(1, "drop", [layers_label(s, n) for n, s in zip(table["n"], table["start"], strict=True)])
    table["deepest"] = [layers_label(s, n) for n, s in zip(table["n"], table["deepest_start"], strict=True)]
    table = table[["n", "start", "drop", "distance", "deepest", "deepest_distance"]]
    return table.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def run(args) -> int:
    from prune_core.cli.info import load_from_args
    from prune_core.progress import TqdmProgress
    from prune_core.similarity import compute_similarity

    out = check_out(args.out, args.overwrite)
    _check_numbers(args)
    source = source_from_args(args)
    loaded = load_from_args(args)
    progress = TqdmProgress()
    try:
        result = compute_similarity(loaded.model, loaded.tokenizer, source, metric=args.metric,
                                    n_samples=args.samples, max_length=args.max_length, batch_size=args.batch_size,
                                    seed=args.seed, progress=progress, use_cache=not args.no_cache)
    finally:
        progress.close()
    meta = result.metadata
    print(f"{loaded.name}: {meta['num_layers']} layers, {meta['metric']} on {meta['source']} "
          f"({meta['n_samples']} x {meta['max_length']} tokens){' [cached]' if result.cached else ''}")
    print(format_table(result))
    if out is not None:
        result.save(out)
        write_html(result, out / "heatmap.html")
        print(f"wrote {out}/: result.json, distances.csv, best_blocks.csv, heatmap.html")
    return 0
