"""Progress reporting and cancellation shared by every long-running job.

Long work (loading, similarity, healing, evaluation, sweeps) takes an optional ``progress`` callback and an
optional ``cancel`` event. The app draws bars and live numbers from the callback; the CLI drives tqdm from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Progress:
    """One progress report: ``done`` of ``total`` units of ``stage``, plus free-form live numbers in ``info``."""

    stage: str
    done: int
    total: int
    info: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


ProgressFn = Callable[[Progress], None]


class Cancelled(RuntimeError):
    """Raised inside a job when its cancel event is set; the job stops cleanly at the next step."""


def report(progress: ProgressFn | None, stage: str, done: int, total: int, **info) -> None:
    """Call ``progress`` if given."""
    if progress is not None:
        progress(Progress(stage, done, total, info))


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("stopped on request")


class TqdmProgress:
    """A progress callback that drives one tqdm bar per stage (used by the CLI)."""

    def __init__(self) -> None:
        self._bars: dict = {}

    def __call__(self, p: Progress) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(p.stage)
        if bar is None:
            bar = self._bars[p.stage] = tqdm(total=p.total, desc=p.stage, dynamic_ncols=True)
        bar.total = p.total
        bar.n = p.done
        if p.info:
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in p.info.items()}, refresh=False)
        bar.refresh()
        if p.done >= p.total:
            bar.close()
            del self._bars[p.stage]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
