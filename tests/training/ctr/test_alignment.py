import doctest
import math

import pytest
import torch

from training.ctr import alignment
from training.ctr.alignment import symmetric_info_nce


def naive_symmetric_info_nce(scene, target, temperature, extra_negatives=None):
    """The definition with explicit loops over i, j: the mean over i of
    -log(exp(sim_ii / tau) / sum_j exp(sim_ij / tau)), for s->t (candidates: targets, then the
    extra negatives) and t->s (candidates: scenes), averaged over the two directions."""
    n = scene.shape[0]
    extra = [] if extra_negatives is None else [extra_negatives[k] for k in range(extra_negatives.shape[0])]

    def sim(x, y):
        return (x * y).sum() / (x.norm() * y.norm())

    def direction(anchors, candidates):
        total = 0.0
        for i in range(n):
            denominator = sum(torch.exp(sim(anchors[i], c) / temperature) for c in candidates)
            total = total - torch.log(torch.exp(sim(anchors[i], candidates[i]) / temperature) / denominator)
        return total / n

    scene_to_target = direction(scene, [target[j] for j in range(n)] + extra)
    target_to_scene = direction(target, [scene[j] for j in range(n)])
    return (scene_to_target + target_to_scene) / 2


def leaves(*shapes, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=generator, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize("batch,dim", [(2, 3), (5, 8), (8, 32)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("extra", [0, 6])
def test_matches_the_naive_loops_in_value_and_gradients(batch, dim, temperature, extra):
    scene, target, negatives = leaves(
        (batch, dim), (batch, dim), (max(extra, 1), dim), seed=batch * dim + extra
    )
    extra_negatives = negatives if extra else None
    wrt = [scene, target, negatives] if extra else [scene, target]

    got = symmetric_info_nce(scene, target, temperature, extra_negatives)
    want = naive_symmetric_info_nce(scene, target, temperature, extra_negatives)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)

    got_grads = torch.autograd.grad(got, wrt)
    want_grads = torch.autograd.grad(want, wrt)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert w.abs().sum() > 0
        assert torch.allclose(g, w, rtol=1e-8, atol=1e-12)


def test_hand_computed_value_for_orthogonal_pairs():
    # s = t = two orthogonal unit vectors: each row scores 1/tau for its positive, 0 for the other
    scene = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    want = math.log(1 + math.exp(-10.0))  # -log(e^10 / (e^10 + e^0)), the same in both directions
    assert symmetric_info_nce(scene, target, 0.1).item() == pytest.approx(want, rel=1e-12)
    # an extra negative equal to target 0 competes with the positive of row 0 (s->t only)
    extra = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    row0 = -math.log(math.exp(10) / (2 * math.exp(10) + 1))
    row1 = -math.log(math.exp(10) / (math.exp(10) + 2))
    want_extra = ((row0 + row1) / 2 + want) / 2
    assert symmetric_info_nce(scene, target, 0.1, extra).item() == pytest.approx(want_extra, rel=1e-12)


def test_symmetric_and_scale_free_but_extra_negatives_are_targets_only():
    scene, target, negatives = leaves((6, 8), (6, 8), (4, 8), seed=1)
    with torch.no_grad():
        assert torch.allclose(symmetric_info_nce(scene, target, 0.1), symmetric_info_nce(target, scene, 0.1))
        assert torch.allclose(
            symmetric_info_nce(3 * scene, target, 0.1), symmetric_info_nce(scene, target, 0.1)
        )
        with_extra = symmetric_info_nce(scene, target, 0.1, negatives)
        assert not torch.allclose(with_extra, symmetric_info_nce(target, scene, 0.1, negatives))
        assert with_extra > symmetric_info_nce(scene, target, 0.1)  # more candidates, larger loss


def test_bad_shapes_are_named():
    scene, target = leaves((4, 8), (4, 6), seed=2)
    with pytest.raises(ValueError, match="same shape"):
        symmetric_info_nce(scene, target, 0.1)
    scene, target, negatives = leaves((4, 8), (4, 8), (3, 5), seed=3)
    with pytest.raises(ValueError, match="extra_negatives"):
        symmetric_info_nce(scene, target, 0.1, negatives)


def test_docstring_example_runs():
    assert doctest.testmod(alignment, raise_on_error=True).attempted >= 1
