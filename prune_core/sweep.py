"""Sweeps: quality against the fraction of layers removed, for the similarity method and the deepest-layers
heuristic, healed and not (the figures of Gromov et al. 2024, sec. 4).

One similarity result picks every similarity block. Each point (strategy, n, healed) is evaluated on held-out loss,
the capital probe and optionally a multiple-choice set, and written to ``<out>/points/<name>.json`` as soon as it is
done, so a stopped sweep resumes where it stopped. Healed points keep their LoRA runs in ``<out>/heal/<name>/``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from prune_core.progress import ProgressFn, check_cancel, report

if TYPE_CHECKING:
    from prune_core.data import DataSource

STRATEGIES = ("similarity", "deepest")
METRIC_LABELS = {"probe_accuracy": "capital probe accuracy", "mc_accuracy": "multiple-choice accuracy",
                 "loss": "held-out loss", "normalized_loss": "held-out loss / log(vocab)"}
SHORT_LABELS = {"probe_accuracy": "probe", "mc_accuracy": "MC", "loss": "loss", "normalized_loss": "loss/log V"}
CHANCE_COLUMNS = {"probe_accuracy": "probe_chance", "mc_accuracy": "mc_chance", "loss": "uniform_loss",
                  "normalized_loss": "uniform_normalized_loss"}


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep measures. ``ns``: numbers of layers to remove; ``heal_preset``: also heal every point."""

    ns: tuple[int, ...]
    strategies: tuple[str, ...] = STRATEGIES
    eval_source: str | DataSource = "python-docs"
    eval_samples: int = 32
    max_length: int = 256
    batch_size: int = 8
    probe: bool = True
    probe_template: str = "auto"
    probe_limit: int | None = None
    mc: str | None = None  # a question set for evaluate.question_set: "mmlu", "boolq", "boolq:PATH" or a .jsonl
    mc_limit: int | None = None
    heal_preset: str | None = None
    heal_source: str | DataSource | None = None  # None: the eval source (its "heal" split, disjoint from "eval")
    heal_steps: int | None = None  # None: the preset's
    seed: int = 0
    extra: dict = field(default_factory=dict)  # free-form notes stored with the results

    def __post_init__(self) -> None:
        ns = tuple(int(n) for n in self.ns)
        if not ns or min(ns) < 1 or len(set(ns)) != len(ns):
            raise ValueError(f"ns must be distinct positive layer counts, got {list(self.ns)}")
        object.__setattr__(self, "ns", tuple(sorted(ns)))
        object.__setattr__(self, "strategies", tuple(self.strategies))
        bad = set(self.strategies) - set(STRATEGIES)
        if not self.strategies or bad:
            raise ValueError(f"strategies must be among {', '.join(STRATEGIES)}, got {list(self.strategies)}")
        if self.heal_preset is not None:
            from prune_core.heal_config import PRESETS

            if self.heal_preset not in PRESETS:
                raise ValueError(f"unknown heal preset {self.heal_preset!r}; allowed: {', '.join(PRESETS)}")

    def heal_config(self):
        """The HealConfig of the healed points (None without healing)."""
        from prune_core.heal_config import preset

        return preset(self.heal_preset, steps=self.heal_steps, seed=self.seed) if self.heal_preset else None

    def identity(self) -> dict:
        """The settings a point's values depend on (not which points are asked for), the preset's values included."""
        d = asdict(self)
        for key in ("ns", "strategies", "extra"):
            d.pop(key)
        d["heal_config"] = self.heal_config().to_dict() if self.heal_preset else None
        return d


def resolve_ns(num_layers: int, *, ns: list[int] | None = None, fractions: list[float] | None = None) -> list[int]:
    """Layer counts from counts or fractions of ``num_layers`` (rounded, duplicates dropped), each in 1..L-1."""
    from prune_core.prune import block_size
    from prune_core.similarity import check_block_size

    if (ns is None) == (fractions is None):
        raise ValueError("give either ns (layer counts) or fractions (of the layers), not both or neither")
    out = [block_size(num_layers, n=n) for n in ns] if ns is not None else [
        block_size(num_layers, fraction=f) for f in fractions]
    for n in out:
        check_block_size(num_layers, n)
    return sorted(set(out))


def point_name(strategy: str, n: int, healed: bool) -> str:
    return "unpruned" if n == 0 else f"{strategy}_n{n:03d}_{'healed' if healed else 'pruned'}"


def sweep_points(config: SweepConfig) -> list[tuple[str, int, bool]]:
    """(strategy, n, healed) of every point: the unpruned model first, then by n, strategy, unhealed before healed."""
    healed = (False, True) if config.heal_preset else (False,)
    return [("none", 0, False)] + [(s, n, h) for n in config.ns for s in config.strategies for h in healed]


