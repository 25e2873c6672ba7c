"""Driving the app in AppTest: open a fresh session, wait for its background job, load a tiny model.

Jobs run in their real worker thread; a test joins that thread, then reruns the page so it collects the result,
as the polling fragment does in a browser.
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # seconds per script run (AppTest's default is 3)


def open_app(page: str | None = None) -> AppTest:
    """The app as a fresh browser session sees it, optionally switched to ``page`` (e.g. "pages/3_Prune.py")."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if page is not None:
        at.switch_page(page).run()
    return at


def finish_job(at: AppTest, timeout: float = TIMEOUT):
    """Wait for the session's background job to end, rerun so the page collects it, and return the job."""
    job = at.session_state["job"]
    assert job.wait(timeout), f"{job.label} did not finish in {timeout} s"
    at.run()
    return job


def load_tiny(at: AppTest, family: str = "llama") -> None:
    """Load ``tiny:<family>`` through the Model page, as a user would."""
    at.switch_page("pages/1_Model_and_data.py").run()
    at.radio(key="model_kind").set_value("tiny").run()
    at.selectbox(key="model_tiny").set_value(family)
    at.button(key="model_load").click().run()
    job = finish_job(at)
    assert job.error is None, job.error
    assert not at.exception, at.exception
