"""The job runner on its own: progress in the polling fragment, the stop button, errors as messages, one job at a
time. The script is a small page that runs a slow stand-in for a library function."""

from __future__ import annotations

import pytest
from apphelpers import TIMEOUT, finish_job
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.app


def page_script():
    import threading

    import streamlit as st

    from prune_core.progress import check_cancel, report
    from ui import jobs

    def slow(steps: int, fail: bool = False, *, progress=None, cancel: threading.Event | None = None):
        """Counts to ``steps`` (waiting on the cancel event between steps), like a library job."""
        for i in range(steps):
            check_cancel(cancel)
            report(progress, "counting", i + 1, steps)
            if cancel is not None:
                cancel.wait(0.05)
        if fail:
            raise ValueError("bad input: steps must be even")
        return steps

    jobs.collect()
    fail = st.checkbox("fail", key="fail")
    if st.button("Go", key="go"):
        jobs.start("count", "Counting", slow, st.session_state.get("steps", 10_000), fail,
                   on_done=lambda n: st.session_state.update(counted=n))
    jobs.panel("count")
    st.write(f"counted: {st.session_state.get('counted')}")


def open_page() -> AppTest:
    return AppTest.from_function(page_script, default_timeout=TIMEOUT).run()


def test_progress_and_stop():
    at = open_page()
    at.button(key="go").click().run()
    job = at.session_state["job"]
    assert job.running and at.get("progress")  # the fragment shows a bar while the job runs
    at.button(key="go").click().run()  # a second job is refused while the first runs
    assert "still running" in at.warning[0].value and at.session_state["job"] is job
    at.button(key="job_stop").click().run()
    finish_job(at)
    assert "Counting was stopped." in at.info[0].value
    assert not at.error and at.markdown[-1].value == "counted: None"
    assert 0 < job.latest.done < 10_000


def test_result_handed_over_and_error_shown_without_traceback():
    at = open_page()
    at.session_state["steps"] = 3
    at.button(key="go").click().run()
    finish_job(at)
    assert at.markdown[-1].value == "counted: 3" and [p.done for p in at.session_state["job"].history] == [1, 2, 3]
    at.checkbox(key="fail").check().run()
    at.button(key="go").click().run()
    finish_job(at)
    assert at.error[0].value == "Counting failed: bad input: steps must be even"
    assert not at.exception
