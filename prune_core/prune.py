"""Layer surgery: remove decoder blocks from a model, save the result, describe the cut for mergekit.

Indices are 0-based as in the paper (arXiv 2403.17887): layer l is the block whose input is x^(l). Dropping the
block l*, ..., l*+n-1 connects the old input of l* to the old block l*+n.
"""

from __future__ import annotations

import copy
import errno
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from torch import nn

from prune_core.models import arch_spec, get_layers, memory_bytes, num_layers

# Attributes on attention / block modules that hold the block's position (the KV cache is indexed by them).
LAYER_INDEX_ATTRS = ("layer_idx", "layer_id")


def parse_layer_spec(spec: str) -> list[int]:
    """Parse ``"21-26,28"`` (inclusive ranges, 0-based) into ``[21, 22, 23, 24, 25, 26, 28]``."""
    layers: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, _, hi = part.partition("-")
        try:
            start, stop = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"bad layer list {spec!r}: use 0-based indices and ranges like '21-26,28'") from None
        if stop < start:
            raise ValueError(f"bad layer range {part!r}: the end is before the start")
        layers.update(range(start, stop + 1))
    return sorted(layers)


def _validate(layers: Iterable[int], total: int) -> list[int]:
    drop = sorted({int(i) for i in layers})
    bad = [i for i in drop if not 0 <= i < total]
    if bad:
        raise ValueError(f"layer indices {bad} out of range: this model has layers 0..{total - 1}")
    if len(drop) == total:
        raise ValueError(f"cannot remove all {total} layers: keep at least one")
    return drop


def prune_info(model: nn.Module) -> dict:
    """What was removed from the original model: original indices, original layer count, method, base model."""
    cfg = model.config
    removed = list(getattr(cfg, "prune_removed_layers", None) or [])
    return {
        "removed_layers": removed,
        "base_num_layers": getattr(cfg, "prune_base_num_layers", None) or num_layers(model),
        "method": getattr(cfg, "prune_method", None),
        "base_model": getattr(cfg, "prune_base_model", None) or getattr(cfg, "name_or_path", None) or None,
    }


def _set_path(root: nn.Module, path: str, value: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, value)


def _copy_without_layers(model: nn.Module, keep: list[int], share_weights: bool) -> nn.Module:
    """A deep copy of ``model`` holding only the kept blocks (the dropped ones are never copied)."""
    old_layers = get_layers(model)
    memo: dict = {id(old_layers): nn.ModuleList()}
    if share_weights:  # new modules around the same tensors: saves memory; writers must copy before mutating
        for tensor in list(model.parameters()) + list(model.buffers()):
            memo[id(tensor)] = tensor
    new = copy.deepcopy(model, memo)
    _set_path(new, arch_spec(model).layers, nn.ModuleList([copy.deepcopy(old_layers[i], memo) for i in keep]))
    return new


def _renumber(layers: nn.ModuleList) -> None:
    for new_idx, block in enumerate(layers):
        for module in block.modules():
            for attr in LAYER_INDEX_ATTRS:
                if isinstance(getattr(module, attr, None), int):
                    setattr(module, attr, new_idx)


def _fix_qwen2_moe(cfg, keep: list[int], old_total: int) -> None:
    """Qwen2-MoE picks dense vs sparse blocks from (index + 1) % decoder_sparse_step: list the dense ones."""
    step = getattr(cfg, "decoder_sparse_step", 1) or 1
    only = set(getattr(cfg, "mlp_only_layers", None) or [])
    dense = [i for i in range(old_total) if i in only or cfg.num_experts == 0 or (i + 1) % step != 0]
    cfg.mlp_only_layers = [new for new, old in enumerate(keep) if old in dense]
    cfg.decoder_sparse_step = 1


CONFIG_FIXUPS = {"qwen2_moe": _fix_qwen2_moe}


def _update_config(cfg, spec, keep: list[int], old_total: int) -> None:
    """Everything in the config indexed by layer, made to describe the kept blocks."""
    fixup = CONFIG_FIXUPS.get(getattr(cfg, "model_type", None))
    if fixup is not None:
        fixup(cfg, keep, old_total)
    for key in spec.per_layer_lists:
        values = getattr(cfg, key, None)
        if isinstance(values, (list, tuple)) and len(values) == old_total:
            setattr(cfg, key, [values[i] for i in keep])
    for key in spec.layer_thresholds:
        value = getattr(cfg, key, None)
        if isinstance(value, int):
            setattr(cfg, key, sum(1 for old in keep if old < value))
    setattr(cfg, spec.num_layers_key, len(keep))


