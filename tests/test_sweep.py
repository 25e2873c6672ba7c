"""Sweeps on tiny random models: points, resume without recomputation, healed points, figures and files."""

from __future__ import annotations

import threading

import pytest

from prune_core import sweep
from prune_core.progress import Cancelled
from prune_core.similarity import compute_similarity, deepest_layers
from prune_core.sweep import SweepConfig, resolve_ns, run_sweep, sweep_figure, sweep_points


@pytest.fixture()
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"Paragraph {i}. " + "The quick brown fox jumps over the lazy dog. " * 12
                                for i in range(120)))
    return str(path)


@pytest.fixture()
def setup(tiny_llama, text_file):
    model, tok = tiny_llama
    result = compute_similarity(model, tok, text_file, n_samples=4, max_length=32, use_cache=False)
    config = SweepConfig(ns=(2, 1), eval_source=text_file, eval_samples=4, max_length=32, probe_limit=6)
    return model, tok, result, config


def test_sweep_evaluates_every_point_and_writes_csv_and_offline_html(setup, tmp_path):
    model, tok, result, config = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = run_sweep(model, tok, result, config, out_dir=tmp_path / "sweep")
    assert list(frame["point"]) == ["unpruned", "similarity_n001_pruned", "deepest_n001_pruned",
                                    "similarity_n002_pruned", "deepest_n002_pruned"]
    rows = frame.set_index("point")
    assert rows.loc["deepest_n002_pruned", "layers"] == ",".join(map(str, deepest_layers(6, 2)))
    assert rows.loc["similarity_n002_pruned", "layers"] == ",".join(map(str, result.best_layers(2)))
    assert rows.loc["similarity_n001_pruned", "fraction"] == pytest.approx(1 / 6)
    assert (frame["probe_chance"] == 0.25).all() and frame["probe_accuracy"].between(0, 1).all()
    assert (frame["loss"] > 0).all() and not frame["healed"].any()
    assert all(v.equal(model.state_dict()[k]) for k, v in before.items())  # the input model is untouched
    html = (tmp_path / "sweep" / "sweep.html").read_text()
    assert "<script src=" not in html and "plotly.js v" in html and len(html) > 1_000_000  # embedded: offline
    assert html.count("plotly-graph-div") >= 3  # probe accuracy, loss, normalised loss
    assert (tmp_path / "sweep" / "results.csv").read_text().startswith("point,strategy,n,")


