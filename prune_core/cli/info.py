"""`prune-core info`: load a model and print what it is."""

from __future__ import annotations

import json

HELP = "load a model and print its name, layers, parameters, device and memory"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_model_arguments(parser) -> None:
    """The model options every command shares."""
    parser.add_argument("--model", default="default",
                        help="'default' (embedded SmolLM2-135M-Instruct), a hub id, a local folder or a .gguf file")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: by device)")
    parser.add_argument("--device-map", default=None, help="'auto' to spread the model over several GPUs")
    parser.add_argument("--load-in-4bit", action="store_true", help="quantize to 4-bit NF4 with bitsandbytes")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")


def load_from_args(args):
    """Load the model named by the shared model options."""
    from prune_core.models import load_model
    from prune_core.progress import TqdmProgress

    return load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map,
                      load_in_4bit=args.load_in_4bit, trust_remote_code=args.trust_remote_code,
                      progress=TqdmProgress())


def run(args) -> int:
    loaded = load_from_args(args)
    summary = dict(loaded.summary(), load_seconds=round(loaded.load_seconds, 2))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>14}: {value}")
    return 0