def drop_layers(model: nn.Module, layers: Iterable[int], *, share_weights: bool = False,
                method: str = "manual") -> nn.Module:
    """Return a new model without the given 0-based layers; ``model`` itself is never changed.

    Renumbers every ``layer_idx`` (the KV cache is indexed by it), sets the layer count and every per-layer config
    entry, and records the removed layers as indices of the *original* model in ``config.prune_removed_layers``.
    ``share_weights=True`` shares the kept tensors with ``model`` instead of copying them (saves memory; anything
    that later writes weights in place, such as merging adapters, must work on a copy).
    """
    total = num_layers(model)
    drop = _validate(layers, total)
    keep = [i for i in range(total) if i not in set(drop)]
    before = prune_info(model)
    new = _copy_without_layers(model, keep, share_weights)
    _renumber(get_layers(new))
    _update_config(new.config, arch_spec(model), keep, total)
    original_ids = [i for i in range(before["base_num_layers"]) if i not in set(before["removed_layers"])]
    cfg = new.config
    cfg.prune_removed_layers = sorted(before["removed_layers"] + [original_ids[i] for i in drop])
    cfg.prune_base_num_layers = before["base_num_layers"]
    cfg.prune_method = f"{before['method']}+{method}" if before["method"] else method
    cfg.prune_base_model = before["base_model"]
    return new.eval() if not model.training else new


def kept_ranges(base_num_layers: int, removed: Iterable[int]) -> list[tuple[int, int]]:
    """The kept layers of the original model as half-open ``(start, stop)`` ranges."""
    removed = set(removed)
    ranges: list[tuple[int, int]] = []
    for i in range(base_num_layers):
        if i in removed:
            continue
        if ranges and ranges[-1][1] == i:
            ranges[-1] = (ranges[-1][0], i + 1)
        else:
            ranges.append((i, i + 1))
    return ranges


def mergekit_config(base_model: str, num_layers: int, removed: Iterable[int], dtype: str = "bfloat16") -> str:
    """mergekit's passthrough YAML that rebuilds the same cut from the original checkpoint."""
    removed = sorted(set(removed))
    _validate(removed, num_layers)
    lines = ["# Rebuild with: mergekit-yaml this.yml OUTPUT_DIR", f"# Removed layers (0-based): {removed}", "slices:"]
    for start, stop in kept_ranges(num_layers, removed):
        lines += ["  - sources:", f"      - model: {base_model}", f"        layer_range: [{start}, {stop}]"]
    lines += ["merge_method: passthrough", f"dtype: {dtype}", ""]
    return "\n".join(lines)


def _check_target(out: Path, overwrite: bool, need_bytes: int) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds files; choose an empty folder or pass overwrite=True "
                              f"(--overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if free < need_bytes:
        raise OSError(errno.ENOSPC, f"not enough disk space in {out.parent}: need about {need_bytes / 2**20:.0f} MB, "
                                    f"{free / 2**20:.0f} MB free")


def move_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``, replacing what ``target`` held (same file system)."""
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        target.rename(old / "x")
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


def save_model(model: nn.Module, tokenizer, out_dir: str | Path, *, overwrite: bool = False,
               card: dict | None = None) -> Path:
    """Save safetensors, config, tokenizer, ``prune.json`` and a model card to ``out_dir``.

    Writes into a temporary folder beside ``out_dir`` and moves it into place, so a failure (a full disk, say)
    never leaves a half-written model; refuses a non-empty ``out_dir`` unless ``overwrite``.
    """
    from prune_core.export import model_card_markdown  # export imports this module

    out = Path(out_dir).expanduser().resolve()
    _check_target(out, overwrite, int(memory_bytes(model) * 1.05) + 2**20)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        info = prune_info(model)
        (tmp / "prune.json").write_text(json.dumps({**info, **(card or {})}, indent=2, default=str))
        (tmp / "README.md").write_text(model_card_markdown(info, card))
        move_into_place(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while saving to {out}: nothing was written") from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


STRATEGIES = ("similarity", "deepest", "manual")


def block_size(num_layers: int, *, n: int | None = None, fraction: float | None = None) -> int:
    """The number of layers to drop, given directly or as a fraction of ``num_layers`` (rounded)."""
    if (n is None) == (fraction is None):
        raise ValueError("give exactly one of n (layers to drop) or fraction (of the layers, 0 < fraction < 1)")
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be between 0 and 1 (exclusive); got {fraction}")
        n = max(1, round(fraction * num_layers))
    return int(n)


def select_layers(num_layers: int, strategy: str, *, n: int | None = None, layers: Iterable[int] | None = None,
                  result=None) -> list[int]:
    """The 0-based layers a strategy drops: "similarity" (the paper's l*(n) block, from a ``SimilarityResult``),
    "deepest" (the n deepest except the final layer) or "manual" (``layers`` as given)."""
    from prune_core.similarity import check_block_size, deepest_layers

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if strategy == "manual":
        if not layers:
            raise ValueError("the manual strategy needs the layers to drop, e.g. '20-25'")
        return _validate(layers, num_layers)
    check_block_size(num_layers, n)
    if strategy == "deepest":
        return deepest_layers(num_layers, n)
    if result is None:
        raise ValueError("the similarity strategy needs a similarity result (compute it first)")
    if result.num_layers != num_layers:
        raise ValueError(f"the similarity result is for {result.num_layers} layers, the model has {num_layers}")
    return result.best_layers(n)