def test_a_stopped_sweep_resumes_without_recomputing_finished_points(setup, tmp_path, monkeypatch):
    model, tok, result, config = setup
    calls = []
    real = sweep.evaluate_model
    monkeypatch.setattr(sweep, "evaluate_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    stop = threading.Event()

    def stop_after_two(p):
        if p.stage == "sweep" and p.done == 2:
            stop.set()

    with pytest.raises(Cancelled):
        run_sweep(model, tok, result, config, out_dir=tmp_path / "s", progress=stop_after_two, cancel=stop)
    done = sorted((tmp_path / "s" / "points").glob("*.json"))  # the third point was stopped half-way: not written
    assert [p.stem for p in done] == ["similarity_n001_pruned", "unpruned"]
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    calls.clear()
    frame = run_sweep(model, tok, result, config, out_dir=tmp_path / "s")
    assert len(calls) == 3 and len(frame) == 5  # only the three missing points were computed
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    again = run_sweep(model, tok, result, SweepConfig(**{**config.__dict__, "ns": (1, 2, 3)}), out_dir=tmp_path / "s")
    assert len(calls) == 5 and len(again) == 7  # a longer sweep in the same folder adds only its new points


def test_a_folder_with_other_settings_is_refused(setup, tmp_path):
    model, tok, result, config = setup
    run_sweep(model, tok, result, SweepConfig(**{**config.__dict__, "probe": False}), out_dir=tmp_path / "s")
    with pytest.raises(ValueError, match="changed: probe"):
        run_sweep(model, tok, result, config, out_dir=tmp_path / "s")
    healed = SweepConfig(**{**config.__dict__, "heal_preset": "quick-cpu", "heal_steps": 3})
    other_steps = SweepConfig(**{**config.__dict__, "heal_preset": "quick-cpu", "heal_steps": 4})
    assert healed.identity()["heal_config"]["steps"] == 3 and healed.identity() != other_steps.identity()


def test_healed_points_follow_their_pruned_point(setup, tmp_path):
    model, tok, result, config = setup
    cfg = SweepConfig(**{**config.__dict__, "ns": (2,), "strategies": ("deepest",), "heal_preset": "quick-cpu",
                         "heal_steps": 2, "probe": False})
    assert sweep_points(cfg) == [("none", 0, False), ("deepest", 2, False), ("deepest", 2, True)]
    frame = run_sweep(model, tok, result, cfg, out_dir=tmp_path / "h").set_index("point")
    assert (tmp_path / "h" / "heal" / "deepest_n002_healed" / "adapter" / "adapter_config.json").is_file()
    healed, pruned = frame.loc["deepest_n002_healed"], frame.loc["deepest_n002_pruned"]
    assert healed["healed"] and healed["layers"] == pruned["layers"]
    assert healed["loss"] != pruned["loss"] and healed["heal_loss_after"] is not None


def test_figure_marks_unpruned_and_chance(setup, tmp_path):
    model, tok, result, config = setup
    frame = run_sweep(model, tok, result, config, out_dir=tmp_path / "s")
    fig = sweep_figure(frame, "probe_accuracy")
    names = [t.name for t in fig.data]
    assert names == ["deepest, no healing", "similarity, no healing", "unpruned"]
    assert fig.data[0].x[0] == 0.0 and fig.data[0].y[0] == frame.loc[0, "probe_accuracy"]
    assert {s.y0 for s in fig.layout.shapes} == {frame.loc[0, "probe_accuracy"], 0.25}
    with pytest.raises(ValueError, match="available"):
        sweep_figure(frame, "mc_accuracy")


def test_markdown_table_has_a_row_per_n_and_a_column_per_curve(setup, tmp_path):
    model, tok, result, config = setup
    frame = run_sweep(model, tok, result, config, out_dir=tmp_path / "s")
    lines = sweep.markdown_table(frame).splitlines()
    assert lines[0] == "| layers removed | probe, similarity | probe, deepest | loss, similarity | loss, deepest |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 0 (unpruned)", "| 1 (17%)", "| 2 (33%)"]
    row = frame.set_index("point").loc["deepest_n002_pruned"]
    assert lines[4].endswith(f"| {row['loss']:.3f} |")


def test_configuration_is_validated(tiny_llama):
    with pytest.raises(ValueError, match="distinct positive"):
        SweepConfig(ns=(0, 2))
    with pytest.raises(ValueError, match="similarity, deepest"):
        SweepConfig(ns=(1,), strategies=("random",))
    with pytest.raises(ValueError, match="quick-cpu"):
        SweepConfig(ns=(1,), heal_preset="fast")
    model, tok = tiny_llama
    with pytest.raises(ValueError, match="similarity result"):
        run_sweep(model, tok, None, SweepConfig(ns=(1,)), out_dir="/nonexistent/never-written")
    with pytest.raises(ValueError, match="1 to 5"):
        run_sweep(model, tok, None, SweepConfig(ns=(6,), strategies=("deepest",)), out_dir="/nonexistent/x")


def test_resolve_ns_from_counts_or_fractions():
    assert resolve_ns(30, fractions=[0.1, 0.2, 0.21, 0.5]) == [3, 6, 15]
    assert resolve_ns(30, ns=[4, 2, 4]) == [2, 4]
    with pytest.raises(ValueError, match="either ns"):
        resolve_ns(30)
    with pytest.raises(ValueError, match="1 to 29"):
        resolve_ns(30, ns=[30])


def test_sweep_command_writes_the_folder_and_resumes(tmp_path, text_file, capsys):
    from prune_core.cli import main

    args = ["sweep", "--model", "tiny:llama", "--data", text_file, "--fractions", "0.2,0.4", "--calib-samples", "4",
            "--calib-max-length", "32", "--eval-samples", "2", "--max-length", "32", "--probe-limit", "4",
            "--out", str(tmp_path / "s")]
    assert main(args) == 0
    assert "similarity_n002_pruned" in capsys.readouterr().out
    points = sorted((tmp_path / "s" / "points").glob("*.json"))
    assert [p.stem for p in points] == ["deepest_n001_pruned", "deepest_n002_pruned", "similarity_n001_pruned",
                                        "similarity_n002_pruned", "unpruned"]
    mtimes = [p.stat().st_mtime_ns for p in points]
    assert main(args) == 0 and [p.stat().st_mtime_ns for p in points] == mtimes
    bad = [a if a != "0.2,0.4" else "2,x" for a in args]
    assert main([a if a != "--fractions" else "--ns" for a in bad]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
