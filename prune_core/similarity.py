"""How much each block of layers changes the residual stream: the angular distance of Gromov et al. 2024
("The Unreasonable Ineffectiveness of the Deeper Layers", arXiv 2403.17887, eq. 7) for every block at once.

One forward pass per batch gives the whole table: forward pre-hooks on every decoder block capture x^(l), the
block's input, and a pre-hook on the final norm captures x^(L) before the norm. From the L+1 states we get every
pairwise distance d(x^(l), x^(m)); the block of n layers starting at l is the pair (l, l+n).

Memory: the last-token metric keeps (L+1) x B vectors per batch. The all-token metrics keep every real token of
every state of one batch, (L+1) x B x T x D values in the model's dtype (for a 7B model with B=8, T=2048 that is
~4.4 GB in bf16): lower ``batch_size`` for big models. Distances are reduced in float64 chunks of at most 64 MiB.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from prune_core.progress import ProgressFn, check_cancel, report

METRICS = {
    "angular_last": "angular distance arccos(cos)/pi of the last real token (the paper's eq. 7)",
    "angular_mean": "angular distance arccos(cos)/pi averaged over all real tokens",
    "block_influence": "ShortGPT's Block Influence 1 - cos, averaged over all real tokens (a block of n layers: "
                       "between its input x^(l) and its output x^(l+n))",
}
RESULT_VERSION = "1"  # bump when the computation changes (invalidates cached results)
_HOOK_LOCK = threading.Lock()  # hooks on a shared model: one similarity pass at a time
_CHUNK_BYTES = 64 * 2**20  # float64 working set when reducing all-token states


def check_block_size(num_layers: int, n: int) -> None:
    """Raise ValueError unless 1 <= n <= L-1 (a block must leave at least one layer)."""
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= num_layers - 1:
        raise ValueError(f"block size n must be an integer from 1 to {num_layers - 1} (L-1); got {n!r}")


def deepest_layers(num_layers: int, n: int) -> list[int]:
    """The paper's simpler heuristic: the n deepest layers except the final one, 0-based ``range(L-n-1, L-1)``."""
    check_block_size(num_layers, n)
    return list(range(num_layers - n - 1, num_layers - 1))


# --------------------------------------------------------------------------------------------------------------
# The result


