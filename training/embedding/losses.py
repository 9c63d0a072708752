"""Symmetric InfoNCE with in-batch negatives: stage 2's pair losses and the CTR alignment loss.

The math lives once in the tensor-only function `info_nce`; `InfoNCELoss` only holds its settings
(the style of sentence-transformers' MultipleNegativesRankingLoss). In distributed runs the
candidates are gathered from every rank (`gather_with_grad`), so each row's negatives are the
whole global batch, not only the rank's share of it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate `t` from every rank along dim 0, in rank order; identity without a process group.

    The gather is differentiable (`torch.distributed.nn.functional.all_gather`): this rank's slice
    of the result is `t` itself, and in backward each rank's `t` receives the sum of the gradients
    that every rank's loss sends to it. With DDP averaging parameter gradients over ranks, the
    update then equals the single-process update on the concatenated batch. Every rank must pass
    a tensor of the same shape (drop the last partial batch in distributed runs).
    """
    rank, world = distributed_world()
    if world == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], dtype=torch.long, device=t.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"gather_with_grad needs the same batch size on every rank, got {[int(s) for s in sizes]} "
            "(drop the last partial batch in distributed runs)"
        )
    parts = list(all_gather(t.contiguous()))
    parts[rank] = t  # the local slice keeps its own autograd graph unchanged
    return torch.cat(parts, dim=0)


def info_nce(
    a: Tensor,
    b: Tensor,
    temperature: float,
    extra_negatives: Tensor | None = None,
    *,
    gather: bool = False,
) -> Tensor:
    """Symmetric InfoNCE over a batch of positive pairs (a_i, b_i); the mean of a->b and b->a.

    s(x, y) = cos(x, y) / temperature. For a->b, row i of `a` is scored against every `b` row (and
    every `extra_negatives` row), the positive being b_i; b->a scores b_i against every `a` row.
    Each direction is a cross-entropy averaged over rows; the loss is the mean of the two.

    Args:
        a: (n, d) anchors.
        b: (n, d) positives, b_i paired with a_i; the other rows are in-batch negatives.
        temperature: tau > 0 dividing the cosine similarities.
        extra_negatives: optional (m, d) more candidates for the a->b direction only.
        gather: take candidates from every rank (`gather_with_grad`); each rank then returns the
            loss of its own rows, whose mean over ranks equals the single-process loss on the
            concatenated batch. A no-op without a process group.

    Returns:
        A scalar tensor.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"info_nce needs a and b of the same shape (n, d), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    a_candidates, b_candidates, offset = a, b, 0
    if gather:
        rank, _ = distributed_world()
        a_candidates, b_candidates, offset = gather_with_grad(a), gather_with_grad(b), rank * a.shape[0]
    if extra_negatives is not None:
        if extra_negatives.ndim != 2 or extra_negatives.shape[1] != a.shape[1]:
            raise ValueError(f"extra_negatives must be (m, {a.shape[1]}), got {tuple(extra_negatives.shape)}")
        extra = F.normalize(extra_negatives, dim=-1)
        b_candidates = torch.cat([b_candidates, gather_with_grad(extra) if gather else extra], dim=0)
    labels = torch.arange(a.shape[0], device=a.device) + offset
    logits_ab = (a / temperature) @ b_candidates.T  # (n, world * n + world * m)
    # one process: b->a is the transpose of a->b's in-batch block (one matmul less)
    in_batch = a_candidates is a
    logits_ba = logits_ab[:, : a.shape[0]].T if in_batch else (b / temperature) @ a_candidates.T
    return (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels)) / 2


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE with in-batch negatives (MultipleNegativesRankingLoss, both directions).

    Objective: for positive pairs (a_i, b_i), make cos(a_i, b_i) / tau the largest score in row i
    of the a->b similarity matrix and in row i of the b->a matrix; every other row of the batch
    (on all ranks when `gather_across_ranks`) is a negative. Stage 2 uses it per pair type on the
    projected embeddings; the CTR model uses it (tau = 0.1) to align scene and recommender vectors.

    Args:
        temperature: tau dividing the cosine similarities (0.05 is the sentence-transformers
            default scale of 20; the CTR alignment uses 0.1).
        gather_across_ranks: in distributed runs, score against the candidates of every rank.

    Example:
        >>> import torch
        >>> loss_fn = InfoNCELoss(temperature=0.1)
        >>> a = torch.randn(8, 128, requires_grad=True)
        >>> b = torch.randn(8, 128)
        >>> loss = loss_fn(a, b)
        >>> loss.backward()
        >>> loss.ndim, a.grad.shape
        (0, torch.Size([8, 128]))
    """

    def __init__(self, temperature: float = 0.05, gather_across_ranks: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_across_ranks = gather_across_ranks

    def forward(self, a: Tensor, b: Tensor, extra_negatives: Tensor | None = None) -> Tensor:
        return info_nce(a, b, self.temperature, extra_negatives, gather=self.gather_across_ranks)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_across_ranks={self.gather_across_ranks}"
