"""A tiny local tokenizer and a tiny randomly initialised Llama, for tests and benchmarks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on a few sentences
(any text encodes, no unknown tokens), the model is built from a `LlamaConfig`.

    >>> tokenizer = tiny_tokenizer()
    >>> model = tiny_llama(tokenizer)
    >>> model(**tokenizer(["a shop"], return_tensors="pt")).logits.shape[-1] == len(tokenizer)
    True
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS, EOS, UNK = "<s>", "</s>", "<unk>"

SAMPLE_TEXTS = (
    "Aunt Li's Claypot in Guangzhou, Tianhe sells claypot rice and roast goose.",
    "A cold noodle shop near the station, open late, cheap and quick.",
    "Hot pot on a rainy evening; iced tea on a hot afternoon.",
    "The user orders spicy noodles at lunch and milk tea after work.",
    "Rating 4.7, monthly sales 1200, price level medium.",
)


def tiny_tokenizer(texts: tuple[str, ...] = SAMPLE_TEXTS, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """Byte-level BPE with bos/eos/unk and no pad token (as many causal-LM tokenizers)."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, unk_token=UNK)


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A 2-layer Llama (hidden 32) sized to `tokenizer`; `overrides` are `LlamaConfig` fields."""
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,  # as SmolLM2
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    settings.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(**settings)).eval()
