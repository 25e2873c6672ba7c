"""Quality measures: held-out loss and multiple-choice accuracy by option likelihood (Gromov et al. 2024, sec. 4).

The paper reports the loss on held-out text normalised by log(vocabulary size), and scores multiple choice by the
next-token probability of the option letter (A/B/C/D, yes/no) at the last prompt position. Here every option is a
*continuation* of its prompt scored by its summed token log-probability; when all options of a question are single
tokens (" A", " B", ...) that is exactly the paper's next-token probability, read from one forward pass of the prompt.
Batches are right-padded (positions stay 0..T-1, as unbatched) and only real tokens are read.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from prune_core.progress import ProgressFn, check_cancel, report

NORMALIZATIONS = ("sum", "mean")
MMLU_LETTERS = ("A", "B", "C", "D")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (where inputs go)."""
    return next(model.parameters()).device


def pad_id_of(tokenizer) -> int:
    """The tokenizer's pad id, else its eos id, else 0 (padding is never read, so any id works)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _right_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def _logits(model: torch.nn.Module, seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    ids, mask = _right_pad(seqs, pad_id, model_device(model))
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()  # (B, T, V)


def _batches(order: list[int], batch_size: int):
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


# --------------------------------------------------------------------------------------------------------------
# Loss


def sequences_loss(model: torch.nn.Module, sequences: list[list[int]], *, batch_size: int = 8, pad_id: int = 0,
                   progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> dict:
    """Mean next-token loss over every real token of ``sequences`` (token-weighted, each sequence predicts its
    tokens 1..T-1). Returns loss, perplexity, loss / log(vocab) and the number of predicted tokens."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seqs = [list(s) for s in sequences if len(s) >= 2]
    if not seqs:
        raise ValueError("no sequence has at least 2 tokens: nothing to predict")
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths share a batch: less padding
    total, count, vocab = 0.0, 0, 0
    for done, idx in enumerate(_batches(order, batch_size)):
        check_cancel(cancel)
        batch = [seqs[i] for i in idx]
        logits = _logits(model, batch, pad_id)
        vocab = logits.shape[-1]
        for b, s in enumerate(batch):
            target = torch.tensor(s[1:], device=logits.device)
            total += torch.nn.functional.cross_entropy(logits[b, : len(s) - 1], target, reduction="sum").item()
            count += len(s) - 1
        report(progress, "held-out loss", min((done + 1) * batch_size, len(seqs)), len(seqs), loss=total / count)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "normalized_loss": loss / math.log(vocab),
            "tokens": count}


def heldout_loss(model: torch.nn.Module, tokenizer, source, *, n_samples: int = 32, max_length: int = 256,
                 batch_size: int = 8, seed: int = 0, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> dict:
    """Loss and perplexity on the ``"eval"`` split of a data source (disjoint from calibration and healing text),
    also normalised by log(vocabulary size) as in the paper. ``source`` is a DataSource or a spec string."""
    from prune_core.data import token_samples

    seqs = token_samples(tokenizer, source, "eval", n_samples=n_samples, max_length=max_length, seed=seed)
    return sequences_loss(model, seqs, batch_size=batch_size, pad_id=pad_id_of(tokenizer), progress=progress,
                          cancel=cancel)


# --------------------------------------------------------------------------------------------------------------
# Multiple choice


@dataclass(frozen=True)
class Question:
    """A multiple-choice question: each option is a continuation of ``prompt`` (" A", " yes", " Paris")."""

    prompt: str
    options: tuple[str, ...]
    answer: int
    subject: str = ""


def encode_question(tokenizer, q: Question, *, add_special_tokens: bool = True) -> tuple[list[int], list[list[int]]]:
    """Token ids of the prompt and of each option. Whitespace at the end of the prompt moves to the options, so
    " Paris" tokenizes as it would inside running text."""
    prompt = q.prompt.rstrip()
    gap = q.prompt[len(prompt):]
    ctx = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    opts = [tokenizer(gap + o, add_special_tokens=False)["input_ids"] for o in q.options]
    if not ctx or any(not o for o in opts):
        raise ValueError(f"empty prompt or option after tokenization in {q.prompt[:60]!r}")
    return list(ctx), [list(o) for o in opts]


def _log_probs(logits: torch.Tensor, targets: list[int]) -> float:
    """Summed log-probability of ``targets`` under rows of ``logits`` (K, V)."""
    tok = torch.tensor(targets, device=logits.device)
    return torch.log_softmax(logits.float(), dim=-1).gather(1, tok[:, None]).sum().item()


class _SharedPrefix:
    """The tokens every prompt starts with (a chat template's system prompt, a few-shot header), run once; each batch
    starts from a copy of their KV cache, repeated per row."""

    def __init__(self, model, ids: list[int]) -> None:
        self.length, self.cache = len(ids), None
        if ids:
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids], device=model_device(model)), use_cache=True, logits_to_keep=1)
            self.cache = out.cache

    def start(self, rows: int, mask: torch.Tensor):
        """(cache for ``rows`` rows or None, ``mask`` extended over the prefix)."""
        if not self.length:
            return None, mask
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(rows)
        return cache, torch.cat([torch.ones(rows, self.length, dtype=mask.dtype, device=mask.device), mask], dim=1)


