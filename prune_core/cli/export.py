"""`prune-core export`: update a saved model's card, push it to the Hugging Face Hub, or write the mergekit config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HELP = "push a saved pruned/healed model folder to the Hub, update its model card, or print the mergekit config"


def add_arguments(parser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="a saved model folder (from `prune-core prune` or `heal`: config.json, safetensors)")
    parser.add_argument("--card", type=Path, default=None, metavar="JSON",
                        help='model-card entries to add, as a JSON file (e.g. {"measured": {"healed": {"loss": 2.6}}})')
    parser.add_argument("--eval", action="append", default=[], metavar="[NAME=]JSON",
                        help="add the numbers of `prune-core eval --out JSON` to the card's measured table, as row "
                             "NAME (default: the model name in the JSON); repeatable")
    parser.add_argument("--push", default=None, metavar="REPO_ID",
                        help="upload the folder to this Hub repo ('user/name'); the token comes from $HF_TOKEN")
    parser.add_argument("--public", action="store_true", help="create the Hub repo public (default: private)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the Hub before giving up")
    parser.add_argument("--mergekit", nargs="?", const="-", default=None, metavar="FILE",
                        help="write mergekit's passthrough YAML for the same cut to FILE (or print it without FILE)")
    parser.add_argument("--base-model", default=None,
                        help="the base model mergekit should slice (default: the one recorded in the folder)")
    parser.add_argument("--num-layers", type=int, default=None, help="with --mergekit and no --model: the base's L")
    parser.add_argument("--layers", default=None,
                        help="with --mergekit and no --model: the removed layers, 0-based, e.g. '21-26,28'")
    parser.add_argument("--dtype", default="bfloat16", help="mergekit output dtype (default: bfloat16)")


def _mergekit_yaml(args) -> str:
    from prune_core.export import read_export_info
    from prune_core.prune import mergekit_config, parse_layer_spec

    if args.model is not None:
        info, _ = read_export_info(args.model)
        base, total, removed = args.base_model or info["base_model"], info["base_num_layers"], info["removed_layers"]
    elif args.base_model and args.num_layers and args.layers:
        base, total, removed = args.base_model, args.num_layers, parse_layer_spec(args.layers)
    else:
        raise ValueError("--mergekit needs --model DIR, or --base-model, --num-layers and --layers")
    if not removed:
        raise ValueError("no layers were removed: there is no cut to describe (pass --layers)")
    return mergekit_config(str(base), int(total), removed, dtype=args.dtype)


def _read_json(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def _eval_row(spec: str) -> tuple[str, dict]:
    """``NAME=PATH`` or ``PATH`` of an eval JSON -> (row name, measured numbers)."""
    from prune_core.export import measured_from_eval

    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    result = _read_json(Path(path))
    return name or str(result.get("model") or Path(path).stem), measured_from_eval(result)


def run(args) -> int:
    from prune_core.export import push_to_hub, write_model_card

    if not (args.card or args.eval or args.push or args.mergekit):
        raise ValueError("nothing to do: pass --push REPO_ID, --card JSON, --eval JSON and/or --mergekit [FILE]")
    if (args.card or args.eval or args.push) and args.model is None:
        raise ValueError("--card, --eval and --push need --model DIR (a saved model folder)")
    if args.card or args.eval:
        card = _read_json(args.card) if args.card else {}
        for spec in args.eval:
            name, row = _eval_row(spec)
            card.setdefault("measured", {})[name] = row
        print(f"model card: {write_model_card(args.model, card)}", file=sys.stderr)
    if args.mergekit:
        text = _mergekit_yaml(args)
        if args.mergekit == "-":
            print(text, end="")
        else:
            Path(args.mergekit).write_text(text)
            print(f"mergekit config: {args.mergekit}", file=sys.stderr)
    if args.push:
        url = push_to_hub(args.model, args.push, private=not args.public, timeout=args.timeout)
        print(f"pushed: {url}", file=sys.stderr)
    return 0
