"""Token-id sequences for causal LMs: middle truncation and right padding with loss labels.

Shared by the trainers (stage 1 masks the input, stage 2 pools the last token), so a text longer
than the maximum length is cut the same way everywhere: the MIDDLE goes, the head and the tail
stay, so the opening slices and the closing special token that the encoders read survive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE = -100  # label of a position that takes no loss (input tokens, padding)


@dataclass
class TextCounts:
    """What happened to the texts a process fed its model (reported in the run's summary)."""

    texts: int = 0
    truncated: int = 0  # longer than the maximum length: the middle was cut
    without_closing_token: int = 0  # the last token is no closing special token of the registry


def truncate_middle(ids: Sequence[int], max_tokens: int) -> list[int]:
    """`ids` itself when it fits, else its first ceil(n/2) and last floor(n/2) ids, n = max_tokens."""
    ids = list(ids)
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    if len(ids) <= max_tokens:
        return ids
    head = (max_tokens + 1) // 2
    tail = max_tokens - head
    return ids[:head] + (ids[len(ids) - tail :] if tail else [])


def pad_right(sequences: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(input ids, labels) pairs -> `input_ids`, `attention_mask`, `labels` (batch, longest) tensors,
    padded on the right: pad id, mask 0 and label -100 on padding."""
    if not sequences:
        raise ValueError("no sequences to pad")
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    for row, (ids, row_labels) in enumerate(sequences):
        if len(ids) != len(row_labels):
            raise ValueError(f"row {row}: {len(ids)} ids but {len(row_labels)} labels")
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.tensor(row_labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