@dataclass
class SimilarityResult:
    """Distances between residual-stream states, with what is needed to reproduce them.

    ``distances`` has shape (L+1, L+1): ``distances[n, l] = d(x^(l), x^(l+n))`` for 0 <= l <= L-n, i.e. the
    distance across the block of layers l..l+n-1; cells with l+n > L are NaN. Row 0 is zero.
    """

    distances: np.ndarray
    metadata: dict = field(default_factory=dict)
    cached: bool = False  # True when loaded from the on-disk cache

    @property
    def num_layers(self) -> int:
        return self.distances.shape[0] - 1

    def row(self, n: int) -> np.ndarray:
        """d(x^(l), x^(l+n)) for l = 0..L-n."""
        check_block_size(self.num_layers, n)
        return self.distances[n, : self.num_layers - n + 1]

    def best_start(self, n: int) -> int:
        """l*(n) = argmin over l of d(x^(l), x^(l+n)) (the smallest l on ties)."""
        return int(np.argmin(self.row(n)))

    def best_layers(self, n: int) -> list[int]:
        """The n 0-based layers to drop: l*(n), ..., l*(n)+n-1."""
        start = self.best_start(n)
        return list(range(start, start + n))

    def best_table(self) -> pd.DataFrame:
        """One row per n: the best block (start, end, distance) and the deepest-layers block's distance."""
        L = self.num_layers
        rows = []
        for n in range(1, L):
            start, deep = self.best_start(n), L - n - 1
            rows.append({"n": n, "start": start, "end": start + n - 1, "distance": float(self.distances[n, start]),
                         "deepest_start": deep, "deepest_distance": float(self.distances[n, deep])})
        return pd.DataFrame(rows)

    def save(self, folder: str | Path) -> Path:
        """Write ``result.json`` (everything), ``distances.csv`` (rows n, columns l) and ``best_blocks.csv``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        table = [[None if np.isnan(v) else float(v) for v in row] for row in self.distances]
        payload = {"metadata": self.metadata, "distances": table, "best_blocks": self.best_table().to_dict("records")}
        (folder / "result.json").write_text(json.dumps(payload, indent=1))
        frame = pd.DataFrame(self.distances, columns=[f"l={i}" for i in range(self.num_layers + 1)])
        frame.insert(0, "n", range(self.num_layers + 1))
        frame.to_csv(folder / "distances.csv", index=False)
        self.best_table().to_csv(folder / "best_blocks.csv", index=False)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SimilarityResult:
        """Read a result written by :meth:`save`."""
        path = Path(folder) / "result.json"
        if not path.is_file():
            raise FileNotFoundError(f"no similarity result in {folder} (result.json is missing)")
        payload = json.loads(path.read_text())
        table = np.array([[np.nan if v is None else v for v in row] for row in payload["distances"]], dtype=float)
        return cls(table, payload.get("metadata", {}))


# --------------------------------------------------------------------------------------------------------------
# Capturing states


class _StateCapture:
    """Hooks that record x^(0..L) during one forward pass: the last real token of each sequence (B, D) when
    ``all_tokens`` is False, every real token (N, D) otherwise. States go to ``device``. Call :meth:`set_mask`
    before each forward pass."""

    def __init__(self, model: torch.nn.Module, device: torch.device, all_tokens: bool) -> None:
        from prune_core.models import get_final_norm, get_layers

        self.device, self.all_tokens = device, all_tokens
        # Only the thread that runs the similarity pass records: another session may be generating with the same
        # (shared, cached) model while the hooks are attached.
        self.owner = threading.get_ident()
        self.last: torch.Tensor | None = None  # (B,) index of each row's last real token
        self.real: torch.Tensor | None = None  # (N,) flat index (b * T + t) of every real token
        layers, norm = get_layers(model), get_final_norm(model)
        self.states: list[torch.Tensor | None] = [None] * (len(layers) + 1)
        self._handles = [layer.register_forward_pre_hook(self._pre_hook(i), with_kwargs=True)
                         for i, layer in enumerate(layers)]
        if norm is not None:  # the norm's input is the pre-norm x^(L)
            self._handles.append(norm.register_forward_pre_hook(self._pre_hook(len(layers)), with_kwargs=True))
        else:  # no final norm: x^(L) is the last block's output (a tensor in current transformers, else a tuple)
            self._handles.append(layers[-1].register_forward_hook(self._out_hook(len(layers))))

    def set_mask(self, mask: torch.Tensor) -> None:
        """Take the (B, T) attention mask of the next batch (padding on either side)."""
        self.last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        self.real = mask.reshape(-1).nonzero()[:, 0]
        self.states = [None] * len(self.states)

    def _store(self, index: int, hidden: torch.Tensor) -> None:
        if threading.get_ident() != self.owner:
            return
        if self.all_tokens:  # (N, D): a copy, so later in-place updates of the residual cannot change it
            flat = hidden.detach().reshape(-1, hidden.shape[-1])
            self.states[index] = flat.index_select(0, self.real.to(hidden.device)).to(self.device)
        else:  # (B, D); gather, because advanced indexing is ~100x slower on CPU
            where = self.last.to(hidden.device).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
            self.states[index] = hidden.detach().gather(1, where)[:, 0].to(self.device, torch.float64)

    def _pre_hook(self, index: int):
        def hook(module, args, kwargs):
            self._store(index, args[0] if args else kwargs["hidden_states"])
        return hook

    def _out_hook(self, index: int):
        def hook(module, args, output):
            self._store(index, output if isinstance(output, torch.Tensor) else output[0])
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


# --------------------------------------------------------------------------------------------------------------
# Reducing states to pairwise distances


def _pairwise(X: torch.Tensor, metric: str) -> torch.Tensor:
    """X: (N, L+1, D) float64 -> (L+1, L+1) sum over the N vectors of the metric between every pair of layers."""
    gram = X @ X.transpose(1, 2)  # (N, L+1, L+1)
    norms = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(1e-300).sqrt()  # (N, L+1)
    cos = (gram / (norms[:, :, None] * norms[:, None, :])).clamp(-1.0, 1.0)
    value = 1.0 - cos if metric == "block_influence" else torch.arccos(cos) / torch.pi
    return value.sum(0)


def _reduce_batch(states: list[torch.Tensor], metric: str) -> tuple[torch.Tensor, int]:
    """States: L+1 tensors (N, D) -> (sum over the N vectors of the pairwise metric (L+1, L+1), N)."""
    N, D = states[0].shape
    chunk = max(1, _CHUNK_BYTES // (8 * len(states) * D))  # bounds the float64 working set
    total = torch.zeros(len(states), len(states), dtype=torch.float64, device=states[0].device)
    for i in range(0, N, chunk):
        total += _pairwise(torch.stack([s[i:i + chunk] for s in states], dim=1).double(), metric)
    return total, N


def _batches(samples: list[list[int]], batch_size: int, pad_id: int, padding_side: str):
    """Yield (input_ids, attention_mask) of each batch, padded on ``padding_side``."""
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        T = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), T), dtype=torch.long)
        for row, s in enumerate(chunk):
            span = slice(T - len(s), T) if padding_side == "left" else slice(0, len(s))
            ids[row, span] = torch.tensor(s, dtype=torch.long)
            mask[row, span] = 1
        yield ids, mask


def _forward(backbone: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Run the decoder stack (no LM head, no KV cache); positions count real tokens so padding changes nothing."""
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    backbone(input_ids=ids, attention_mask=None if bool(mask.all()) else mask, position_ids=positions,
             use_cache=False)


