"""Symmetric InfoNCE with in-batch negatives: stage 2's pair losses and the CTR alignment loss.

The math lives once in the tensor-only function `info_nce`; `InfoNCELoss` only holds its settings
(the style of sentence-transformers' MultipleNegativesRankingLoss). In distributed runs the
candidates are gathered from every rank (`gather_with_grad`), so each row's negatives are the
whole global batch, not only the rank's share of it.
"""

from __future__ import annotations

import math

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
    a_index: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE over a batch of positive pairs (a_i, b_i); the mean of a->b and b->a.

    s(x, y) = cos(x, y) / temperature. For a->b, row i of `a` is scored against every `b` row (and
    every `extra_negatives` row), the positive being b_i; b->a scores b_i against every `a` row.
    Each direction is a cross-entropy averaged over rows; the loss is the mean of the two.

    Args:
        a: (n, d) anchors; with `a_index`, (k, d) distinct anchors.
        b: (n, d) positives, b_i paired with a_i; the other rows are in-batch negatives.
        temperature: tau > 0 dividing the cosine similarities.
        extra_negatives: optional (m, d) more candidates for the a->b direction only.
        gather: take candidates from every rank (`gather_with_grad`); each rank then returns the
            loss of its own rows, whose mean over ranks equals the single-process loss on the
            concatenated batch. A no-op without a process group.
        a_index: optional (n,) rows of `a`: pair i is (a[a_index[i]], b_i). The loss equals
            `info_nce(a[a_index], b, ...)`, but on one process the similarity matrix has one row
            per distinct anchor (the CTR batch's samples share scenes).

    Returns:
        A scalar tensor.
    """
    pairs = len(a) if a_index is None else len(a_index)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(b) != pairs:
        raise ValueError(
            f"info_nce needs a and b of the same shape (n, d), got {tuple(a.shape)} and {tuple(b.shape)}"
            + ("" if a_index is None else f" with a_index of {len(a_index)} pairs")
        )
    if a_index is not None and len(a_index) and (a_index.min() < 0 or a_index.max() >= len(a)):
        raise ValueError(f"a_index must hold rows of a (0..{len(a) - 1})")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if extra_negatives is not None and (extra_negatives.ndim != 2 or extra_negatives.shape[1] != a.shape[1]):
        raise ValueError(f"extra_negatives must be (m, {a.shape[1]}), got {tuple(extra_negatives.shape)}")
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    extra = None if extra_negatives is None else F.normalize(extra_negatives, dim=-1)
    if (not gather or distributed_world()[1] == 1) and _bounded_exp_is_safe(temperature, a.dtype):
        if a_index is None:
            a_index = torch.arange(len(a), device=a.device)
        candidates = b if extra is None else torch.cat([b, extra], dim=0)
        counts = torch.bincount(a_index, minlength=len(a)).to(a.dtype)
        positives = (a[a_index] * b).sum(dim=1)  # cos(a_i, b_i)
        # -log softmax of the positive = log(sum of exp((cos - 1) / tau)) - (cos_ii - 1) / tau
        partitions = _LogPartitions.apply(a, candidates, counts, len(b), temperature)
        return partitions - (positives - 1).mean() / temperature
    if a_index is not None:
        a = a[a_index]
    a_candidates, b_candidates, offset = a, b, 0
    if gather:
        rank, _ = distributed_world()
        a_candidates, b_candidates, offset = gather_with_grad(a), gather_with_grad(b), rank * a.shape[0]
    if extra is not None:
        b_candidates = torch.cat([b_candidates, gather_with_grad(extra) if gather else extra], dim=0)
    labels = torch.arange(a.shape[0], device=a.device) + offset
    logits_ab = (a / temperature) @ b_candidates.T  # (n, world * n + world * m)
    # one process: b->a is the transpose of a->b's in-batch block (one matmul less)
    in_batch = a_candidates is a
    logits_ba = logits_ab[:, : a.shape[0]].T if in_batch else (b / temperature) @ a_candidates.T
    return (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels)) / 2


def _bounded_exp_is_safe(temperature: float, dtype: torch.dtype) -> bool:
    """exp((cos - 1) / tau) >= exp(-2 / tau) stays a normal number of `dtype` (float32: tau >= 0.025)."""
    compute = torch.promote_types(dtype, torch.float32)
    return 2 / temperature < -math.log(torch.finfo(compute).tiny) - 7


class _LogPartitions(torch.autograd.Function):
    """The log-sum-exp half of single-process `info_nce`, from one exp over the similarity matrix.

    Inputs: k distinct unit anchors, the unit candidates (the n in-batch positives first, then the
    extra negatives), each anchor's count among the pairs, and n. With W = exp((cos - 1) / tau),
    which cosines bound by 1 (no overflow, no per-row max needed), the result is
    (sum_k count_k log(sum_j W_kj) + sum_{j < n} log(sum_k count_k W_kj)) / (2 n):
    the a->b denominators are row sums, the b->a ones column sums of the same matrix. Its gradient
    in cos is count_k W_kj (1 / row_k + [j < n] / column_j) / (2 n tau). Two cross_entropy calls
    would materialise two log-softmax matrices and their gradients: ~3x slower at the CTR batch.
    """

    @staticmethod
    def forward(
        ctx, anchors: Tensor, candidates: Tensor, counts: Tensor, pairs: int, temperature: float
    ) -> Tensor:
        in_dtype, compute = anchors.dtype, torch.promote_types(anchors.dtype, torch.float32)
        with torch.autocast(anchors.device.type, enabled=False):  # bf16 would round the sums
            anchors, candidates, counts = (t.to(compute) for t in (anchors, candidates, counts))
            weights = (anchors @ candidates.T).sub_(1).mul_(1 / temperature).exp_()  # (k, n + m)
            row_sums = weights.sum(dim=1)
            column_sums = counts @ weights[:, :pairs]
            result = (counts @ row_sums.log() + column_sums.log().sum()) / (2 * pairs)
        ctx.save_for_backward(anchors, candidates, counts, weights, row_sums, column_sums)
        ctx.temperature, ctx.pairs, ctx.in_dtype = temperature, pairs, in_dtype
        return result.to(in_dtype)

    @staticmethod
    def backward(ctx, grad_result: Tensor) -> tuple[Tensor, Tensor, None, None, None]:
        anchors, candidates, counts, weights, row_sums, column_sums = ctx.saved_tensors
        pairs = ctx.pairs
        grad_cos = weights / row_sums.unsqueeze(1)
        grad_cos[:, :pairs].addcmul_(weights[:, :pairs], column_sums.reciprocal().unsqueeze(0))
        grad_cos.mul_((counts * (grad_result.to(weights.dtype) / (2 * pairs * ctx.temperature))).unsqueeze(1))
        grad_anchors, grad_candidates = grad_cos @ candidates, grad_cos.T @ anchors
        return grad_anchors.to(ctx.in_dtype), grad_candidates.to(ctx.in_dtype), None, None, None


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
