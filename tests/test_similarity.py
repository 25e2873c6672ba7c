"""The similarity engine against an independent brute-force reference, padding invariance, block choice, results,
caching and bad input, on tiny random models of several families."""

from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest
import torch
from torch import nn

from prune_core import similarity as sim
from prune_core.models import arch_spec
from prune_core.progress import Cancelled
from prune_core.similarity import SimilarityResult, compute_similarity, deepest_layers, layer_distances
from prune_core.testing import tiny_model, tiny_tokenizer

FAMILIES = ["llama", "gpt2", "gemma2", "phi", "opt", "gpt_neox", "qwen2", "falcon"]
L = 5


def _samples(lengths=(9, 23, 14, 31, 5, 17), seed=0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 260, (n,), generator=gen).tolist() for n in lengths]


def _without_final_norm(model: nn.Module) -> nn.Module:
    """A copy whose final norm is the identity, so output_hidden_states' last entry is the pre-norm x^(L)."""
    clone = copy.deepcopy(model)
    parent_path, _, attr = arch_spec(clone).final_norm.rpartition(".")
    setattr(clone.get_submodule(parent_path), attr, nn.Identity())
    return clone


def _reference(model: nn.Module, samples, metric: str) -> np.ndarray:
    """Brute force: one unpadded sample at a time, every hidden state, every pair of layers, in float64."""
    clone = _without_final_norm(model)
    total, count = 0.0, 0
    for s in samples:
        with torch.no_grad():
            out = clone(torch.tensor([s]), output_hidden_states=True)
        states = torch.stack(out.hidden_states)[:, 0].double()  # (L+1, T, D)
        if metric == "angular_last":
            states = states[:, -1:]
        size = states.shape[0]
        value = np.zeros((size, size))
        for a in range(size):
            for b in range(size):
                for t in range(states.shape[1]):
                    u, v = states[a, t], states[b, t]
                    cos = float(torch.dot(u, v) / (u.norm() * v.norm()))
                    cos = min(1.0, max(-1.0, cos))
                    value[a, b] += 1 - cos if metric == "block_influence" else math.acos(cos) / math.pi
        total, count = total + value, count + states.shape[1]
    return total / count


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("metric", list(sim.METRICS))
def test_matches_brute_force_reference(family, metric):
    model = tiny_model(family, num_layers=L)
    samples = _samples()[:4] if metric != "angular_last" else _samples()
    got, count = layer_distances(model, samples, metric=metric, batch_size=3, padding_side="right")
    want = _reference(model, samples, metric)
    assert got.shape == (L + 1, L + 1)
    assert count == (len(samples) if metric == "angular_last" else sum(map(len, samples)))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.abs(got).max() > 0.01  # the states really differ: the comparison is not vacuous


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_side_and_batch_size_do_not_matter(family):
    model = tiny_model(family, num_layers=L)
    samples = _samples()
    alone = np.mean([layer_distances(model, [s])[0] for s in samples], axis=0)
    for side in ("left", "right"):
        for batch_size in (2, 4, 6):
            got, _ = layer_distances(model, samples, batch_size=batch_size, padding_side=side, pad_id=0)
            np.testing.assert_allclose(got, alone, atol=1e-5, rtol=0)
    mean_tokens, _ = layer_distances(model, samples, metric="angular_mean", batch_size=6, padding_side="left")
    mean_alone, _ = layer_distances(model, samples, metric="angular_mean", batch_size=1)
    np.testing.assert_allclose(mean_tokens, mean_alone, atol=1e-5, rtol=0)


def test_model_is_left_untouched():
    model = tiny_model("llama", num_layers=L).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_distances(model, _samples())
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_metric_ranges_and_symmetry():
    model = tiny_model("llama", num_layers=L)
    for metric in sim.METRICS:
        got, _ = layer_distances(model, _samples(), metric=metric)
        upper = 2.0 if metric == "block_influence" else 1.0  # 1 - cos lies in [0, 2]
        assert np.all(got >= -1e-12) and np.all(got <= upper)
        np.testing.assert_allclose(got, got.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(got), 0, atol=1e-6)


def test_bf16_model_gives_finite_distances():
    model = tiny_model("llama", num_layers=L).to(torch.bfloat16)
    got, _ = layer_distances(model, _samples())
    reference, _ = layer_distances(tiny_model("llama", num_layers=L), _samples())
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, reference, atol=0.02)


# ---------------------------------------------------------------------------------------------------- block choice


def _result(L_: int = 6) -> SimilarityResult:
    pairwise = np.abs(np.subtract.outer(np.arange(L_ + 1), np.arange(L_ + 1))) * 0.1
    pairwise[2, 3] = pairwise[3, 2] = 0.01  # layer 2 changes little
    pairwise[1, 4] = pairwise[4, 1] = 0.05  # layers 1..3 change little together
    return SimilarityResult(sim.pairwise_to_blocks(pairwise), {"metric": "angular_last"})


def test_block_indexing_and_argmin():
    result = _result()
    assert result.num_layers == 6
    assert result.distances.shape == (7, 7)
    assert result.distances[1, 2] == pytest.approx(0.01)  # the block {2} = d(x^(2), x^(3))
    assert np.isnan(result.distances[3, 4]) and not np.isnan(result.distances[3, 3])
    assert result.best_start(1) == 2 and result.best_layers(1) == [2]
    assert result.best_start(3) == 1 and result.best_layers(3) == [1, 2, 3]
    assert result.row(5).shape == (2,)
    table = result.best_table()
    assert list(table["n"]) == [1, 2, 3, 4, 5]
    assert table.loc[2, "start"] == 1 and table.loc[2, "end"] == 3
    assert table.loc[0, "deepest_start"] == 4 and table.loc[0, "deepest_distance"] == pytest.approx(0.1)