def layer_distances(model: torch.nn.Module, samples: list[list[int]], *, metric: str = "angular_last",
                    batch_size: int = 8, pad_id: int = 0, padding_side: str = "right",
                    progress: ProgressFn | None = None,
                    cancel: threading.Event | None = None) -> tuple[np.ndarray, int]:
    """The (L+1, L+1) matrix of mean distances between every pair of states x^(l), x^(m) over ``samples`` (lists
    of token ids, any lengths), and the number of vectors averaged (samples, or real tokens for all-token metrics).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not samples or batch_size < 1 or not all(samples):
        raise ValueError("need at least one non-empty sample and batch_size >= 1")
    device = model.get_input_embeddings().weight.device
    total, count, n_batches = None, 0, -(-len(samples) // batch_size)
    was_training = model.training
    with _HOOK_LOCK, torch.inference_mode():
        capture = _StateCapture(model, device, all_tokens=metric != "angular_last")
        try:
            model.eval()
            for b, (ids, mask) in enumerate(_batches(samples, batch_size, pad_id, padding_side)):
                check_cancel(cancel)
                ids, mask = ids.to(device), mask.to(device)
                capture.set_mask(mask)
                _forward(model.base_model, ids, mask)
                part, n = _reduce_batch(capture.states, metric)
                total, count = (part if total is None else total + part), count + n
                report(progress, "similarity", b + 1, n_batches, vectors=count)
        finally:
            capture.remove()
            model.train(was_training)
    return (total / count).cpu().numpy(), count


def pairwise_to_blocks(pairwise: np.ndarray) -> np.ndarray:
    """Re-index a (L+1, L+1) pairwise matrix as ``distances[n, l] = pairwise[l, l+n]`` (NaN where l+n > L)."""
    size = pairwise.shape[0]
    out = np.full((size, size), np.nan)
    for n in range(size):
        out[n, : size - n] = np.diagonal(pairwise, offset=n)
    return out


# --------------------------------------------------------------------------------------------------------------
# The entry point, with an on-disk cache


def compute_similarity(model: torch.nn.Module, tokenizer, source, *, metric: str = "angular_last",
                       n_samples: int = 64, max_length: int = 256, batch_size: int = 8, seed: int = 0,
                       progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                       use_cache: bool = True) -> SimilarityResult:
    """Distances for every block of every size on ``n_samples`` windows of ``max_length`` tokens from the
    calibration split of ``source`` (see :mod:`prune_core.data`). Cached on disk by model, tokens and metric."""
    from prune_core import data
    from prune_core.models import cache_dir, model_fingerprint, num_layers

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    src = data.parse_source(source)
    samples = data.token_samples(tokenizer, src, "calibration", n_samples=n_samples, max_length=max_length, seed=seed)
    samples_hash = hashlib.sha256(json.dumps(samples).encode()).hexdigest()[:16]
    fingerprint = model_fingerprint(model)
    key = hashlib.sha256(f"{RESULT_VERSION}|{fingerprint}|{samples_hash}|{metric}".encode()).hexdigest()[:24]
    folder = cache_dir() / "similarity" / key
    if use_cache and (folder / "result.json").is_file():
        result = SimilarityResult.load(folder)
        result.cached = True
        report(progress, "similarity", 1, 1, cached=True)
        return result
    start = time.perf_counter()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pairwise, count = layer_distances(model, samples, metric=metric, batch_size=batch_size, pad_id=pad_id,
                                      progress=progress, cancel=cancel)
    metadata = {
        "model": getattr(model.config, "name_or_path", ""), "model_type": model.config.model_type,
        "model_fingerprint": fingerprint, "num_layers": num_layers(model), "source": src.describe(),
        "source_spec": {k: getattr(src, k) for k in ("kind", "name", "column", "config", "split")},
        "source_hash": data.source_hash(src), "metric": metric, "n_samples": n_samples, "max_length": max_length,
        "seed": seed, "vectors": count, "samples_hash": samples_hash, "seconds": round(time.perf_counter() - start, 3),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "created": time.strftime("%Y-%m-%d %H:%M"),
        "version": RESULT_VERSION,
    }
    result = SimilarityResult(pairwise_to_blocks(pairwise), metadata)
    if use_cache:
        _write_cache(result, folder)
    return result


def _write_cache(result: SimilarityResult, folder: Path) -> None:
    """Save into the cache atomically (a temporary folder renamed into place)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        result.save(tmp)
        tmp.rename(folder)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
