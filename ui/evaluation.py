"""Run several ``prune_core`` evaluations on several models as one background job (the Evaluate page)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pandas as pd

from prune_core.evaluate import heldout_loss, question_set, score_questions
from prune_core.models import LoadedModel
from prune_core.probe import capital_probe
from prune_core.progress import Progress, ProgressFn, check_cancel

TASKS = {"loss": "Held-out loss", "probe": "Capital-city probe", "mc": "Multiple choice"}


def _stage(progress: ProgressFn | None, prefix: str) -> ProgressFn | None:
    """A progress callback that names the model and task in front of the library's stage."""
    if progress is None:
        return None
    return lambda p: progress(Progress(f"{prefix}: {p.stage}", p.done, p.total, p.info))


def _task_fns(settings: dict, questions: list | None) -> dict[str, Callable]:
    s = settings
    return {
        "loss": lambda m, pr, c: heldout_loss(m.model, m.tokenizer, s["source"], n_samples=s["n_samples"],
                                              max_length=s["max_length"], batch_size=s["batch_size"],
                                              progress=pr, cancel=c),
        "probe": lambda m, pr, c: capital_probe(m.model, m.tokenizer, limit=s.get("probe_limit"), progress=pr,
                                                cancel=c),
        "mc": lambda m, pr, c: score_questions(m.model, m.tokenizer, questions, progress=pr, cancel=c),
    }


def run_evaluations(models: dict[str, LoadedModel], tasks: list[str], settings: dict, *,
                    progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> dict:
    """``{model name: {task: result dict}}`` for every model and task (one of TASKS), run one after the other.

    ``settings``: source, n_samples, max_length, batch_size (loss); probe_limit (probe); mc (a question set spec for
    ``evaluate.question_set``: "mmlu", "boolq" or a .jsonl file) and mc_limit (mc).
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"choose tasks from {', '.join(TASKS)}; got {tasks}")
    if "mc" in tasks and not settings.get("mc"):
        raise ValueError("multiple choice needs a question set: MMLU, BoolQ or a .jsonl file")
    questions = question_set(settings["mc"], limit=settings.get("mc_limit")) if "mc" in tasks else None
    fns = _task_fns(settings, questions)
    results: dict[str, dict] = {}
    for name, loaded in models.items():
        for task in tasks:
            check_cancel(cancel)
            results.setdefault(name, {})[task] = fns[task](loaded, _stage(progress, f"{name} · {TASKS[task]}"), cancel)
    return results


def results_table(results: dict) -> pd.DataFrame:
    """One row per model: the headline number of each task."""
    rows = []
    for name, tasks in results.items():
        row = {"model": name}
        if "loss" in tasks:
            row.update(loss=tasks["loss"]["loss"], perplexity=tasks["loss"]["perplexity"],
                       normalized_loss=tasks["loss"]["normalized_loss"])
        if "probe" in tasks:
            row.update(probe_accuracy=tasks["probe"]["accuracy"], probe_chance=tasks["probe"]["chance"])
        if "mc" in tasks:
            row.update(mc_accuracy=tasks["mc"]["accuracy"], mc_chance=tasks["mc"]["chance"])
        rows.append(row)
    return pd.DataFrame(rows)