def evaluate_model(model: torch.nn.Module, tokenizer, config: SweepConfig, *, progress: ProgressFn | None = None,
                   cancel: threading.Event | None = None) -> dict:
    """Held-out loss (and its uniform-prediction level), probe accuracy and multiple-choice accuracy of one model."""
    from prune_core.evaluate import heldout_loss, question_set, score_questions
    from prune_core.probe import capital_probe

    loss = heldout_loss(model, tokenizer, config.eval_source, n_samples=config.eval_samples,
                        max_length=config.max_length, batch_size=config.batch_size, seed=config.seed,
                        progress=progress, cancel=cancel)
    out = {k: loss[k] for k in ("loss", "perplexity", "normalized_loss")}
    out.update(uniform_loss=loss["loss"] / loss["normalized_loss"], uniform_normalized_loss=1.0)
    if config.probe:
        probe = capital_probe(model, tokenizer, template=config.probe_template, limit=config.probe_limit,
                              progress=progress, cancel=cancel)
        out.update(probe_accuracy=probe["accuracy"], probe_chance=probe["chance"])
    if config.mc:
        mc = score_questions(model, tokenizer, question_set(config.mc, limit=config.mc_limit),
                             batch_size=config.batch_size, progress=progress, cancel=cancel)
        out.update(mc_accuracy=mc["subject_accuracy"], mc_chance=mc["chance"])
    return out


def _heal_point(pruned, tokenizer, config: SweepConfig, folder: Path, progress, cancel):
    """The pruned model healed with the config's preset (a finished run in ``folder`` is reused)."""
    from prune_core.heal import heal, merge_adapter
    from prune_core.progress import Cancelled

    meta = folder / "heal.json"
    if meta.is_file() and json.loads(meta.read_text()).get("status") == "done":
        return merge_adapter(pruned, folder / "adapter"), json.loads(meta.read_text()).get("loss_after")
    result = heal(pruned, tokenizer, config.heal_source or config.eval_source, config.heal_config(),
                  output_dir=folder, progress=progress, cancel=cancel, resume=True)
    if result.stopped:
        raise Cancelled("stopped during healing")
    return merge_adapter(pruned, result), result.loss_after


def _identity(model, similarity, config: SweepConfig) -> dict:
    import numpy as np

    from prune_core.models import model_fingerprint

    sim = None
    if similarity is not None:
        sim = hashlib.sha256(np.nan_to_num(similarity.distances, nan=-1.0).round(6).tobytes()).hexdigest()[:16]
    return {"config": config.identity(), "model": model_fingerprint(model), "similarity": sim}


def _check_folder(out: Path, identity: dict) -> None:
    """Refuse a folder that holds a sweep with other settings (its points would not be comparable)."""
    manifest = out / "sweep.json"
    if manifest.is_file():
        old = json.loads(manifest.read_text()).get("identity", {})
        if old != identity:
            changed = sorted(k for k in {**old.get("config", {}), **identity["config"]}
                             if old.get("config", {}).get(k) != identity["config"].get(k))
            changed += [k for k in ("model", "similarity") if old.get(k) != identity[k]]
            raise ValueError(f"{out} holds a sweep with other settings (changed: {', '.join(changed)}); "
                             f"use another output folder or delete it")
    out.joinpath("points").mkdir(parents=True, exist_ok=True)
    _write_json(manifest, {"identity": identity})


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so a stopped sweep never leaves half a point behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_json(path: Path, data: dict) -> None:
    _write_text(path, json.dumps(data, indent=1))


def _run_point(model, tokenizer, similarity, config, point, out: Path, pruned_cache: dict, progress, cancel) -> dict:
    from prune_core.models import num_layers
    from prune_core.prune import drop_layers, select_layers

    strategy, n, healed = point
    name, L, start = point_name(*point), num_layers(model), time.perf_counter()
    layers = select_layers(L, strategy, n=n, result=similarity) if n else []
    if (strategy, n) not in pruned_cache:
        pruned_cache.clear()  # keep one pruned model: its healed point follows it
        pruned_cache[(strategy, n)] = drop_layers(model, layers, share_weights=True, method=strategy) if n else model
    evaluated, heal_loss = pruned_cache[(strategy, n)], None
    if healed:
        evaluated, heal_loss = _heal_point(evaluated, tokenizer, config, out / "heal" / name, progress, cancel)
    metrics = evaluate_model(evaluated, tokenizer, config, progress=progress, cancel=cancel)
    return {"point": name, "strategy": strategy, "n": n, "fraction": n / L, "healed": healed,
            "layers": ",".join(map(str, layers)), "layers_left": L - n, **metrics, "heal_loss_after": heal_loss,
            "seconds": round(time.perf_counter() - start, 2)}


