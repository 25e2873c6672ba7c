"""Loss, option scoring, question loaders and the capital probe, on tiny random models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from prune_core.evaluate import (
    Question,
    boolq_questions,
    jsonl_questions,
    mmlu_questions,
    option_logprobs,
    score_questions,
    sequences_loss,
)
from prune_core.probe import capital_pairs, capital_probe, probe_questions
from prune_core.testing import tiny_model, tiny_tokenizer

DATA = Path(__file__).parent / "data"
QUESTIONS = [
    Question("The capital of France is", (" Paris", " Rome", " Oslo", " Buenos Aires"), 0, "geo"),
    Question("Pick: ", ("a", "b", "c"), 1, "letters"),  # trailing space moves into the options
    Question("Is it?", (" yes", " no"), 1, "yn"),
    Question("A much longer prompt that forces padding in a batch", (" x", " yz", " abc"), 2, "letters"),
    Question("Hi", ("A", "B", "C", "D"), 3, "letters"),  # single-token options: next-token scoring
]

SHARED = [Question("<system> be brief </system> " + q.prompt, q.options, q.answer, q.subject) for q in QUESTIONS]


@torch.no_grad()
def direct_logprob(model, tok, prompt: str, option: str) -> float:
    """Reference: one unpadded forward of prompt + option, summing the option tokens' log-probabilities."""
    stripped = prompt.rstrip()
    ctx = tok(stripped)["input_ids"]
    opt = tok(prompt[len(stripped):] + option, add_special_tokens=False)["input_ids"]
    logp = model(torch.tensor([ctx + opt])).logits[0].log_softmax(-1)
    return sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(opt))


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma2", "qwen2_moe", "phi"])
@pytest.mark.parametrize("questions", [QUESTIONS, SHARED], ids=["distinct", "shared-prefix"])
def test_option_logprobs_equal_direct_computation_at_any_batch_size(model_type, questions):
    model, tok = tiny_model(model_type), tiny_tokenizer()
    expected = [[direct_logprob(model, tok, q.prompt, o) for o in q.options] for q in questions]
    for batch_size, share in ((1, True), (3, True), (64, True), (64, False)):
        got = option_logprobs(model, tok, questions, batch_size=batch_size, share_prefix=share)
        for q, exp, row in zip(questions, expected, got, strict=True):
            assert [n for _, n in row] == [len(tok(q.prompt[len(q.prompt.rstrip()):] + o,
                                                   add_special_tokens=False)["input_ids"]) for o in q.options]
            torch.testing.assert_close(torch.tensor([s for s, _ in row]), torch.tensor(exp), rtol=1e-4, atol=1e-4)


