"""A real `streamlit run app.py` on a free local port and Debian's headless Chromium driven by Playwright.

A missing /usr/bin/chromium fails these tests (it is not a skip): install it with `apt-get install chromium`.
Never run `playwright install`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from appserver import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, fresh_cache, start_server, stop_server  # noqa: E402

SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def launch_chromium(playwright):
    """Debian's Chromium, headless; fails (never skips) when it is not installed."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    """The app served by `streamlit run` for this test session, with an empty similarity cache (the heatmap is
    computed, not read back). The tests save nothing."""
    port = free_port()
    # New sessions load the default model by themselves, as under `make run`.
    env = {"PRUNE_CORE_CACHE": fresh_cache(tmp_path_factory.mktemp("cache")), "PRUNE_APP_AUTOLOAD": "default"}
    proc = start_server(port, env=env)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(300_000)  # a busy 2-core machine computes the similarity slowly
    yield pg
    context.close()
