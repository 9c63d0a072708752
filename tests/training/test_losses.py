import doctest
import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from training.embedding import losses
from training.embedding.losses import InfoNCELoss, gather_with_grad, info_nce


def naive_info_nce(a, b, temperature, extra_negatives=None):
    """The definition, one row at a time: -log softmax of the positive among the candidates."""
    n = a.shape[0]
    extra = [] if extra_negatives is None else [extra_negatives[k] for k in range(extra_negatives.shape[0])]

    def score(x, y):
        return (x * y).sum() / (x.norm() * y.norm()) / temperature

    def row_loss(anchor, candidates, positive):
        scores = [score(anchor, c) for c in candidates]
        denominator = sum(torch.exp(s) for s in scores)
        return -torch.log(torch.exp(scores[positive]) / denominator)

    loss_ab = sum(row_loss(a[i], [b[j] for j in range(n)] + extra, i) for i in range(n)) / n
    loss_ba = sum(row_loss(b[i], [a[j] for j in range(n)], i) for i in range(n)) / n
    return (loss_ab + loss_ba) / 2


def _leaves(*shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=generator, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize("n,d", [(2, 3), (4, 8), (7, 16)])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 1.0])
@pytest.mark.parametrize("extra", [0, 5])
def test_matches_naive_reference_values_and_gradients(n, d, temperature, extra):
    a, b, e = _leaves((n, d), (n, d), (max(extra, 1), d), seed=n * 100 + d)
    inputs = [a, b, e] if extra else [a, b]
    extra_negatives = e if extra else None

    got = info_nce(a, b, temperature, extra_negatives)
    want = naive_info_nce(a, b, temperature, extra_negatives)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

    got_grads = torch.autograd.grad(got, inputs)
    want_grads = torch.autograd.grad(want, inputs)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def log_softmax_info_nce(a, b, temperature, extra_negatives=None):
    """The same definition with whole-matrix log-softmaxes (a reference fast enough for big n)."""
    a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    candidates = (
        b
        if extra_negatives is None
        else torch.cat([b, torch.nn.functional.normalize(extra_negatives, dim=1)])
    )
    logits = a @ candidates.T / temperature
    loss_ab = -logits.log_softmax(dim=1).diagonal().mean()
    loss_ba = -logits[:, : len(a)].log_softmax(dim=0).diagonal().mean()
    return (loss_ab + loss_ba) / 2


@pytest.mark.parametrize("temperature", [0.01, 0.05, 1.0])
def test_float32_batch_of_the_ctr_size_matches_a_float64_reference(temperature):
    # 0.01 is below the single-exp path's float32 range (exp(-2 / tau) underflows): the
    # cross-entropy path answers; the others take the single-exp path
    assert losses._bounded_exp_is_safe(temperature, torch.float32) == (temperature >= 0.025)
    a, b, e = _leaves((600, 32), (600, 32), (300, 32), seed=5)
    a32, b32, e32 = (t.detach().float().requires_grad_() for t in (a, b, e))
    got = info_nce(a32, b32, temperature, e32)
    want = log_softmax_info_nce(a, b, temperature, e)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    for g, w in zip(
        torch.autograd.grad(got, [a32, b32, e32]), torch.autograd.grad(want, [a, b, e]), strict=True
    ):
        torch.testing.assert_close(g.double(), w, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("temperature", [0.002, 0.1])  # 0.002: below the float64 single-exp range
@pytest.mark.parametrize("extra", [0, 4])
def test_distinct_anchors_with_an_index_equal_the_repeated_anchors(temperature, extra):
    a, b, e = _leaves((4, 8), (9, 8), (max(extra, 1), 8), seed=21)
    a_index = torch.tensor([2, 0, 2, 2, 1, 3, 0, 2, 1])
    extra_negatives = e if extra else None
    got = info_nce(a, b, temperature, extra_negatives, a_index=a_index)
    # the whole-matrix reference: the naive loops' exp(cos / 0.002) gradients lose precision
    want = log_softmax_info_nce(a[a_index], b, temperature, extra_negatives)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    wrt = [a, b, e] if extra else [a, b]
    for g, w in zip(torch.autograd.grad(got, wrt), torch.autograd.grad(want, wrt), strict=True):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="a_index"):
        info_nce(a, b, temperature, a_index=a_index + 1)
    with pytest.raises(ValueError, match="9 pairs"):
        info_nce(a, b[:5], temperature, a_index=a_index)


