"""Benchmark of the similarity pass on the default model (SmolLM2-135M-Instruct, 30 layers), printing ratios against
baselines measured in the same run:

(a) time of the full-table similarity pass / a plain forward pass over the same batches (target <= 1.10). Two
    baselines: the causal LM's forward (what a user would run: logits included) and the bare decoder stack (the
    same work as the similarity pass minus the hooks: the honest hook overhead).
(b) time of the per-n approach of earlier tools (one ``output_hidden_states`` pass per block size n = 1..L-1) /
    the full-table pass, on the same batches (target >= 10); also checks that both give the same distances.
(c) peak memory of one pass, in a fresh subprocess per mode: the peak resident set size sampled every 2 ms during
    the pass, minus the RSS just before it (after loading and ``malloc_trim``), so the model's weights cancel out.
    Ratio of the similarity pass to the plain forward pass (target <= 1.2). RSS sees everything torch allocates
    on the CPU, which tracemalloc does not.

Timings are CPU time of this process (``time.process_time``; wall time on CUDA), the fastest of ``--repeats``
interleaved rounds: on a shared machine CPU time is far steadier than wall time. Run:
``.venv/bin/python benchmarks/bench_similarity.py`` (add ``--help`` for the sizes).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import threading
import time

import numpy as np
import torch

from prune_core.similarity import layer_distances, pairwise_to_blocks


def _load(device: str):
    from prune_core.data import token_samples
    from prune_core.models import load_model

    return load_model("default", device=device, dtype="float32"), token_samples


def _plain(model, batches, backbone: bool) -> None:
    target = model.base_model if backbone else model
    with torch.inference_mode():
        for ids in batches:
            target(input_ids=ids, use_cache=False)


def _similarity(model, samples, batch_size: int, metric: str = "angular_last") -> np.ndarray:
    return layer_distances(model, samples, metric=metric, batch_size=batch_size)[0]


def _per_n(model, batches, num_layers: int) -> dict[int, np.ndarray]:
    """Earlier tools: for each n, one forward pass with every hidden state, then d(x^(l), x^(l+n)) for that n."""
    out = {}
    with torch.inference_mode():
        for n in range(1, num_layers):
            total = 0.0
            for ids in batches:
                states = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
                last = torch.stack([h[:, -1] for h in states]).double()  # (L+1, B, D)
                cos = torch.nn.functional.cosine_similarity(last[: num_layers + 1 - n], last[n:], dim=-1)
                total = total + (torch.arccos(cos.clamp(-1, 1)) / torch.pi).sum(1)
            out[n] = (total / sum(len(b) for b in batches)).cpu().numpy()
    return out


def _timed(fn) -> float:
    clock = time.perf_counter if torch.cuda.is_available() else time.process_time
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = clock()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return clock() - start


def bench_time(model, samples, batch_size: int, repeats: int) -> dict:
    device = model.get_input_embeddings().weight.device
    batches = [torch.tensor(samples[i:i + batch_size], device=device) for i in range(0, len(samples), batch_size)]
    _plain(model, batches[:1], backbone=False)  # warm-up
    runs = {"causal_lm": [], "decoder_stack": [], "similarity": []}
    for _ in range(repeats):
        runs["causal_lm"].append(_timed(lambda: _plain(model, batches, backbone=False)))
        runs["decoder_stack"].append(_timed(lambda: _plain(model, batches, backbone=True)))
        runs["similarity"].append(_timed(lambda: _similarity(model, samples, batch_size)))
    return {k: min(v) for k, v in runs.items()}


def bench_per_n(model, samples, batch_size: int) -> dict:
    from prune_core.models import num_layers

    device = model.get_input_embeddings().weight.device
    batches = [torch.tensor(samples[i:i + batch_size], device=device) for i in range(0, len(samples), batch_size)]
    L = num_layers(model)
    _plain(model, batches[:1], backbone=False)  # warm-up
    full = _timed(lambda: _similarity(model, samples, batch_size))
    table = pairwise_to_blocks(_similarity(model, samples, batch_size))
    per_n: dict = {}
    slow = _timed(lambda: per_n.update(_per_n(model, batches, L)))
    # Earlier tools read the final state after the norm; compare only blocks that end before the last layer.
    diff = max(float(np.abs(per_n[n][: L - n] - table[n, : L - n]).max()) for n in range(1, L))
    return {"full_table_s": full, "per_n_s": slow, "passes": L - 1, "max_abs_diff": diff}


def _memory_worker(mode: str, args) -> None:
    import psutil

    loaded, token_samples = _load(args.device)
    model = loaded.model
    samples = token_samples(loaded.tokenizer, "python-docs", "calibration", n_samples=args.batch_size,
                            max_length=args.max_length)
    ids = [torch.tensor(samples)]
    with torch.inference_mode():  # fault in every weight page (safetensors are memory-mapped) before the baseline
        sum(float(p.float().sum()) for p in model.parameters())
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    proc = psutil.Process()
    base = peak = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    if mode in ("causal_lm", "decoder_stack"):
        _plain(model, ids, backbone=mode == "decoder_stack")
    else:
        _similarity(model, samples, args.batch_size, metric=mode)
    done.set()
    thread.join()
    print(json.dumps({"mode": mode, "base_mb": base / 2**20, "peak_delta_mb": (peak - base) / 2**20}))


def bench_memory(args) -> dict:
    out = {}
    for mode in ("causal_lm", "decoder_stack", "angular_last", "angular_mean"):
        cmd = [sys.executable, __file__, "--memory-worker", mode, "--max-length", str(args.max_length),
               "--batch-size", str(args.batch_size), "--device", args.device, "--threads", str(args.threads)]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        out[mode] = json.loads(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16, help="windows for the timing of (a)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per window")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (and for (c))")
    parser.add_argument("--per-n-samples", type=int, default=4, help="windows for (b), which runs L-1 passes")
    parser.add_argument("--per-n-length", type=int, default=64, help="tokens per window for (b)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of (a); the fastest counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: CPU time then measures work, even on a shared machine)")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        return _memory_worker(args.memory_worker, args)
    loaded, token_samples = _load(args.device)
    samples = token_samples(loaded.tokenizer, "python-docs", "calibration", n_samples=args.samples,
                            max_length=args.max_length)
    print(f"model {loaded.name}, {loaded.num_layers} layers, {args.device}, {torch.get_num_threads()} threads; "
          f"{args.samples} x {args.max_length} tokens, batch {args.batch_size}")
    t = bench_time(loaded.model, samples, args.batch_size, args.repeats)
    print(f"(a) similarity {t['similarity']:.2f}s, causal-LM forward {t['causal_lm']:.2f}s, decoder-stack forward "
          f"{t['decoder_stack']:.2f}s")
    print(f"    ratio similarity / causal-LM forward   = {t['similarity'] / t['causal_lm']:.3f}  (target <= 1.10)")
    print(f"    ratio similarity / decoder-stack forward = {t['similarity'] / t['decoder_stack']:.3f}  (hook overhead)")
    short = token_samples(loaded.tokenizer, "python-docs", "calibration", n_samples=args.per_n_samples,
                          max_length=args.per_n_length)
    p = bench_per_n(loaded.model, short, args.batch_size)
    print(f"(b) {args.per_n_samples} x {args.per_n_length} tokens: full table {p['full_table_s']:.2f}s, per-n approach "
          f"({p['passes']} passes) {p['per_n_s']:.2f}s; max |difference| {p['max_abs_diff']:.1e}")
    print(f"    ratio per-n / full table = {p['per_n_s'] / p['full_table_s']:.1f}x  (target >= 10)")
    m = bench_memory(args)
    print(f"(c) peak RSS increase during one batch of {args.batch_size} x {args.max_length} tokens (model loaded: "
          f"{m['causal_lm']['base_mb']:.0f} MB):")
    for mode, row in m.items():
        print(f"    {mode:>14}: {row['peak_delta_mb']:7.1f} MB")
    ratio = m["angular_last"]["peak_delta_mb"] / m["causal_lm"]["peak_delta_mb"]
    print(f"    ratio similarity / causal-LM forward = {ratio:.3f}  (target <= 1.2); similarity / decoder-stack = "
          f"{m['angular_last']['peak_delta_mb'] / m['decoder_stack']['peak_delta_mb']:.3f}")


if __name__ == "__main__":
    main()
