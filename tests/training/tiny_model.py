"""A tiny tokenizer and a tiny randomly initialised Llama, built in memory (no downloads)."""

from __future__ import annotations

WORDS = [
    "aunt",
    "li",
    "claypot",
    "rice",
    "cold",
    "noodles",
    "hot",
    "pot",
    "guangzhou",
    "tianhe",
    "sour",
    "spicy",
    "fish",
    "shop",
]


def tiny_tokenizer(extra_special_tokens: list[str] = ()):
    """A whitespace word-level tokenizer over WORDS with <pad>, <unk>, </s> and the given tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return tokenizer


def tiny_llama(vocab_size: int, pad_token_id: int = 0, seed: int = 0):
    """LlamaForCausalLM with hidden 32, 2 layers, 2 heads, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=pad_token_id,
    )
    return LlamaForCausalLM(config).eval()
