"""Loading the embedded default model: from the GGUF file (dequantizing) vs from the safetensors cache.

Target: the cached load at least 4x faster than the GGUF load, both measured in this run.
Run: .venv/bin/python benchmarks/bench_load.py
"""

from __future__ import annotations

import time

from prune_core.models import default_gguf_path, load_model


def timed(source: str) -> float:
    start = time.perf_counter()
    load_model(source, device="cpu")
    return time.perf_counter() - start


def main() -> None:
    load_model("default", device="cpu")  # make sure the cache exists (first run converts the GGUF file)
    gguf = min(timed(str(default_gguf_path())) for _ in range(2))
    cached = min(timed("default") for _ in range(3))
    ratio = gguf / cached
    print(f"GGUF load {gguf:.2f} s, cached load {cached:.2f} s: cached is {ratio:.1f}x faster (target >= 4x) "
          f"{'PASS' if ratio >= 4 else 'FAIL'}")


if __name__ == "__main__":
    main()
