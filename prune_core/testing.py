"""Tiny random models and a byte-level tokenizer, built from configs: used by the tests, the benchmarks and the
app's test mode (model source ``tiny:<model_type>``). Nothing here downloads anything."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

# Hidden size 32, a few heads, small feed-forward: enough to exercise every code path in milliseconds.
_COMMON = dict(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=PAD_ID,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    tie_word_embeddings=False,
)

# Per-family differences from _COMMON (config key names differ for the older families).
_OVERRIDES: dict[str, dict] = {
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
        decoder_sparse_step=2, mlp_only_layers=[0],
    ),
    "qwen2": dict(use_sliding_window=True, sliding_window=16, max_window_layers=2),
    "gemma": dict(head_dim=8),
    "gemma2": dict(head_dim=8, sliding_window=16),
    "gemma3_text": dict(head_dim=8, sliding_window=16, sliding_window_pattern=2),
    "phi": dict(num_key_value_heads=4, partial_rotary_factor=0.5),
    "gpt2": dict(n_embd=32, n_head=4, n_inner=64, n_positions=256),
    "gpt_neox": dict(num_key_value_heads=None, rotary_pct=0.5),
    "opt": dict(ffn_dim=64, word_embed_proj_dim=32, enable_bias=True),
    "falcon": dict(new_decoder_architecture=True, num_kv_heads=2, alibi=False),
    "stablelm": dict(num_key_value_heads=4),
}

TINY_ARCHITECTURES = [
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
    "gpt2", "gpt_neox", "opt", "falcon", "olmo2", "granite", "stablelm", "starcoder2",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + 4 specials): deterministic, offline, round-trips any text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
    )


def tiny_config(model_type: str = "llama", num_layers: int = 6, **overrides):
    """The config of a tiny random ``model_type`` model with ``num_layers`` decoder blocks."""
    vocab_size = len(tiny_tokenizer())
    kwargs = {**_COMMON, "vocab_size": vocab_size, "num_hidden_layers": num_layers}
    kwargs.update(_OVERRIDES.get(model_type, {}))
    kwargs.update(overrides)
    if model_type == "gpt2":
        kwargs["n_layer"] = kwargs.pop("num_hidden_layers")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str = "llama", num_layers: int = 6, seed: int = 0, **overrides):
    """A tiny random causal LM of ``model_type`` in float32 eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, num_layers, **overrides))
    model.config.name_or_path = f"tiny:{model_type}"
    return model.float().eval()
