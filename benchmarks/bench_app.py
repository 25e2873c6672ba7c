"""App benchmark: from a cold `streamlit run` to the first heatmap on the default model (built-in corpus, default
settings), then the same settings revisited in a new browser session. Printed against the issue's limits
(90 s cold, 3 s revisit) as ratios measured / limit; a ratio above 1 misses the limit.

The default model must already be converted (the first `make run` does it); similarity results start from an
empty cache (a temporary PRUNE_CORE_CACHE that links only the converted models). Run: `.venv/bin/python
benchmarks/bench_app.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from appserver import CHROMIUM, CHROMIUM_ARGS, free_port, fresh_cache, start_server, stop_server  # noqa: E402

from prune_core.models import load_model  # noqa: E402

COLD_LIMIT_S, REVISIT_LIMIT_S = 90.0, 3.0


def first_heatmap(browser, url: str) -> tuple[float, float]:
    """Open the Similarity page in a new session, load the default model, compute; return (total, compute) s."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(180_000)
    start = time.perf_counter()
    page.goto(f"{url}/Similarity")
    page.get_by_role("button", name="Load the default model").click()
    page.get_by_role("button", name="Compute similarity").click()
    clicked = time.perf_counter()
    page.locator("[data-testid='stPlotlyChart']").first.wait_for(state="visible")
    page.locator(".main-svg").first.wait_for(state="visible")
    end = time.perf_counter()
    context.close()
    return end - start, end - clicked


def main() -> None:
    from playwright.sync_api import sync_playwright

    load_model("default")  # converts the GGUF file once if needed: not timed ("the default model already converted")
    env = {"PRUNE_CORE_CACHE": fresh_cache(Path(tempfile.mkdtemp(prefix="bench-app-cache-")))}
    port = free_port()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        start = time.perf_counter()
        server = start_server(port, env=env, timeout=120)
        try:
            served = time.perf_counter() - start
            total, compute = first_heatmap(browser, f"http://127.0.0.1:{port}")
            cold = served + total
            revisit, revisit_compute = first_heatmap(browser, f"http://127.0.0.1:{port}")
        finally:
            stop_server(server)
            browser.close()
    print(f"cold start to first heatmap: {cold:.1f} s (server up {served:.1f} s, compute click to heatmap "
          f"{compute:.1f} s); limit {COLD_LIMIT_S:.0f} s; ratio {cold / COLD_LIMIT_S:.2f}")
    print(f"revisit, same settings, new session: {revisit:.2f} s (compute click to heatmap {revisit_compute:.2f} s); "
          f"limit {REVISIT_LIMIT_S:.0f} s; ratio {revisit / REVISIT_LIMIT_S:.2f}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
