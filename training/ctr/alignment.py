"""LARR's alignment loss: symmetric InfoNCE between the aggregated scene vector s and the
recommender's t = concat(user embedding, POI embedding) of the same sample.

The math is stage 2's `info_nce` (training/embedding/losses.py), not a copy: cosine similarities
divided by the temperature, positives on the diagonal, the other samples of the batch as
negatives, the mean of the s->t and t->s cross-entropies. Extra sampled negatives (random user
and POI table rows, when `align_negatives_ratio` > 0) are extra candidate TARGETS appended as
columns of the s->t direction only: they are targets, so they compete for a scene, while the
t->s direction keeps the in-batch scenes (there is no sensible "random scene" to sample).
In distributed runs the CTR trainer splits each global batch over the ranks, so the candidates
are gathered from every rank (`gather`): the alignment batch stays the global batch, and the mean
of the ranks' losses is the single-process loss (a no-op in one process).
"""

from __future__ import annotations

from torch import Tensor

from training.embedding.losses import info_nce


def symmetric_info_nce(
    scene: Tensor,
    target: Tensor,
    temperature: float,
    extra_negatives: Tensor | None = None,
    scene_index: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE of (scene_i, target_i) pairs; a scalar.

    Objective: cos(s_i, t_i) / tau is the largest score of row i of the s->t matrix (candidates:
    every target, then every `extra_negatives` row) and of row i of the t->s matrix (candidates:
    every scene); loss = (CE(s->t) + CE(t->s)) / 2.

    Args:
        scene: (B, d) aggregated scene vectors s.
        target: (B, d) recommender vectors t, t_i paired with s_i.
        temperature: tau > 0.
        extra_negatives: optional (K, d) more target candidates for the s->t direction.
        scene_index: optional (B,) rows of `scene`, which then holds each distinct scene once:
            s_i = scene[scene_index[i]]. Same loss, a similarity matrix of one row per distinct
            scene (the samples of a batch share scenes: about half are repeats on the demo data).

    Example:
        >>> import torch
        >>> s = torch.randn(4, 8, requires_grad=True)
        >>> loss = symmetric_info_nce(s, torch.randn(4, 8), 0.1, extra_negatives=torch.randn(8, 8))
        >>> loss.backward()
        >>> loss.ndim, s.grad.shape
        (0, torch.Size([4, 8]))
    """
    return info_nce(scene, target, temperature, extra_negatives, gather=True, a_index=scene_index)
