"""An offline knowledge probe: "The capital of <country> is" with four capitals as options.

Built from the ``countryinfo`` package (250 countries and territories with a capital). For each country the true
capital and three capitals of other countries, drawn with a seeded generator, are shuffled into four options; the
model picks the option with the highest summed log-probability as a continuation of the prompt (capitals can be
several tokens: " Buenos Aires"). Chance is 25%. The probe measures the factual recall that the paper's
question-answering results track, in about a minute on a CPU and without downloading a benchmark.

Template: with ``"auto"`` (the default) a tokenizer that has a chat template gets the question as a user turn,
"What is the capital of <country>?", and the options are scored as the start of the assistant's reply, "The capital
of <country> is <option>"; nothing in the prompt hints at the answer. On SmolLM2-135M-Instruct, all 250 countries:
chat + sum 0.868, chat + per-token mean 0.848, plain completion + sum 0.776, plain + mean 0.808. Summed
log-probability is the default: it is the probability of the whole answer, which per-token averaging is not.
"""

from __future__ import annotations

import random
import threading
from functools import lru_cache

import torch

from prune_core.evaluate import Question, score_questions
from prune_core.progress import ProgressFn

TEMPLATES = ("plain", "chat", "auto")
USER_QUESTION = "What is the capital of {country}?"
COMPLETION = "The capital of {country} is"


@lru_cache(maxsize=1)
def capital_pairs() -> tuple[tuple[str, str], ...]:
    """(country, capital) for every country in ``countryinfo`` that has one, sorted by country name."""
    from countryinfo import all_countries

    pairs = {}
    for c in all_countries():
        capital = c.capital() or ""
        if isinstance(capital, list):  # e.g. ['Vatican City']
            capital = capital[0] if capital else ""
        capital = capital.strip()
        if capital:
            pairs[c.name().strip()] = capital
    return tuple(sorted(pairs.items()))


def _chat_prefix(tokenizer, country: str) -> str:
    """The chat-formatted user question followed by the start of the assistant's answer."""
    messages = [{"role": "user", "content": USER_QUESTION.format(country=country)}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def resolve_template(template: str, tokenizer) -> str:
    """"auto" means "chat" when the tokenizer has a chat template, else "plain"."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'chat' needs a tokenizer with a chat template; use 'plain'")
    return template


def probe_questions(*, seed: int = 0, n_options: int = 4, limit: int | None = None, template: str = "plain",
                    tokenizer=None) -> list[Question]:
    """The probe's questions, identical for a given seed: true capital plus ``n_options - 1`` distinct other
    capitals, shuffled. ``template`` "chat" wraps the question in the tokenizer's chat template."""
    if not 2 <= n_options <= 10:
        raise ValueError(f"n_options must be between 2 and 10, got {n_options}")
    if template == "chat" and tokenizer is None:
        raise ValueError("template 'chat' needs the tokenizer")
    pairs = capital_pairs()
    capitals = sorted({cap for _, cap in pairs})
    rng = random.Random(seed)
    out = []
    for country, capital in pairs[:limit] if limit else pairs:
        others = rng.sample([c for c in capitals if c != capital], n_options - 1)
        options = [capital, *others]
        rng.shuffle(options)
        prompt = COMPLETION.format(country=country)
        if template == "chat":
            prompt = _chat_prefix(tokenizer, country) + prompt
        out.append(Question(prompt, tuple(" " + o for o in options), options.index(capital), country))
    return out


def capital_probe(model: torch.nn.Module, tokenizer, *, seed: int = 0, template: str = "auto",
                  normalize: str = "sum", limit: int | None = None, batch_size: int = 64,
                  progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> dict:
    """Accuracy on the capital-city probe. Returns accuracy, n, chance, template, normalize and the per-question
    ``correct`` list (in :func:`capital_pairs` order)."""
    template = resolve_template(template, tokenizer)
    questions = probe_questions(seed=seed, limit=limit, template=template, tokenizer=tokenizer)
    result = score_questions(model, tokenizer, questions, normalize=normalize, batch_size=batch_size,
                             add_special_tokens=template == "plain", progress=progress, cancel=cancel)
    return {"accuracy": result["accuracy"], "n": result["n"], "chance": result["chance"], "template": template,
            "normalize": normalize, "correct": result["correct"]}
