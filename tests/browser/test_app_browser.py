"""End to end in headless Chromium against `streamlit run`, on the real default model: load, heatmap, prune the best
block, heal a few steps, compare generations; two concurrent sessions prune different blocks and each sees its own
result."""

from __future__ import annotations

import pytest
from conftest import SCREENSHOTS

pytestmark = pytest.mark.browser


def goto_page(page, name: str) -> None:
    """Open a page through the sidebar (a full reload would start a new session)."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=name, exact=True).click()
    page.get_by_role("heading", name=name, exact=True).wait_for()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(400)  # let charts finish drawing
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def enter(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")


def load_default(page, url: str) -> None:
    """A new session loads the default model by itself on the landing page."""
    page.goto(url)
    page.get_by_text("SmolLM2-135M-Instruct").first.wait_for()


def test_heatmap_prune_heal_and_compare_on_the_default_model(page, server_url):
    page.goto(server_url)
    page.get_by_role("heading", name="Layer Pruning Explorer").wait_for()
    goto_page(page, "Model and data")
    enter(page, "Samples", "16")
    enter(page, "Tokens per sample", "128")
    page.get_by_role("button", name="Use this data").click()
    page.get_by_text("16 samples of at most 128 tokens").wait_for()
    page.get_by_role("button", name="Load model").click()
    page.get_by_text("Loaded").first.wait_for()
    assert page.get_by_test_id("stMetricValue").first.inner_text() == "30"
    shot(page, "model_and_data")

    goto_page(page, "Similarity")
    page.get_by_role("button", name="Compute similarity").click()
    page.get_by_test_id("stPlotlyChart").first.locator(".main-svg").first.wait_for()
    assert "Dropping" in page.get_by_test_id("stAlertContentSuccess").inner_text()
    shot(page, "similarity")

    goto_page(page, "Prune")
    page.get_by_role("button", name="Prune", exact=True).click()
    removed = page.get_by_text("Removed (original numbering)")
    removed.wait_for()
    assert "method: similarity" in removed.inner_text()
    shot(page, "prune")

    goto_page(page, "Heal")
    enter(page, "Steps", "6")
    enter(page, "Tokens per sequence", "64")
    enter(page, "Run folder (checkpoints, adapter)", "artifacts/browser-runs/heal")  # the server runs in the repo
    page.get_by_role("button", name="Start healing").click()
    page.get_by_role("heading", name="Last run").wait_for()
    assert page.get_by_test_id("stMetricValue").first.inner_text() == "6"  # steps done
    shot(page, "heal")
    page.get_by_role("button", name="Merge the adapter into the pruned model").click()
    page.get_by_text("The healed model is ready").wait_for()

    goto_page(page, "Compare")
    page.get_by_role("button", name="Generate").click()
    for name in ("original", "pruned", "healed"):
        page.get_by_role("heading", name=name, exact=True).wait_for()
    assert page.get_by_text("Tokens / s").count() == 3
    shot(page, "compare")


def prune_manual(page, spec: str) -> None:
    goto_page(page, "Prune")
    page.get_by_text("Manual list").click()
    enter(page, "Layers (0-based, ranges inclusive)", spec)
    page.get_by_text(f"Removes 3 of 30 layers: {spec}").wait_for()


def test_two_concurrent_sessions_keep_their_own_pruned_model(browser, server_url):
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    pages = [c.new_page() for c in contexts]
    try:
        for pg in pages:
            pg.set_default_timeout(300_000)  # a busy 2-core machine computes the similarity slowly
            load_default(pg, server_url)
        for pg, spec in zip(pages, ["20-22", "5-7"], strict=True):
            prune_manual(pg, spec)
        for pg in pages:  # both prunes run at the same time, each in its own session
            pg.get_by_role("button", name="Prune", exact=True).click()
        for pg, mine, other in zip(pages, ["20-22", "5-7"], ["5-7", "20-22"], strict=True):
            removed = pg.get_by_text("Removed (original numbering)")
            removed.wait_for()
            assert f"{mine} · method: manual" in removed.inner_text()
            assert other not in removed.inner_text()
            assert pg.get_by_test_id("stMetricValue").first.inner_text() == "27"
        shot(pages[1], "two_sessions_second")
    finally:
        for c in contexts:
            c.close()
