"""Long work off the script thread: one background job per session, polled by a fragment with a stop button.

A :class:`Job` runs a ``prune_core`` function in a worker thread with the library's ``progress`` and ``cancel``
arguments. The worker never touches ``st.session_state``: it fills the Job, and the next script run (the
fragment triggers one when the job ends) calls :func:`collect`, which hands the result to the job's ``on_done``
callback on the script thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from prune_core.progress import Cancelled, Progress

JOB_KEY = "job"
POLL_SECONDS = 0.5
QUICK_SECONDS = 0.3  # how long starting a job waits for it to end right away
MAX_HISTORY = 20_000  # progress reports kept per job (a healing run reports once per step)


@dataclass
class Job:
    """One background computation: its thread, progress reports, result or error, and its cancel event."""

    name: str
    label: str
    on_done: Callable[[Any], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    history: list[Progress] = field(default_factory=list)
    result: Any = None
    error: BaseException | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    collected: bool = False
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def latest(self) -> Progress | None:
        return self.history[-1] if self.history else None

    def report(self, p: Progress) -> None:
        """The ``progress`` callback handed to the library (called from the worker thread)."""
        if len(self.history) >= MAX_HISTORY:
            del self.history[: MAX_HISTORY // 2]
        self.history.append(p)

    def run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        try:
            self.result = fn(*args, progress=self.report, cancel=self.cancel, **kwargs)
        except BaseException as err:  # noqa: BLE001 - shown to the user by collect(), never re-raised
            self.error = err
        finally:
            self.finished = time.monotonic()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends (tests and scripts); True if it has."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.running


def current() -> Job | None:
    """This session's job (running or finished), if any."""
    return st.session_state.get(JOB_KEY)


def busy() -> bool:
    """True while this session's job is still running."""
    job = current()
    return job is not None and job.running


def start(name: str, label: str, fn: Callable[..., Any], *args, on_done: Callable[[Any], None] | None = None,
          **kwargs) -> Job | None:
    """Run ``fn(*args, progress=..., cancel=..., **kwargs)`` in a worker thread; ``on_done(result)`` runs later on
    the script thread. Refuses (with a warning, returning None) while another job of this session runs."""
    if busy():
        st.warning(f"{current().label} is still running: wait for it or stop it first.")
        return None
    job = Job(name, label, on_done)
    job.thread = threading.Thread(target=job.run, args=(fn, args, kwargs), name=f"job-{name}", daemon=True)
    ctx = get_script_run_ctx()
    if ctx is not None:  # lets cached loaders run in the worker without "missing ScriptRunContext" warnings
        add_script_run_ctx(job.thread, ctx)
    st.session_state[JOB_KEY] = job
    job.thread.start()
    if job.wait(QUICK_SECONDS):  # a quick job (a cache hit) is shown in this run, without a polling round trip
        collect()
    return job


def collect() -> None:
    """Hand a finished job's result to its ``on_done`` once, and show how it ended."""
    job = current()
    if job is None or job.running:
        return
    if not job.collected:
        job.collected = True
        if job.error is None and job.on_done is not None:
            try:
                job.on_done(job.result)
            except (ValueError, OSError, RuntimeError) as err:
                job.error = err
        if job.error is None:
            st.toast(f"{job.label}: done in {job.elapsed:.1f} s")
    if isinstance(job.error, Cancelled):
        st.info(f"{job.label} was stopped.")
    elif job.error is not None:
        st.error(f"{job.label} failed: {describe_error(job.error)}")


def describe_error(err: BaseException) -> str:
    """A one-line message for the user (no traceback)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, (ValueError, FileNotFoundError, FileExistsError, ConnectionError)):
        return text
    return f"{type(err).__name__}: {text}"


def panel(name: str | None = None, extra: Callable[[Job], None] | None = None) -> None:
    """Show the running job's progress and a stop button, refreshed every POLL_SECONDS. With ``name``, only for
    that kind of job; ``extra(job)`` draws more (e.g. the healing loss curve) inside the refreshing area."""
    job = current()
    if job is None or not job.running:
        return
    if name is not None and job.name != name:
        st.caption(f"{job.label} is running: this page's actions wait for it (its page shows the progress).")
        return
    _poll(extra)


@st.fragment(run_every=POLL_SECONDS)
def _poll(extra: Callable[[Job], None] | None) -> None:
    job = current()
    if job is None or not job.running:
        st.rerun()  # the job ended: rerun the whole page so collect() shows the result
        return
    p = job.latest
    text = f"{job.label}: {p.stage} ({p.done}/{p.total})" if p else f"{job.label}: starting"
    st.progress(min(max(p.fraction, 0.0), 1.0) if p else 0.0, text=f"{text} · {job.elapsed:.0f} s")
    if extra is not None:
        extra(job)
    if job.cancel.is_set():
        st.caption("Stopping at the next step...")
    elif st.button("Stop", key="job_stop", icon=":material/stop:"):
        job.cancel.set()