def run_sweep(model: torch.nn.Module, tokenizer, similarity, config: SweepConfig, *, out_dir: str | Path,
              progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> pd.DataFrame:
    """Evaluate every point of ``config`` (see :func:`sweep_points`) and return one row per point; points already
    in ``out_dir`` are read back, not recomputed. ``similarity`` (a SimilarityResult of ``model``) picks the blocks
    of the similarity strategy. ``model`` is never changed. Writes ``results.csv`` and ``sweep.html``."""
    from prune_core.models import num_layers
    from prune_core.similarity import check_block_size

    L = num_layers(model)
    if "similarity" in config.strategies and similarity is None:
        raise ValueError("the similarity strategy needs a similarity result (compute it first)")
    if similarity is not None and similarity.num_layers != L:
        raise ValueError(f"the similarity result is for {similarity.num_layers} layers, the model has {L}")
    for n in config.ns:
        check_block_size(L, n)
    out = Path(out_dir).expanduser()
    _check_folder(out, _identity(model, similarity, config))
    points, rows, pruned_cache = sweep_points(config), [], {}
    for i, point in enumerate(points):
        check_cancel(cancel)
        path = out / "points" / f"{point_name(*point)}.json"
        report(progress, "sweep", i, len(points), point=point_name(*point))
        if not path.is_file():
            _write_json(path, _run_point(model, tokenizer, similarity, config, point, out, pruned_cache, progress,
                                         cancel))
        rows.append(json.loads(path.read_text()))
    report(progress, "sweep", len(points), len(points))
    frame = pd.DataFrame(rows)
    write_outputs(frame, out)
    return frame


# --------------------------------------------------------------------------------------------------------------
# Figures and files

COLORS = {"similarity": "#1f77b4", "deepest": "#d62728"}


def available_metrics(frame: pd.DataFrame) -> list[str]:
    """The metrics of :data:`METRIC_LABELS` that ``frame`` has values for."""
    return [m for m in METRIC_LABELS if m in frame and frame[m].notna().any()]


def sweep_figure(frame: pd.DataFrame, metric: str = "probe_accuracy"):
    """The paper's figure: ``metric`` against the fraction of layers dropped, one curve per strategy, solid when
    healed and dashed when not, with the unpruned model and the chance level marked."""
    import plotly.graph_objects as go

    if metric not in available_metrics(frame):
        raise ValueError(f"metric {metric!r} is not in the sweep; available: {', '.join(available_metrics(frame))}")
    base = frame[frame["n"] == 0]
    base_value = float(base[metric].iloc[0]) if len(base) else None
    fig = go.Figure()
    for (strategy, healed), part in frame[frame["n"] > 0].groupby(["strategy", "healed"], sort=True):
        part = part.sort_values("n")
        xs = ([0.0] if base_value is not None else []) + part["fraction"].tolist()
        ys = ([base_value] if base_value is not None else []) + part[metric].tolist()
        name = f"{strategy}, {'healed' if healed else 'no healing'}"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name,
                                 line=dict(color=COLORS.get(strategy), dash="solid" if healed else "dash")))
    if base_value is not None:
        fig.add_trace(go.Scatter(x=[0.0], y=[base_value], mode="markers", name="unpruned",
                                 marker=dict(symbol="star", size=14, color="black")))
        fig.add_hline(y=base_value, line=dict(color="black", dash="dot", width=1))
    chance = CHANCE_COLUMNS[metric]
    if chance in frame and frame[chance].notna().any():
        label = "chance" if "accuracy" in metric else "uniform prediction"
        fig.add_hline(y=float(frame[chance].dropna().iloc[0]), line=dict(color="gray", dash="dash", width=1),
                      annotation_text=label, annotation_position="bottom right")
    fig.update_layout(title=f"{METRIC_LABELS[metric]} vs fraction of layers dropped", template="plotly_white",
                      xaxis_title="fraction of layers dropped", yaxis_title=METRIC_LABELS[metric],
                      legend=dict(orientation="h", y=-0.2))
    return fig


def write_outputs(frame: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """``results.csv`` and ``sweep.html`` (one figure per metric, plotly.js embedded: works offline)."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    figures = [sweep_figure(frame, m) for m in available_metrics(frame)]
    parts = [fig.to_html(full_html=False, include_plotlyjs=i == 0) for i, fig in enumerate(figures)]
    html = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Layer pruning sweep</title></head><body>"
            + "\n".join(parts) + "</body></html>")
    _write_text(out / "sweep.html", html)
    return {"csv": out / "results.csv", "html": out / "sweep.html"}



def markdown_table(frame: pd.DataFrame, metrics: tuple[str, ...] = ("probe_accuracy", "loss")) -> str:
    """A Markdown table, one row per number of layers removed, one column per (metric, strategy, healed)."""
    metrics = [m for m in metrics if m in available_metrics(frame)]
    curves = sorted({(s, bool(h)) for s, h in zip(frame["strategy"], frame["healed"], strict=True) if s != "none"},
                    key=lambda c: (c[1], STRATEGIES.index(c[0])))
    base, L = frame[frame["n"] == 0], int(frame["n"].iloc[0] + frame["layers_left"].iloc[0])
    head = ["layers removed"] + [f"{SHORT_LABELS[m]}, {s}{' healed' if h else ''}" for m in metrics for s, h in curves]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted(frame["n"].unique()):
        cells = [f"{n} ({n / L:.0%})" if n else "0 (unpruned)"]
        for m in metrics:
            for s, h in curves:
                row = base if n == 0 else frame[(frame["n"] == n) & (frame["strategy"] == s) & (frame["healed"] == h)]
                cells.append(f"{float(row[m].iloc[0]):.3f}" if len(row) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
