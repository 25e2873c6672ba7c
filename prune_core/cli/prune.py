"""`prune-core prune`: drop the most redundant block (or the deepest layers, or a manual list) and save."""

from __future__ import annotations

from prune_core.cli.info import add_model_arguments, load_from_args
from prune_core.cli.similarity import add_data_arguments, check_out, source_from_args

HELP = "remove a block of layers (similarity, deepest-layers heuristic or manual) and save the pruned model"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--strategy", choices=("similarity", "deepest", "manual"), default="similarity",
                        help="similarity: the block with the smallest angular distance (the paper); deepest: the n "
                             "deepest layers except the last; manual: --layers")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("-n", "--n", type=int, help="number of layers to drop")
    size.add_argument("--fraction", type=float, help="fraction of the layers to drop, e.g. 0.2")
    parser.add_argument("--layers", help="manual: 0-based layers to drop, e.g. '20-25,27'")
    add_data_arguments(parser, purpose=": calibration text for the similarity strategy")
    parser.add_argument("--samples", type=int, default=64, help="calibration samples")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per calibration sample")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", required=True, help="folder to write the pruned model to (must be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")


def run(args) -> int:
    from prune_core import prune
    from prune_core.export import similarity_card
    from prune_core.models import count_parameters, memory_bytes
    from prune_core.progress import TqdmProgress
    from prune_core.similarity import compute_similarity

    out = check_out(args.out, args.overwrite)
    loaded = load_from_args(args)
    total = loaded.num_layers
    layers = prune.parse_layer_spec(args.layers) if args.layers else None
    n = None if args.strategy == "manual" else prune.block_size(total, n=args.n, fraction=args.fraction)
    result = None
    if args.strategy == "similarity":
        source = source_from_args(args)
        result = compute_similarity(loaded.model, loaded.tokenizer, source, n_samples=args.samples,
                                    max_length=args.max_length, batch_size=args.batch_size, progress=TqdmProgress())
    drop = prune.select_layers(total, args.strategy, n=n, layers=layers, result=result)
    # Shared weights: the command only saves the result, so the copy of the kept layers is not needed.
    pruned = prune.drop_layers(loaded.model, drop, method=args.strategy, share_weights=True)
    card = similarity_card(result, drop) if result is not None else {}
    saved = prune.save_model(pruned, loaded.tokenizer, out, overwrite=args.overwrite, card=card)
    base = loaded.model.config.name_or_path or args.model
    (saved / "mergekit.yml").write_text(prune.mergekit_config(base, total, prune.prune_info(pruned)["removed_layers"]))
    print(f"removed layers {drop} ({args.strategy}): {total} -> {total - len(drop)} layers, "
          f"{count_parameters(loaded.model) / 1e6:.1f}M -> {count_parameters(pruned) / 1e6:.1f}M parameters, "
          f"{memory_bytes(loaded.model) / 2**20:.0f} -> {memory_bytes(pruned) / 2**20:.0f} MB")
    print(f"saved to {saved} (with mergekit.yml)")
    return 0
