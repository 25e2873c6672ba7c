"""The `prune-core` command line, in-process, on tiny models."""

from __future__ import annotations

import json

import pytest
import yaml

from prune_core.cli import build_parser, main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert {"info", "prune"} <= {name for name in build_parser()._subparsers._group_actions[0].choices}
    assert "prune" in out


def test_info_prints_json(capsys):
    assert main(["info", "--model", "tiny:llama", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == 6


@pytest.mark.parametrize("args, removed", [
    (["--strategy", "manual", "--layers", "1-2"], [1, 2]),
    (["--strategy", "deepest", "-n", "2"], [3, 4]),
    (["--strategy", "deepest", "--fraction", "0.5"], [2, 3, 4]),
])
def test_prune_writes_model_and_mergekit_config(tmp_path, args, removed):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", "tiny:llama", *args, "--out", str(out)]) == 0
    assert json.loads((out / "prune.json").read_text())["removed_layers"] == removed
    slices = yaml.safe_load((out / "mergekit.yml").read_text())["slices"]
    assert sum(s["sources"][0]["layer_range"][1] - s["sources"][0]["layer_range"][0] for s in slices) == 6 - len(
        removed)


def test_prune_by_similarity(tmp_path):
    out = tmp_path / "pruned"
    args = ["prune", "--model", "tiny:llama", "-n", "2", "--samples", "4", "--max-length", "32", "--out", str(out)]
    assert main(args) == 0
    removed = json.loads((out / "prune.json").read_text())["removed_layers"]
    assert len(removed) == 2 and removed[1] == removed[0] + 1


def test_prune_refuses_bad_input_without_touching_files(tmp_path, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["prune", "--model", "tiny:llama", "--strategy", "deepest", "-n", "1", "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert main(["prune", "--model", "tiny:llama", "--strategy", "deepest", "-n", "6",
                 "--out", str(tmp_path / "o")]) == 2
    assert "block size n must be" in capsys.readouterr().err
    assert main(["prune", "--model", "tiny:llama", "--strategy", "manual", "--out", str(tmp_path / "o")]) == 2
    assert "needs the layers" in capsys.readouterr().err
