"""Stage 2's text encoder: an LLM backbone and a linear projection to a 128-d cosine embedding.

A text is tokenized without bos/eos (it already ends with the closing special token of its last
slice), cut in the MIDDLE when longer than `max_length` (`training/common/text.truncate_middle`:
the closing token survives), run through the backbone's transformer (no LM head), and embedded by
the last layer's hidden state at the last real token (`pooling.last_token_hidden`, found from the
attention mask), projected and L2-normalised.

Position ids are computed from the attention mask, so a left-padded and a right-padded batch give
the same embeddings (Llama-style models do not derive positions from the mask themselves).

    >>> from training.lm.tiny import tiny_llama, tiny_tokenizer
    >>> tokenizer = tiny_tokenizer()
    >>> encoder = TextEncoder(tiny_llama(tokenizer), dim=8, seed=0)
    >>> encode_texts(encoder, tokenizer, ["a shop", "hot pot on a rainy evening"], batch_size=2).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from etl.tokens import closing_tokens
from training.common.text import TextCounts, truncate_middle
from training.embedding.pooling import last_token_hidden, position_ids_from_mask

EMBEDDING_DIM = 128
POOLING = "last_token"


class TextEncoder(nn.Module):
    """`backbone` (a Hugging Face causal LM) + `nn.Linear(hidden, dim)`; `forward` returns unit vectors.

    `seed` initialises the projection reproducibly (the base model the fine-tuned one is compared
    with has the same projection as the fine-tuned one had before training).
    """

    def __init__(self, backbone: nn.Module, dim: int = EMBEDDING_DIM, seed: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        if seed is None:
            self.projection = nn.Linear(hidden, dim)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.projection = nn.Linear(hidden, dim)
        self.projection.to(dtype=next(backbone.parameters()).dtype)

    @property
    def dim(self) -> int:
        return self.projection.out_features

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(batch, seq) ids and mask (any padding side) -> (batch, dim) L2-normalised embeddings."""
        out = self.backbone.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        )
        pooled = last_token_hidden(out.last_hidden_state, attention_mask)
        return F.normalize(self.projection(pooled.to(self.projection.weight.dtype)).float(), dim=-1)


def closing_token_ids(tokenizer) -> frozenset[int]:
    """Ids of the slices' closing tokens the tokenizer was given (every slice of the dataset it was
    trained on: the tokens it holds in open / close pairs)."""
    added = tokenizer.get_added_vocab()
    return frozenset(int(added[token]) for token in closing_tokens(added))


def tokenize_texts(
    tokenizer, texts: Sequence[str], max_length: int, counts: TextCounts | None = None
) -> list[list[int]]:
    """Token ids of each text (no bos/eos added), middle-truncated to `max_length`.

    An empty text is an error (there is no token to embed). `counts`, when given, adds the texts,
    how many were truncated and how many do not end with a closing special token (their embedding
    then reads whatever token is last: the data or the tokenizer is not what stage 2 expects).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids = tokenizer([str(t) for t in texts], add_special_tokens=False)["input_ids"]
    for i, row in enumerate(ids):
        if not row:
            raise ValueError(f"text {i} is empty: nothing to embed")
    if counts is not None:
        closing = closing_token_ids(tokenizer)
        counts.texts += len(ids)
        counts.truncated += sum(len(row) > max_length for row in ids)
        counts.without_closing_token += sum(row[-1] not in closing for row in ids)
    return [truncate_middle(row, max_length) for row in ids]


def pad(ids: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> dict[str, Tensor]:
    """Id lists -> `input_ids` and `attention_mask` (batch, longest), padded on `side`."""
    if not ids:
        raise ValueError("no sequences to pad")
    if side not in ("left", "right"):
        raise ValueError(f"side must be left or right, got {side!r}")
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        input_ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[i, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def pad_id(tokenizer) -> int:
    """The id padding uses (its value never matters: the attention mask hides it)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


@torch.no_grad()
def encode_texts(
    encoder: TextEncoder,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 32,
    max_length: int = 512,
    device: torch.device | str | None = None,
) -> Tensor:
    """(len(texts), dim) float32 embeddings on the CPU, in the order of `texts`.

    Eval mode, no gradients; texts are batched by token length (little padding) and the encoder's
    training mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        return torch.zeros((0, encoder.dim))
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    ids = tokenize_texts(tokenizer, texts, max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.zeros((len(ids), encoder.dim))
    was_training = encoder.training
    encoder.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = pad([ids[i] for i in rows], pad_id(tokenizer))
            out[rows] = encoder(**{k: v.to(device) for k, v in batch.items()}).float().cpu()
    finally:
        encoder.train(was_training)
    return out