def test_deepest_layers_keeps_the_final_layer():
    assert deepest_layers(30, 1) == [28]
    assert deepest_layers(30, 6) == [23, 24, 25, 26, 27, 28]
    assert deepest_layers(4, 3) == [0, 1, 2]
    for bad in (0, 4, -1, 2.5):
        with pytest.raises(ValueError, match="from 1 to 3"):
            deepest_layers(4, bad)
    with pytest.raises(ValueError, match="from 1 to 5"):
        _result().best_start(6)


def test_save_and_load_roundtrip(tmp_path):
    result = _result()
    result.save(tmp_path / "r")
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"result.json", "distances.csv", "best_blocks.csv"}
    loaded = SimilarityResult.load(tmp_path / "r")
    np.testing.assert_array_equal(np.isnan(loaded.distances), np.isnan(result.distances))
    np.testing.assert_allclose(loaded.distances, result.distances)
    assert loaded.metadata == result.metadata
    with pytest.raises(FileNotFoundError, match="result.json"):
        SimilarityResult.load(tmp_path)


# ---------------------------------------------------------------------------------------------------- entry point


def test_compute_similarity_end_to_end_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_CORE_CACHE", str(tmp_path))
    model, tok = tiny_model("llama", num_layers=L), tiny_tokenizer()
    seen = []
    first = compute_similarity(model, tok, "python-docs", n_samples=6, max_length=32, batch_size=4,
                               progress=seen.append)
    assert not first.cached and [p.done for p in seen] == [1, 2] and seen[-1].total == 2
    assert first.metadata["source"] == "python-docs" and first.metadata["n_samples"] == 6
    assert first.metadata["num_layers"] == L and first.distances.shape == (L + 1, L + 1)
    again = compute_similarity(model, tok, "python-docs", n_samples=6, max_length=32, batch_size=2)
    assert again.cached
    np.testing.assert_allclose(again.distances, first.distances)
    other = compute_similarity(model, tok, "python-docs", n_samples=6, max_length=32, seed=1)
    assert not other.cached and not np.allclose(other.distances, first.distances, equal_nan=True)
    fresh = compute_similarity(model, tok, "python-docs", n_samples=6, max_length=32, use_cache=False)
    assert not fresh.cached


def test_cancel_stops_before_the_next_batch():
    cancel = threading.Event()
    calls = []

    def progress(p):
        calls.append(p.done)
        cancel.set()

    with pytest.raises(Cancelled):
        layer_distances(tiny_model("llama", num_layers=L), _samples(), batch_size=2, progress=progress,
                        cancel=cancel)
    assert calls == [1]


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "cosine"}, "angular_last, angular_mean, block_influence"),
    ({"padding_side": "middle"}, "'left' or 'right'"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer_distances(tiny_model("llama", num_layers=2), _samples(), **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        layer_distances(tiny_model("llama", num_layers=2), [[5, 6], []])


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_table_files_and_offline_html(tmp_path, monkeypatch, capsys):
    from prune_core.cli import main

    monkeypatch.setenv("PRUNE_CORE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    argv = ["similarity", "--model", "tiny:llama", "--samples", "4", "--max-length", "32", "--batch-size", "2",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"result.json", "distances.csv", "best_blocks.csv", "heatmap.html"}
    result = SimilarityResult.load(out)
    assert f"drop layer {result.best_start(1)}" not in printed  # the table names layers as "layer k"
    assert f" layer {result.best_start(1)} " in printed and "deepest_distance" in printed
    html = (out / "heatmap.html").read_text()
    assert "<script src=" not in html.replace('"', "").replace("'", "")  # nothing fetched: works offline
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js embedded
    assert main(argv) == 2 and "not empty" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0 and "[cached]" in capsys.readouterr().out


@pytest.mark.parametrize("extra, match", [
    (["--samples", "0"], "--samples must be at least 1"),
    (["--data", "nothing.pdf"], "unknown data source"),
    (["--metric", "cosine"], None),
])
def test_cli_bad_input(tmp_path, capsys, extra, match):
    from prune_core.cli import main

    argv = ["similarity", "--model", "tiny:llama", "--out", str(tmp_path / "o")] + extra
    if match is None:  # argparse rejects the choice itself
        with pytest.raises(SystemExit):
            main(argv)
        assert "invalid choice" in capsys.readouterr().err
        return
    assert main(argv) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_hooks_ignore_other_threads_using_the_same_model():
    """A shared model may be generating in another session's thread while a similarity pass holds hooks on it."""
    from prune_core.similarity import _StateCapture

    model = tiny_model("llama", num_layers=3)
    capture = _StateCapture(model, torch.device("cpu"), all_tokens=False)
    try:
        ids = torch.tensor([[5, 6, 7, 8]])
        capture.set_mask(torch.ones_like(ids))
        worker = threading.Thread(target=lambda: model(ids))
        worker.start()
        worker.join()
        assert all(state is None for state in capture.states)
        model(ids)
        assert all(state is not None for state in capture.states)
    finally:
        capture.remove()
