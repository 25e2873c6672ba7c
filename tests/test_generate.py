"""Generation and side-by-side comparison on tiny random models."""

from __future__ import annotations

import threading

import pytest

from prune_core.generate import (
    GenerationSettings,
    compare_generations,
    encode_prompt,
    generate_text,
    stream_generation,
)
from prune_core.progress import Cancelled
from prune_core.prune import drop_layers
from prune_core.testing import tiny_model, tiny_tokenizer

FIELDS = {"model", "prompt", "text", "new_tokens", "latency_s", "tokens_per_s", "num_params", "num_layers",
          "memory_mb"}


def test_compare_generations_returns_every_field_per_model_and_prompt(tiny_llama):
    model, tok = tiny_llama
    pruned = drop_layers(model, [2, 3])
    rows = compare_generations({"original": (model, tok), "pruned": (pruned, tok)}, ["hello", "abc"],
                               GenerationSettings(max_new_tokens=6))
    assert [(r["model"], r["prompt"]) for r in rows] == [("original", "hello"), ("original", "abc"),
                                                         ("pruned", "hello"), ("pruned", "abc")]
    for r in rows:
        assert set(r) == FIELDS
        assert r["new_tokens"] == 6 and r["latency_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(r["new_tokens"] / r["latency_s"])
    assert rows[0]["num_layers"] == 6 and rows[2]["num_layers"] == 4
    assert rows[2]["num_params"] < rows[0]["num_params"] and rows[2]["memory_mb"] <= rows[0]["memory_mb"]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2", "gemma2", "falcon"])
def test_cached_and_uncached_greedy_generation_agree_on_pruned_models(model_type):
    tok = tiny_tokenizer()
    pruned = drop_layers(tiny_model(model_type), [1, 3])
    cached = generate_text(pruned, tok, "The quick brown fox", GenerationSettings(max_new_tokens=24))
    uncached = generate_text(pruned, tok, "The quick brown fox", GenerationSettings(max_new_tokens=24,
                                                                                     use_cache=False))
    assert cached["token_ids"] == uncached["token_ids"] and len(cached["token_ids"]) == 24


def test_sampling_is_reproducible_with_a_seed_and_differs_between_seeds(tiny_llama):
    model, tok = tiny_llama
    runs = [generate_text(model, tok, "hi", GenerationSettings(max_new_tokens=16, do_sample=True, seed=s,
                                                                temperature=2.0))["token_ids"] for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_streaming_yields_the_same_text_as_generate(tiny_llama):
    model, tok = tiny_llama
    settings = GenerationSettings(max_new_tokens=12)
    chunks = list(stream_generation(model, tok, "hello", settings))
    assert "".join(chunks) == generate_text(model, tok, "hello", settings)["text"]


def test_streaming_raises_the_generation_error_in_the_caller():
    model, tok = tiny_model(), tiny_tokenizer()
    with pytest.raises(ValueError, match="chat template"):
        list(stream_generation(model, tok, "hello", GenerationSettings(chat_template=True)))
    settings = GenerationSettings(max_new_tokens=4)
    model.generation_config.num_beams = 0  # an invalid value that generate itself rejects, inside the thread
    with pytest.raises(ValueError):
        list(stream_generation(model, tok, "hello", settings))


def test_chat_template_is_used_when_the_tokenizer_has_one():
    tok = tiny_tokenizer()
    plain = encode_prompt(tok, "hi")["input_ids"][0].tolist()
    tok.chat_template = ("{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
                         "{% if add_generation_prompt %}>{% endif %}")
    chat = encode_prompt(tok, "hi")["input_ids"][0].tolist()
    assert tok.decode(chat) == "[hi]>" and tok.decode(plain) == "hi"
    assert encode_prompt(tok, "hi", chat_template=False)["input_ids"][0].tolist() == plain


def test_settings_and_inputs_are_validated(tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=1.5)
    with pytest.raises(ValueError, match="no models"):
        compare_generations({}, "hi")
    with pytest.raises(ValueError, match="non-empty prompt"):
        compare_generations({"m": (model, tok)}, ["  "])
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        compare_generations({"m": (model, tok)}, "hi", cancel=stop)


def test_compare_command_prints_and_writes_every_variant(tmp_path, capsys):
    import pandas as pd

    from prune_core.cli import main

    csv = tmp_path / "rows.csv"
    args = ["compare", "--model", "tiny:llama", "--drop-deepest", "2", "--drop-layers", "0,2", "--prompt", "hi",
            "--prompt", "yo", "--max-new-tokens", "3", "--csv", str(csv)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "deepest -2 [3-4]" in out and "manual -2 [0,2]" in out
    rows = pd.read_csv(csv)
    assert len(rows) == 6 and set(rows.columns) == FIELDS and sorted(set(rows["num_layers"])) == [4, 6]
    assert main(["compare", "--model", "tiny:llama"]) == 2
    assert "--prompt" in capsys.readouterr().err
