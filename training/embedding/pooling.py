"""Which hidden state embeds a text: the last real token's, or a given closing special token's.

Stage 2 embeds a text by the last layer's hidden state at its last token (the closing special
token of its last slice); stage 3 embeds a scene value by the hidden state at that feature's
closing token. Tokenizers pad on the left or on the right depending on the model and on whether
they were set up for generation, so nothing here assumes a padding side: the last real token is
found per row from the attention mask.
"""

from __future__ import annotations

import torch
from torch import Tensor


def hidden_at(hidden: Tensor, positions: Tensor) -> Tensor:
    """Row i of the result is hidden[i, positions[i]]: (batch, seq, width), (batch,) -> (batch, width)."""
    if hidden.ndim != 3 or positions.shape != hidden.shape[:1]:
        raise ValueError(
            f"hidden must be (batch, seq, width) and positions (batch,), "
            f"got {tuple(hidden.shape)} and {tuple(positions.shape)}"
        )
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, positions.to(hidden.device)]


def last_token_positions(attention_mask: Tensor) -> Tensor:
    """(batch, seq) mask of 1 = real token -> (batch,) index of each row's last real token.

    Correct under left padding, right padding, or any mix of rows; a row with no real token is
    an error.
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, seq), got {tuple(attention_mask.shape)}")
    real = attention_mask != 0
    empty = (~real.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no real token (all padding): empty texts cannot be embedded")
    index = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return torch.where(real, index, -1).amax(dim=1)  # (batch,) last index whose mask is set


def last_token_hidden(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """The hidden state at each row's last non-padding token: (batch, seq, width) -> (batch, width)."""
    return hidden_at(hidden, last_token_positions(attention_mask))


def closing_token_positions(
    input_ids: Tensor, token_id: int, token: str | None = None, attention_mask: Tensor | None = None
) -> Tensor:
    """(batch, seq) token ids -> (batch,) position of the last occurrence of `token_id` per row.

    `token` (the token's text, e.g. `</scene_weather>`) only names it in the error raised when a
    row lacks it; positions where `attention_mask` is 0 are not counted.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, seq), got {tuple(input_ids.shape)}")
    found = input_ids == token_id
    if attention_mask is not None:
        found &= attention_mask != 0
    missing = (~found.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        name = f"{token!r} (id {token_id})" if token is not None else f"id {token_id}"
        raise ValueError(f"rows {missing} lack the closing token {name}; was the text truncated?")
    index = torch.arange(input_ids.shape[1], device=input_ids.device)
    return torch.where(found, index, -1).amax(dim=1)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids that count real tokens only (0 at each row's first real token, padding at 0).

    Passed to the model, they give a left-padded row the same positions as the unpadded text.
    """
    real = (attention_mask != 0).long()
    return (real.cumsum(dim=1) - 1).clamp(min=0)