def test_single_token_options_use_the_next_token_probability_at_the_last_prompt_position(tiny_llama):
    model, tok = tiny_llama
    q = Question("Answer:", (" ", "!", "?"), 0)
    ids = tok("Answer:")["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    expected = [logp[tok(o, add_special_tokens=False)["input_ids"][0]].item() for o in q.options]
    got = [s for s, _ in option_logprobs(model, tok, [q])[0]]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_scores_do_not_depend_on_the_other_questions_of_the_batch(tiny_llama):
    model, tok = tiny_llama
    alone = option_logprobs(model, tok, QUESTIONS[:1], batch_size=64)[0]
    long_neighbour = Question("x" * 120, (" Paris", " Rome", " Oslo", " Lima"), 0)
    mixed = option_logprobs(model, tok, [long_neighbour, *QUESTIONS, long_neighbour], batch_size=64)[1]
    torch.testing.assert_close(torch.tensor(mixed), torch.tensor(alone), rtol=1e-5, atol=1e-5)


def test_score_questions_picks_the_best_option_and_reports_chance(tiny_llama):
    model, tok = tiny_llama
    lps = option_logprobs(model, tok, QUESTIONS)
    for normalize in ("sum", "mean"):
        result = score_questions(model, tok, QUESTIONS, normalize=normalize)
        values = [[s if normalize == "sum" else s / n for s, n in row] for row in lps]
        assert result["predictions"] == [row.index(max(row)) for row in values]
        assert result["accuracy"] == pytest.approx(sum(result["correct"]) / len(QUESTIONS))
        assert result["chance"] == pytest.approx(sum(1 / len(q.options) for q in QUESTIONS) / len(QUESTIONS))
        per = result["per_subject"]
        assert set(per) == {"geo", "letters", "yn"}
        assert result["subject_accuracy"] == pytest.approx(sum(per.values()) / 3)


def test_scoring_rejects_bad_arguments(tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(ValueError, match="sum, mean"):
        score_questions(model, tok, QUESTIONS, normalize="max")
    with pytest.raises(ValueError, match="batch_size"):
        option_logprobs(model, tok, QUESTIONS, batch_size=0)
    with pytest.raises(ValueError, match="no questions"):
        score_questions(model, tok, [])


# ---------------------------------------------------------------------------------------------------------------
# Loss


@torch.no_grad()
def test_sequences_loss_equals_a_manual_token_weighted_mean(tiny_llama):
    model, tok = tiny_llama
    seqs = [tok(t)["input_ids"] for t in ("short", "a somewhat longer text", "mid length!")]
    total, count = 0.0, 0
    for s in seqs:
        logits = model(torch.tensor([s])).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits, torch.tensor(s[1:]), reduction="sum").item()
        count += len(s) - 1
    for batch_size in (1, 2, 8):
        result = sequences_loss(model, seqs, batch_size=batch_size, pad_id=0)
        assert result["tokens"] == count
        assert result["loss"] == pytest.approx(total / count, rel=1e-5)
        assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
        assert result["normalized_loss"] == pytest.approx(total / count / math.log(model.config.vocab_size), rel=1e-5)


def test_sequences_loss_rejects_nothing_to_predict(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sequences_loss(model, [[5]])


def test_heldout_loss_reads_the_eval_split_of_a_file(tiny_llama, tmp_path):
    from prune_core.data import token_samples
    from prune_core.evaluate import heldout_loss

    model, tok = tiny_llama
    path = tmp_path / "text.txt"
    path.write_text("\n\n".join(f"Paragraph {i}: " + "some words to read " * 30 for i in range(60)))
    result = heldout_loss(model, tok, str(path), n_samples=4, max_length=32, batch_size=3)
    seqs = token_samples(tok, str(path), "eval", n_samples=4, max_length=32)
    assert result == pytest.approx(sequences_loss(model, seqs, pad_id=0))
    assert result["tokens"] == 4 * 31


# ---------------------------------------------------------------------------------------------------------------
# Question sets


def test_jsonl_questions_accept_index_letter_and_text_answers():
    qs = jsonl_questions(str(DATA / "eval_questions.jsonl"))
    assert [q.answer for q in qs] == [1, 1, 0, 1]
    assert qs[0].options == (" A", " B", " C", " D") and qs[2].options == (" A", " B")
    assert qs[0].prompt.endswith("D. Saturn\nAnswer:") and qs[0].subject == "astronomy"
    text = jsonl_questions(str(DATA / "eval_questions.jsonl"), method="text", limit=2)
    assert len(text) == 2 and text[0].options == (" Venus", " Mars", " Jupiter", " Saturn")


def test_jsonl_questions_reject_bad_records(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": "zebra"}) + "\n")
    with pytest.raises(ValueError, match="neither an index"):
        jsonl_questions(str(bad))
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"]}) + "\n")
    with pytest.raises(ValueError, match="missing"):
        jsonl_questions(str(bad))
    with pytest.raises(ValueError, match="letter"):
        jsonl_questions(str(DATA / "eval_questions.jsonl"), method="words")


def _mmlu_folder(tmp_path) -> str:
    """A folder in the layout of ``cais/mmlu`` ("all" config) written by ``save_to_disk``."""
    import datasets

    def rows(split, n):
        return [{"question": f"{split} {subj} question {i}?", "subject": subj, "choices": ["w", "x", "y", "z"],
                 "answer": i % 4} for subj in ("anatomy", "virology") for i in range(n)]

    dd = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows("test", 3)),
                               "dev": datasets.Dataset.from_list(rows("dev", 5))})
    dd.save_to_disk(str(tmp_path / "mmlu"))
    return str(tmp_path / "mmlu")


