"""`prune-core heal`: LoRA / QLoRA healing of a pruned model, then merge and save it.

Several GPUs: ``accelerate launch -m prune_core.cli heal ...`` (only the main process writes and prints).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from prune_core.cli.info import add_model_arguments
from prune_core.cli.similarity import add_data_arguments

HELP = "heal a pruned model with LoRA (QLoRA on GPUs), print the held-out loss before and after, save the result"

# CLI option -> HealConfig field; every option defaults to None, meaning "the preset's value".
OVERRIDES = {"rank": int, "alpha": float, "steps": int, "lr": float, "batch_size": int, "grad_accum": int,
             "max_length": int, "warmup_steps": int, "save_steps": int, "n_samples": int, "eval_samples": int,
             "seed": int}


def add_arguments(parser) -> None:
    from prune_core.heal_config import PRESETS

    add_model_arguments(parser)  # --load-in-4bit here means QLoRA: the model itself is loaded in full precision
    add_data_arguments(parser, purpose=": its 'heal' split trains, its 'eval' split scores")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="quick-cpu",
                        help="paper: rank 64, 5000 steps, global batch 16, 2048 tokens; quick-cpu: minutes on a CPU")
    for name, kind in OVERRIDES.items():
        flag = "--samples" if name == "n_samples" else "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, type=kind, default=None, help=f"override the preset's {name}")
    parser.add_argument("--target-modules", default=None,
                        help="comma-separated LoRA targets (default: the family's feed-forward projections)")
    parser.add_argument("--full-precision", action="store_true", help="LoRA on 16/32-bit weights even on CUDA")
    parser.add_argument("--out", required=True, help="run folder: checkpoints/, adapter/, heal.json, model/")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    parser.add_argument("--no-merge", action="store_true", help="keep the adapter only (skip merging and saving "
                                                                "the healed model)")


def build_config(args):
    """The preset named by ``--preset`` with the command-line overrides applied."""
    from prune_core.heal_config import preset

    overrides = {name: getattr(args, name) for name in OVERRIDES}
    if args.target_modules:
        overrides["target_modules"] = tuple(t.strip() for t in args.target_modules.split(",") if t.strip())
    if args.load_in_4bit and args.full_precision:
        raise ValueError("choose --load-in-4bit or --full-precision, not both")
    overrides["load_in_4bit"] = True if args.load_in_4bit else (False if args.full_precision else None)
    return preset(args.preset, **overrides)


def _load(args):
    """The model to heal, in full precision, on this process's GPU under ``accelerate launch``."""
    import torch

    from prune_core.heal_trainer import is_main_process
    from prune_core.models import load_model
    from prune_core.progress import TqdmProgress

    device = args.device
    if device is None and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return load_model(args.model, device=device, dtype=args.dtype, device_map=args.device_map,
                      trust_remote_code=args.trust_remote_code, progress=TqdmProgress() if is_main_process() else None)


def _heal_with_ctrl_c(loaded, source, config, args, progress):
    """Run heal(); the first Ctrl-C stops cleanly at the next step (checkpoint and adapter kept)."""
    from prune_core.heal import heal

    cancel = threading.Event()

    def on_sigint(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        return heal(loaded.model, loaded.tokenizer, source, config, output_dir=args.out, progress=progress,
                    cancel=cancel, resume=args.resume, overwrite=args.overwrite)
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args) -> int:
    from prune_core.cli.similarity import source_from_args
    from prune_core.heal import merge_adapter, save_healed
    from prune_core.heal_trainer import is_main_process, prepare_output
    from prune_core.progress import TqdmProgress

    config = build_config(args)
    out = Path(args.out).expanduser().resolve()
    prepare_output(out, args.resume, args.overwrite)  # fail before any slow work
    source = source_from_args(args)
    loaded = _load(args)
    main = is_main_process()
    progress = TqdmProgress() if main else None
    try:
        result = _heal_with_ctrl_c(loaded, source, config, args, progress)
    except MemoryError as err:  # heal() words it: which options to lower
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not main:
        return 0
    for note in result.notes:
        print(f"note: {note}")
    after = f"{result.loss_after:.4f}" if result.loss_after is not None else "not measured (stopped)"
    print(f"held-out loss: before {result.loss_before:.4f}, after {after} ({source.describe()}, 'eval' split)")
    print(f"{result.global_step}/{config.steps} steps, {result.tokens_per_s:.0f} tokens/s, "
          f"{result.train_seconds:.0f} s; adapter saved to {result.adapter_dir}")
    if result.stopped:
        print(f"stopped: continue with --resume --out {args.out}")
        return 130
    if not args.no_merge:
        merged = merge_adapter(loaded.model, result)
        saved = save_healed(merged, loaded.tokenizer, out / "model", result, overwrite=True)
        print(f"healed model saved to {saved} (load it with --model {saved})")
    return 0