def test_bfloat16_autocast_computes_the_loss_in_float32():
    a, b = (t.detach().float().requires_grad_() for t in _leaves((64, 16), (64, 16), seed=9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = info_nce(a, b, 0.1)
    torch.testing.assert_close(got, info_nce(a, b, 0.1))
    got.backward()
    assert a.grad.dtype == torch.float32 and torch.isfinite(a.grad).all()


def test_symmetric_in_a_and_b_without_extra_negatives():
    a, b = _leaves((6, 8), (6, 8), seed=3)
    torch.testing.assert_close(info_nce(a, b, 0.1), info_nce(b, a, 0.1))
    # extra negatives belong to the a->b direction only, so swapping changes the loss
    (e,) = _leaves((4, 8), seed=4)
    assert not torch.allclose(info_nce(a, b, 0.1, e), info_nce(b, a, 0.1, e))


def test_known_values():
    # identical, orthogonal pairs: each row sees its positive at cos 1 and the others at cos 0
    eye = torch.eye(4, dtype=torch.float64)
    expected = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + 3))
    torch.testing.assert_close(info_nce(eye, eye, 0.5), torch.tensor(expected, dtype=torch.float64))
    # cosine similarity: the scale of the vectors does not matter
    a, b = _leaves((5, 4), (5, 4), seed=7)
    torch.testing.assert_close(info_nce(3.0 * a, 0.1 * b, 0.2), info_nce(a, b, 0.2))


def test_module_holds_settings_and_checks_inputs():
    loss_fn = InfoNCELoss(temperature=0.1)
    a, b, e = _leaves((4, 8), (4, 8), (3, 8), seed=1)
    torch.testing.assert_close(loss_fn(a, b, e), info_nce(a, b, 0.1, e))
    assert "temperature=0.1" in repr(loss_fn)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0.0)
    with pytest.raises(ValueError, match="same shape"):
        info_nce(a, b[:3], 0.1)
    with pytest.raises(ValueError, match="extra_negatives"):
        info_nce(a, b, 0.1, e[:, :4])


def test_docstring_example_runs():
    result = doctest.testmod(losses, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_gather_is_identity_without_a_process_group():
    (t,) = _leaves((3, 2))
    assert gather_with_grad(t) is t


WORLD, LOCAL_N, LOCAL_EXTRA, DIM, TAU = 2, 3, 2, 8, 0.1


def _global_batch():
    return _leaves((WORLD * LOCAL_N, DIM), (WORLD * LOCAL_N, DIM), (WORLD * LOCAL_EXTRA, DIM), seed=11)


def _worker(rank: int, rendezvous: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    try:
        a, b, e = (t.detach() for t in _global_batch())
        results = {}
        for name, with_extra in (("plain", False), ("extra", True)):
            a_r = a[rank * LOCAL_N : (rank + 1) * LOCAL_N].clone().requires_grad_()
            b_r = b[rank * LOCAL_N : (rank + 1) * LOCAL_N].clone().requires_grad_()
            e_r = e[rank * LOCAL_EXTRA : (rank + 1) * LOCAL_EXTRA].clone().requires_grad_()
            loss = InfoNCELoss(TAU)(a_r, b_r, e_r if with_extra else None)
            loss.backward()
            results[name] = (loss.detach(), a_r.grad, b_r.grad, e_r.grad)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        # neither rank tears gloo down while the other still talks to it: a rank that exits
        # first can abort the other ("terminate called without an active exception", seen once in CI)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # a rank's interpreter teardown still aborted once after all of that (SIGABRT, "terminate
    # called without an active exception", a gloo thread at exit): the results are saved and
    # the group is down, so leave without the teardown
    os._exit(0)


def test_gathered_loss_equals_single_process_loss_on_the_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    a, b, e = _global_batch()
    for name, with_extra in (("plain", False), ("extra", True)):
        full = info_nce(a, b, TAU, e if with_extra else None)
        grads = torch.autograd.grad(full, [a, b, e], allow_unused=True)
        # the mean of the ranks' losses is the loss of the whole batch ...
        mean_loss = sum(r[name][0] for r in per_rank) / WORLD
        torch.testing.assert_close(mean_loss, full.detach())
        # ... and each rank's gradient (summed over every rank's loss), averaged over ranks as DDP
        # does, is that rank's slice of the whole-batch gradient
        for rank, result in enumerate(per_rank):
            rows = slice(rank * LOCAL_N, (rank + 1) * LOCAL_N)
            torch.testing.assert_close(result[name][1] / WORLD, grads[0][rows])
            torch.testing.assert_close(result[name][2] / WORLD, grads[1][rows])
            if with_extra:
                extra_rows = slice(rank * LOCAL_EXTRA, (rank + 1) * LOCAL_EXTRA)
                torch.testing.assert_close(result[name][3] / WORLD, grads[2][extra_rows])
        # the gather really mattered: a rank alone (in-batch negatives of its own rows) differs
        local = info_nce(a[:LOCAL_N], b[:LOCAL_N], TAU, e[:LOCAL_EXTRA] if with_extra else None)
        assert not torch.allclose(local.detach(), per_rank[0][name][0])