def test_mmlu_questions_take_shots_from_the_dev_split_of_the_same_subject(tmp_path):
    folder = _mmlu_folder(tmp_path)
    qs = mmlu_questions(folder, shots=2)
    assert len(qs) == 6 and {q.subject for q in qs} == {"anatomy", "virology"}
    q = qs[0]
    assert q.prompt.startswith("The following are multiple choice questions (with answers) about anatomy.")
    assert q.prompt.count("Answer:") == 3 and "dev anatomy question 1?" in q.prompt
    assert "dev anatomy question 2?" not in q.prompt and "virology" not in q.prompt
    assert q.prompt.endswith("test anatomy question 0?\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    assert q.options == (" A", " B", " C", " D") and [x.answer for x in qs[:3]] == [0, 1, 2]
    zero = mmlu_questions(folder, shots=0, subjects=["virology"], max_per_subject=2)
    assert len(zero) == 2 and zero[0].prompt.count("Answer:") == 1
    with pytest.raises(ValueError, match="not found"):
        mmlu_questions(folder, subjects=["law"])
    with pytest.raises(ValueError, match="between 0 and 5"):
        mmlu_questions(folder, shots=6)


def test_boolq_questions_from_a_parquet_file_with_the_hub_schema(tmp_path):
    import datasets

    datasets.Dataset.from_list([
        {"question": "is the sky blue", "answer": True, "passage": "The sky is blue."},
        {"question": "is fire cold", "answer": False, "passage": "Fire is hot."},
    ]).to_parquet(str(tmp_path / "boolq.parquet"))
    qs = boolq_questions(str(tmp_path / "boolq.parquet"))
    assert [q.answer for q in qs] == [1, 0] and qs[0].options == (" no", " yes")
    assert qs[0].prompt == "The sky is blue.\nQuestion: Is the sky blue?\nAnswer:"


# ---------------------------------------------------------------------------------------------------------------
# The capital probe


def test_capital_probe_questions_are_deterministic_and_well_formed():
    pairs = capital_pairs()
    assert 240 <= len(pairs) <= 260 and all(cap for _, cap in pairs)
    assert dict(pairs)["France"] == "Paris"
    qs = probe_questions(seed=0)
    assert qs == probe_questions(seed=0) and qs != probe_questions(seed=1)
    assert len(qs) == len(pairs)
    for q, (country, capital) in zip(qs, pairs, strict=True):
        assert q.prompt == f"The capital of {country} is"
        assert len(set(q.options)) == 4 and q.options[q.answer] == " " + capital
    assert {q.answer for q in qs} == {0, 1, 2, 3}


def test_capital_probe_templates():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="chat template"):
        capital_probe(tiny_model(), tok, template="chat", limit=3)
    with pytest.raises(ValueError, match="plain, chat, auto"):
        capital_probe(tiny_model(), tok, template="fancy")
    tok.chat_template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
    q = probe_questions(limit=1, template="chat", tokenizer=tok)[0]
    country = capital_pairs()[0][0]
    assert q.prompt == f"<s>What is the capital of {country}?</s>The capital of {country} is"


def test_capital_probe_on_a_tiny_model_reports_its_fields(tiny_llama):
    model, tok = tiny_llama
    result = capital_probe(model, tok, limit=12)
    assert result["n"] == 12 and result["chance"] == 0.25 and result["template"] == "plain"
    assert result["accuracy"] == sum(result["correct"]) / 12


def test_eval_command_prints_json_with_every_requested_measure(capsys, tmp_path):
    from prune_core.cli import main

    out = tmp_path / "eval.json"
    args = ["eval", "--model", "tiny:llama", "--samples", "2", "--max-length", "32", "--probe-limit", "4",
            "--mc", str(DATA / "eval_questions.jsonl"), "--json", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(out.read_text())
    assert result["layers"] == 6 and result["loss"]["tokens"] == 2 * 31 and result["probe"]["n"] == 4
    assert result["mc"][str(DATA / "eval_questions.jsonl")]["n"] == 4
    assert main(["eval", "--model", "tiny:llama", "--no-loss", "--no-probe", "--mc", "nonsense"]) == 2
    assert "unknown question set" in capsys.readouterr().err


def test_lm_eval_missing_is_a_clear_error(tiny_llama, monkeypatch):
    import sys

    from prune_core.evaluate import run_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval.evaluator", None)
    with pytest.raises(ValueError, match="pip install 'lm-eval==0.4.13'"):
        run_lm_eval(*tiny_llama, ["anything"])


def test_lm_eval_runs_a_local_task_on_an_in_memory_model(tiny_llama, tmp_path):
    pytest.importorskip("lm_eval")
    from prune_core.evaluate import run_lm_eval

    (tmp_path / "task.yaml").write_text(
        "task: local_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {DATA / 'eval_questions.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"{{question}}\\nAnswer:\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{choices.index(answer) if answer is string and answer in choices else "
        "('ABCD'.index(answer) if answer is string else answer)}}\"\nmetric_list:\n  - metric: acc\n")
    results = run_lm_eval(*tiny_llama, ["local_mc"], include_path=str(tmp_path), batch_size=2)
    assert 0.0 <= results["local_mc"]["acc,none"] <= 1.0
