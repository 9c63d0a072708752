"""Which words of a scene the stage-2 encoder reads: the attention of its pooled token over the text.

The encoder pools the hidden state at the text's last token, which `larr recall` makes the
closing token of the slice the scene is wrapped in (features/recall.py `query_text`). This reads
that token's attention weights over every token of the text in one layer (default the last),
averaged over heads: a row of the softmax, so the weights of a text sum to 1. The text is
tokenized as the encoder embeds it (no added BOS, middle truncation to `max_length` keeping the
closing token), and the encoder is the loaded model `resolve_encoder` returns (nothing from
training/ is imported).

Causal decoders put much of a late token's attention on the first token (an attention sink) and
on the slice tokens; `special` marks the tokenizer's special tokens so a plot can show the scene's
own words.

    >>> _, encoder = resolve_encoder("latest:contrastive", mlflow.get_tracking_uri())
    >>> scene_attention(encoder, "<user_env>a user visiting Chengdu on vacation</user_env>")
"""

from __future__ import annotations

import pandas as pd


def _truncate_middle(ids: list[int], max_tokens: int) -> list[int]:
    """As the encoder embeds (training/embedding/pyfunc.py): head and tail kept, middle cut."""
    if len(ids) <= max_tokens:
        return ids
    head = (max_tokens + 1) // 2
    return ids[:head] + ids[len(ids) - (max_tokens - head) :]


def scene_attention(encoder, text: str, layer: int = -1) -> pd.DataFrame:
    """position, token (its decoded text), weight, special: the attention of the text's last
    token over each of its tokens in `layer`, mean over heads.

    `encoder`: a loaded stage-2 encoder model (`resolve_encoder(uri)[1]`, or
    `mlflow.pyfunc.load_model(uri).unwrap_python_model()`) with `tokenizer`, `model` (the
    backbone's decoder stack) and `settings`. Its attention implementation is switched to eager
    for the call (fused kernels return no weights) and restored after.
    """
    import torch

    tokenizer, backbone = encoder.tokenizer, encoder.model
    ids = tokenizer([text], add_special_tokens=False)["input_ids"][0]
    if not ids:
        raise ValueError("empty text: no attention to read")
    ids = _truncate_middle(list(ids), int(encoder.settings["max_length"]))
    previous = backbone.config._attn_implementation
    backbone.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            device = next(backbone.parameters()).device
            out = backbone(input_ids=torch.tensor([ids], device=device), output_attentions=True)
    finally:
        backbone.set_attn_implementation(previous)
    attentions = out.attentions[layer]  # (1, heads, tokens, tokens)
    weights = attentions[0, :, -1, :].float().mean(dim=0).cpu().numpy()  # the last token's row
    special = set(tokenizer.all_special_ids)
    return pd.DataFrame(
        {
            "position": range(len(ids)),
            "token": [tokenizer.decode([i]) for i in ids],
            "weight": weights,
            "special": [i in special for i in ids],
        }
    )