def _common_prefix(seqs: list[list[int]], minimum: int = 8) -> int:
    """Length of the token prefix shared by all ``seqs`` (each keeps at least one token), 0 if under ``minimum``."""
    limit, n = min(len(s) for s in seqs) - 1, 0
    while n < limit and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n if n >= minimum else 0


@torch.no_grad()
def _score_single_token(model, items, pad_id: int, prefix: _SharedPrefix) -> list[list[float]]:
    """The paper's scoring: next-token log-probability of each one-token option at the last prompt position.
    ``items``: (prompt ids after the shared prefix, [option token, ...]), right-padded into one batch."""
    ids, mask = _right_pad([ctx for ctx, _ in items], pad_id, model_device(model))
    last = mask.sum(1, keepdim=True) - 1  # (B, 1): the last real position of each row
    cache, mask = prefix.start(len(items), mask)
    logits = model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=cache is not None,
                   logits_to_keep=last).logits  # (B, 1, V)
    return [[_log_probs(logits[b], [t]) for t in opts] for b, (_, opts) in enumerate(items)]


@torch.no_grad()
def _score_continuations(model, items, pad_id: int, prefix: _SharedPrefix) -> list[list[float]]:
    """Summed log-probability of multi-token options: the prompts (all of one length, so no padding) run once with
    a KV cache, which is repeated for each option; then every option's tokens but its last run in one batch."""
    n = len(items[0][1])
    device = model_device(model)
    ctx = torch.tensor([c for c, _ in items], device=device)  # (B, Tp)
    cache, mask = prefix.start(len(items), torch.ones_like(ctx))
    out = model(input_ids=ctx, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1]  # (B, V): predicts each option's first token
    opts = [o for _, os in items for o in os]  # B * n options, question-major
    scores = [_log_probs(first[i // n : i // n + 1], [o[0]]) for i, o in enumerate(opts)]
    if max(len(o) for o in opts) > 1:
        cache = out.cache
        cache.batch_repeat_interleave(n)
        ids, omask = _right_pad([o[:-1] or [pad_id] for o in opts], pad_id, device)
        omask[[i for i, o in enumerate(opts) if len(o) == 1], 0] = 0
        mask = torch.cat([mask.repeat_interleave(n, dim=0), omask], dim=1)
        logits = model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True).logits
        for i, o in enumerate(opts):
            if len(o) > 1:
                scores[i] += _log_probs(logits[i, : len(o) - 1], o[1:])
    return [scores[b * n : (b + 1) * n] for b in range(len(items))]


def _work_units(encoded, batch_size: int) -> list[tuple[str, list[int]]]:
    """Batches of question indices: single-token questions by prompt length (less padding); multi-token ones grouped
    by (prompt length, option count) with at most ``batch_size`` option rows per batch."""
    single = sorted((i for i, (_, os) in enumerate(encoded) if all(len(o) == 1 for o in os)),
                    key=lambda i: -len(encoded[i][0]))
    units = [("single", single[s : s + batch_size]) for s in range(0, len(single), batch_size)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (ctx, os) in enumerate(encoded):
        if any(len(o) > 1 for o in os):
            groups.setdefault((len(ctx), len(os)), []).append(i)
    for (_, n), idx in sorted(groups.items()):
        step = max(1, batch_size // n)
        units += [("multi", idx[s : s + step]) for s in range(0, len(idx), step)]
    return units


def option_logprobs(model: torch.nn.Module, tokenizer, questions: list[Question], *, batch_size: int = 32,
                    add_special_tokens: bool = True, share_prefix: bool = True, progress: ProgressFn | None = None,
                    cancel: threading.Event | None = None) -> list[list[tuple[float, int]]]:
    """For each question and option: (summed log-probability of the option's tokens given the prompt, token count).
    Equal to scoring each prompt + option alone; ``batch_size`` counts sequences per forward pass. ``share_prefix``
    runs the tokens that all prompts start with once (8 tokens or more) and reuses their KV cache."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = [encode_question(tokenizer, q, add_special_tokens=add_special_tokens) for q in questions]
    pad, out, done = pad_id_of(tokenizer), [None] * len(questions), 0
    shared = _common_prefix([ctx for ctx, _ in encoded]) if share_prefix else 0
    prefix = _SharedPrefix(model, encoded[0][0][:shared])
    encoded = [(ctx[shared:], opts) for ctx, opts in encoded]
    for kind, idx in _work_units(encoded, batch_size):
        check_cancel(cancel)
        if kind == "single":
            items = [(encoded[i][0], [o[0] for o in encoded[i][1]]) for i in idx]
            scores = _score_single_token(model, items, pad, prefix)
        else:
            scores = _score_continuations(model, [encoded[i] for i in idx], pad, prefix)
        for i, s in zip(idx, scores, strict=True):
            out[i] = [(v, len(o)) for v, o in zip(s, encoded[i][1], strict=True)]
        done += len(idx)
        report(progress, "scoring options", done, len(questions))
    return out


def score_questions(model: torch.nn.Module, tokenizer, questions: list[Question], *, normalize: str = "sum",
                    batch_size: int = 32, add_special_tokens: bool = True, progress: ProgressFn | None = None,
                    cancel: threading.Event | None = None) -> dict:
    """Accuracy of picking the most likely option. ``normalize``: "sum" (total log-probability of the option) or
    "mean" (per token). Returns accuracy (micro), subject_accuracy (macro over subjects), n, chance, per_subject,
    predictions and correct."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    if not questions:
        raise ValueError("no questions to score")
    lps = option_logprobs(model, tokenizer, questions, batch_size=batch_size, add_special_tokens=add_special_tokens,
                          progress=progress, cancel=cancel)
    preds = []
    for scores in lps:
        values = [s if normalize == "sum" else s / n for s, n in scores]
        preds.append(max(range(len(values)), key=values.__getitem__))
    correct = [p == q.answer for p, q in zip(preds, questions, strict=True)]
    subjects: dict[str, list[bool]] = {}
    for q, c in zip(questions, correct, strict=True):
        subjects.setdefault(q.subject, []).append(c)
    per_subject = {s: sum(v) / len(v) for s, v in subjects.items()}
    return {"accuracy": sum(correct) / len(correct), "subject_accuracy": sum(per_subject.values()) / len(per_subject),
            "n": len(questions), "chance": sum(1 / len(q.options) for q in questions) / len(questions),
            "per_subject": per_subject, "predictions": preds, "correct": correct}


# --------------------------------------------------------------------------------------------------------------
# Question sets: MMLU, BoolQ and a local JSONL format, loaded with the `datasets` library


def load_split(path: str, split: str, config: str | None = None):
    """One split of a dataset: a folder written by ``save_to_disk``, a local .jsonl/.json/.parquet/.csv file (its
    only split), or anything ``datasets.load_dataset(path, config, split=...)`` accepts (a hub id, a data folder)."""
    import datasets

    p = Path(path).expanduser()
    if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{path} has no split {split!r}; it has: {', '.join(ds)}")
            return ds[split]
        return ds
    builders = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
    if p.is_file():
        if p.suffix not in builders:
            raise ValueError(f"unsupported file type {p.suffix!r}; allowed: {', '.join(builders)}")
        return datasets.load_dataset(builders[p.suffix], data_files=str(p), split="train")
    return datasets.load_dataset(path, config, split=split)


def format_mmlu(question: str, choices: list[str], subject: str = "", answer: int | None = None) -> str:
    """The standard MMLU layout (Hendrycks et al.): question, lettered choices, "Answer:" (+ letter for shots)."""
    lines = [question.strip()] + [f"{letter}. {c}" for letter, c in zip(MMLU_LETTERS, choices, strict=False)]
    tail = "Answer:" if answer is None else f"Answer: {MMLU_LETTERS[answer]}\n\n"
    return "\n".join(lines) + "\n" + tail


def mmlu_questions(path: str = "cais/mmlu", *, subjects: list[str] | None = None, shots: int = 5,
                   split: str = "test", max_per_subject: int | None = None) -> list[Question]:
    """MMLU questions (columns question, subject, choices, answer), ``shots`` examples per subject taken from the
    dev split, scored by the next-token probability of " A".." D". Average over subjects with subject_accuracy."""
    if not 0 <= shots <= 5:
        raise ValueError(f"shots must be between 0 and 5 (the dev split has 5 per subject), got {shots}")
    test = load_split(path, split, "all")
    dev = load_split(path, "dev", "all") if shots else []
    shot_text: dict[str, str] = {}
    for ex in dev:
        if shot_text.get(ex["subject"], "").count("Answer:") < shots:
            shot_text[ex["subject"]] = shot_text.get(ex["subject"], "") + format_mmlu(
                ex["question"], ex["choices"], answer=ex["answer"])
    wanted = set(subjects) if subjects else None
    counts: dict[str, int] = {}
    out = []
    for ex in test:
        subj = ex["subject"]
        if (wanted and subj not in wanted) or counts.get(subj, 0) >= (max_per_subject or float("inf")):
            continue
        counts[subj] = counts.get(subj, 0) + 1
        header = f"The following are multiple choice questions (with answers) about {subj.replace('_', ' ')}.\n\n"
        prompt = header + shot_text.get(subj, "") + format_mmlu(ex["question"], ex["choices"])
        out.append(Question(prompt, tuple(" " + x for x in MMLU_LETTERS[: len(ex["choices"])]), ex["answer"], subj))
    if wanted and wanted - set(counts):
        raise ValueError(f"subjects not found in {path}: {', '.join(sorted(wanted - set(counts)))}")
    return out


def boolq_questions(path: str = "google/boolq", *, split: str = "validation", limit: int | None = None
                    ) -> list[Question]:
    """BoolQ (columns passage, question, answer: bool), 0-shot, scored by the next-token probability of " no"/" yes"."""
    out = []
    for ex in load_split(path, split):
        q = ex["question"].strip().rstrip("?")
        prompt = f"{ex['passage'].strip()}\nQuestion: {q[:1].upper() + q[1:]}?\nAnswer:"
        out.append(Question(prompt, (" no", " yes"), int(bool(ex["answer"])), "boolq"))
        if limit and len(out) >= limit:
            break
    return out


def _answer_index(answer, choices: list[str]) -> int:
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise ValueError(f"answer must be an index, a letter or the text of a choice, got {answer!r}")
    if isinstance(answer, int):
        idx = answer
    elif len(answer) == 1 and answer.upper() in MMLU_LETTERS[: len(choices)] and answer not in choices:
        idx = MMLU_LETTERS.index(answer.upper())
    elif answer in choices:
        idx = choices.index(answer)
    else:
        raise ValueError(f"answer {answer!r} is neither an index, a letter nor one of the choices {choices}")
    if not 0 <= idx < len(choices):
        raise ValueError(f"answer index {idx} out of range for {len(choices)} choices")
    return idx


def jsonl_questions(path: str, *, method: str = "letter", limit: int | None = None) -> list[Question]:
    """Questions from a local file with fields question, choices (2 to 4) and answer (index, letter or choice text).
    ``method``: "letter" (MMLU layout, scored by the letter) or "text" (scored by each choice's text)."""
    if method not in ("letter", "text"):
        raise ValueError(f"method must be 'letter' or 'text', got {method!r}")
    out = []
    for ex in load_split(path, "train"):
        missing = {"question", "choices", "answer"} - set(ex)
        if missing:
            raise ValueError(f"{path}: each record needs question, choices and answer; missing {sorted(missing)}")
        choices = list(ex["choices"])
        if not 2 <= len(choices) <= len(MMLU_LETTERS):
            raise ValueError(f"{path}: between 2 and 4 choices per question, got {len(choices)}")
        answer = _answer_index(ex["answer"], choices)
        if method == "letter":
            out.append(Question(format_mmlu(ex["question"], choices),
                                tuple(" " + x for x in MMLU_LETTERS[: len(choices)]), answer, ex.get("subject", "")))
        else:
            out.append(Question(ex["question"].strip(), tuple(" " + c for c in choices), answer, ex.get("subject", "")))
        if limit and len(out) >= limit:
            break
    return out


QUESTION_SETS = ("mmlu", "boolq")


def question_set(spec: str, *, limit: int | None = None, shots: int = 5) -> list[Question]:
    """Questions named by ``spec``: "mmlu" or "boolq" (their hub datasets), "mmlu:PATH" or "boolq:PATH" (a local copy
    with the hub's columns), or a local .jsonl/.json/.parquet/.csv file of (question, choices, answer)."""
    name, _, path = spec.partition(":")
    if name == "mmlu":
        return mmlu_questions(path or "cais/mmlu", shots=shots, max_per_subject=limit)
    if name == "boolq":
        return boolq_questions(path or "google/boolq", limit=limit)
    if Path(spec).expanduser().is_file():
        return jsonl_questions(spec, limit=limit)
    raise ValueError(f"unknown question set {spec!r}: use {', '.join(QUESTION_SETS)}, NAME:PATH or a local file")


def run_lm_eval(model: torch.nn.Module, tokenizer, tasks: list[str], *, include_path: str | None = None,
                limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 8) -> dict:
    """Run lm-evaluation-harness tasks on an in-memory model (optional extra: ``pip install lm-eval==0.4.13``).
    ``include_path`` adds a folder of task YAML files. Returns lm-eval's per-task ``results`` dict."""
    try:
        from lm_eval.evaluator import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ValueError(f"lm-eval is not installed ({err}): pip install 'lm-eval==0.4.13'") from err
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results = simple_evaluate(model=lm, tasks=list(tasks), task_manager=TaskManager(include_path=include_path),
                              limit=limit, num_fewshot=num_fewshot)
    return results["results"]
