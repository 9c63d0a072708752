import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.ctr.inputs import CtrInputs, FeatureLayout, ModelConfig
from training.ctr.layers import CGCLayer, FMInteraction, LinearTerms, mix_experts
from training.ctr.models import build_model
from training.ctr.models.larr import SceneAggregator, distinct_rows, table_weighted_values, weighted_values
from training.ctr.names import ID_MODELS, SCENE_MODELS

BATCH, FIELDS, BUCKETS, NUMERIC, SCENE_FEATURES, TABLE_ROWS, SCENE_DIM = 8, 5, 50, 3, 10, 40, 16
LAYOUT = FeatureLayout(
    field_names=("user_id", "poi_id", "device_id", "poi_city_id", "position"),
    field_buckets=(BUCKETS,) * FIELDS,
    numeric_names=("user_ctr", "poi_ctr", "user_poi_clicks"),
    user_field=0,
    poi_field=1,
    scene_features=tuple(f"scene_{k}" for k in range(SCENE_FEATURES)),
)
TEXT_SIDES, USER_TEXTS, POI_TEXTS = ("user", "poi"), 12, 7  # rows of each side (its unknown row included)
PLUS_LAYOUT = replace(LAYOUT, text_sides=TEXT_SIDES)
SMALL = dict(
    embedding_dim=8,
    hidden=(32, 16),
    expert_hidden=(16, 8),
    tower_hidden=(8,),
    scene_heads=4,
    scene_ffn=32,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: with several OpenMP threads on a busy machine, each op waits for the others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**overrides) -> ModelConfig:
    return ModelConfig(**(SMALL | overrides))


def scene_table(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(TABLE_ROWS, SCENE_DIM)).astype(np.float32)


def batch(seed: int = 0) -> tuple[CtrInputs, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = CtrInputs(
        categorical=torch.randint(BUCKETS, (BATCH, FIELDS), generator=g),
        numeric=torch.randn(BATCH, NUMERIC, generator=g),
        scene_rows=torch.randint(TABLE_ROWS, (BATCH, SCENE_FEATURES), generator=g),
        text_rows=torch.stack(  # each side's rows of the stacked text table (larr_plus)
            [
                torch.randint(USER_TEXTS, (BATCH,), generator=g),
                USER_TEXTS + torch.randint(POI_TEXTS, (BATCH,), generator=g),
            ],
            dim=1,
        ),
    )
    click = torch.tensor([1, 0, 1, 0, 1, 1, 0, 0], dtype=torch.float32)
    ctcvr = torch.tensor([1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float32)
    return inputs, click, ctcvr


def text_table(width: int = SCENE_DIM, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(USER_TEXTS + POI_TEXTS, width)).astype(np.float32)


def model(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "larr_plus":
        texts = (text_table(), (USER_TEXTS, POI_TEXTS))
        return build_model(name, PLUS_LAYOUT, config(**overrides), scene_table(), texts)
    return build_model(name, LAYOUT, config(**overrides), scene_table() if name in SCENE_MODELS else None)


def objective(out, click, ctcvr) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(out.ctr_logit, click)
    loss = loss + F.binary_cross_entropy_with_logits(out.ctcvr_logit, ctcvr)
    return loss if out.align_loss is None else loss + 0.05 * out.align_loss


@pytest.mark.parametrize("name", ID_MODELS)
def test_forward_gives_finite_logits_for_both_tasks(name):
    inputs, _, _ = batch()
    out = model(name)(inputs)
    for logit in (out.ctr_logit, out.ctcvr_logit):
        assert logit.shape == (BATCH,) and torch.isfinite(logit).all()
    assert not torch.allclose(out.ctr_logit, out.ctcvr_logit)  # two heads, not one logit twice
    if name in SCENE_MODELS:
        assert out.align_loss.ndim == 0 and torch.isfinite(out.align_loss)
    else:
        assert out.align_loss is None


@pytest.mark.parametrize("name", ID_MODELS)
def test_adamw_changes_every_trainable_parameter_and_fits_the_batch(name):
    net = model(name)
    inputs, click, ctcvr = batch()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0)  # no decay: only grads move
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    buffers = {k: b.clone() for k, b in net.named_buffers()}

    losses = []
    for _ in range(20):
        loss = objective(net(inputs), click, ctcvr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if len(losses) == 2:  # LARR+'s match starts at zero (B = 0): A and C move from the second step
            unchanged = [k for k, p in net.named_parameters() if torch.equal(p, before[k])]
            assert unchanged == [], f"{name}: two steps left {unchanged} unchanged"
    assert losses[-1] < losses[0] - 0.1, losses
    for key, value in net.named_buffers():  # LARR's frozen scene table (and LARR+'s text table)
        assert torch.equal(value, buffers[key]), key


def test_larr_scene_table_is_a_frozen_buffer_saved_in_the_state_dict():
    net = model("larr")
    assert "scene.scene_table" in net.state_dict()
    assert all(p.data_ptr() != net.scene.scene_table.data_ptr() for p in net.parameters())
    assert torch.equal(net.scene.scene_table, torch.from_numpy(scene_table()))

    inputs, _, _ = batch()
    net.eval()
    fresh = build_model("larr", LAYOUT, config(), scene_table(seed=9))  # another table, overwritten by load
    fresh.load_state_dict(net.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(inputs).ctr_logit, net(inputs).ctr_logit)


def reference_aggregation(aggregator: SceneAggregator, rows: torch.Tensor) -> torch.Tensor:
    """s computed the plain way: nn.TransformerEncoder over every token, then pooling and g."""
    encoded = aggregator.encoder(aggregator.tokens(rows))  # (B, 1 + n, width)
    pooled = encoded[:, 0] if aggregator.pooling == "agg_token" else encoded[:, 1:].mean(dim=1)
    return aggregator.project(pooled)


@pytest.mark.parametrize("layers,pooling", list(itertools.product([1, 2, 3], ["agg_token", "mean"])))
@pytest.mark.parametrize("training", [True, False])
def test_scene_aggregation_equals_the_plain_transformer_encoder(layers, pooling, training):
    torch.manual_seed(layers)
    cfg = config(scene_layers=layers, pooling=pooling)
    aggregator = SceneAggregator(scene_table(), 2 * cfg.embedding_dim, cfg).double().train(training)
    rows = batch()[0].scene_rows
    got, want = aggregator(rows), reference_aggregation(aggregator, rows)
    assert got.shape == (BATCH, 2 * cfg.embedding_dim)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)

    params = [p for p in aggregator.parameters()]
    got_grads = torch.autograd.grad(got.square().sum(), params, allow_unused=True)
    want_grads = torch.autograd.grad(want.square().sum(), params, allow_unused=True)
    for (name, _), g, w in zip(aggregator.named_parameters(), got_grads, want_grads, strict=True):
        assert g is not None and w is not None, name
        assert torch.allclose(g, w, rtol=1e-8, atol=1e-12), name


def test_scene_aggregation_reads_every_scene_feature_and_ignores_row_order_of_the_batch():
    torch.manual_seed(0)
    cfg = config()
    aggregator = SceneAggregator(scene_table(), 16, cfg).double()
    rows = batch()[0].scene_rows
    s = aggregator(rows)
    for k in range(SCENE_FEATURES):  # bidirectional, no mask: changing any feature changes s
        changed = rows.clone()
        changed[:, k] = (changed[:, k] + 1) % TABLE_ROWS
        assert not torch.allclose(aggregator(changed), s), k
    permutation = torch.randperm(BATCH)
    assert torch.allclose(aggregator(rows[permutation]), s[permutation])


@pytest.mark.parametrize("pooling", ["agg_token", "mean"])
def test_larr_pooling_options_train(pooling):
    net = model("larr", pooling=pooling)
    inputs, click, ctcvr = batch()
    loss = objective(net(inputs), click, ctcvr)
    loss.backward()
    assert torch.isfinite(loss)
    assert net.scene.agg_token.grad.abs().sum() > 0  # mean pooling still reads a through attention


def test_no_alignment_ablation_keeps_the_scene_vector_but_has_no_loss():
    inputs, _, _ = batch()
    ablated, full = model("larr", align=False), model("larr")
    out = ablated(inputs)
    assert out.align_loss is None
    # same architecture (and, with the same seed, the same weights): only the loss is dropped
    assert {k: v.shape for k, v in ablated.state_dict().items()} == {
        k: v.shape for k, v in full.state_dict().items()
    }
    assert torch.equal(out.ctr_logit, full(inputs).ctr_logit)
    other_scenes = CtrInputs(inputs.categorical, inputs.numeric, (inputs.scene_rows + 1) % TABLE_ROWS)
    assert not torch.allclose(ablated(other_scenes).ctr_logit, out.ctr_logit)  # s feeds the prediction


def test_alignment_loss_is_skipped_in_eval_mode():
    inputs, _, _ = batch()
    net = model("larr").eval()
    out = net(inputs)
    assert out.align_loss is None and torch.isfinite(out.ctr_logit).all()


def test_alignment_loss_matches_its_definition_with_sampled_negatives():
    net = model("larr", align_negatives_ratio=2)
    inputs, _, _ = batch()
    torch.manual_seed(123)
    got = net(inputs).align_loss

    dense, fields = net.inputs(inputs)
    target = torch.cat([fields[:, 0], fields[:, 1]], dim=1)  # (B, 2D): user and POI embeddings
    scene = net.scene(inputs.scene_rows)
    torch.manual_seed(123)
    users = torch.randint(BUCKETS, (2 * BATCH,))
    pois = torch.randint(BUCKETS, (2 * BATCH,))
    tables = net.inputs.fields.tables
    negatives = torch.cat([tables[0].weight[users], tables[1].weight[pois]], dim=1)
    from tests.training.ctr.test_alignment import naive_symmetric_info_nce

    want = naive_symmetric_info_nce(scene, target, 0.1, negatives)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    in_batch_only = naive_symmetric_info_nce(scene, target, 0.1)
    assert not torch.allclose(got, in_batch_only)


def test_alignment_loss_over_shared_scenes_equals_the_per_sample_definition():
    # the loss is computed on one similarity row per distinct scene, weighted by its count
    net = model("larr", align_negatives_ratio=1)
    inputs, _, _ = batch()
    inputs.scene_rows[1::2] = inputs.scene_rows[0]
    inputs.scene_rows[2] = inputs.scene_rows[4]
    torch.manual_seed(7)
    got = net(inputs).align_loss
    got_grad = torch.autograd.grad(got, net.scene.agg_token)[0]

    dense, fields = net.inputs(inputs)
    target = torch.cat([fields[:, 0], fields[:, 1]], dim=1)
    torch.manual_seed(7)
    users, pois = torch.randint(BUCKETS, (BATCH,)), torch.randint(BUCKETS, (BATCH,))
    tables = net.inputs.fields.tables
    negatives = torch.cat([tables[0].weight[users], tables[1].weight[pois]], dim=1)
    from tests.training.ctr.test_alignment import naive_symmetric_info_nce

    want = naive_symmetric_info_nce(net.scene(inputs.scene_rows), target, 0.1, negatives)
    want_grad = torch.autograd.grad(want, net.scene.agg_token)[0]
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert want_grad.abs().sum() > 0 and torch.allclose(got_grad, want_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("table_rows", [12, 500])  # per-row weight matrix, and the gather fallback
def test_table_weighted_values_equal_the_gathered_values_with_gradients(table_rows):
    g = torch.Generator().manual_seed(table_rows)
    rows = torch.randint(0, table_rows, (9, 11), generator=g)
    rows[:, 3] = rows[:, 0]  # a row repeated within a sample sums its weights
    scores = torch.randn(9, 11, 4, generator=g, dtype=torch.float64, requires_grad=True)
    values = torch.randn(table_rows, 32, generator=g, dtype=torch.float64, requires_grad=True)
    got = table_weighted_values(scores, rows, values)
    want = weighted_values(scores, F.embedding(rows, values))
    torch.testing.assert_close(got, want)
    weights = torch.randn(9, 1, 32, generator=g, dtype=torch.float64)
    got_grads = torch.autograd.grad((got * weights).sum(), [scores, values])
    want_grads = torch.autograd.grad((want * weights).sum(), [scores, values])
    for got_grad, want_grad in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize("seed", range(4))
def test_distinct_rows_is_torch_unique_over_rows(seed):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, 3 + 40 * seed, (60, 1 + 3 * seed), generator=g)[
        torch.randint(0, 30, (200,), generator=g)
    ]
    distinct, inverse = distinct_rows(rows)
    assert torch.equal(distinct[inverse], rows)
    assert len(distinct) == len(torch.unique(rows, dim=0)) == len(torch.unique(distinct, dim=0))
    empty, none = distinct_rows(rows[:0])
    assert empty.shape == (0, rows.shape[1]) and none.shape == (0,)
    with pytest.raises(ValueError, match="non-negative"):
        distinct_rows(rows - 1)


def test_alignment_gradients_reach_the_user_and_poi_embeddings_and_the_scene_encoder():
    net = model("larr")
    inputs, _, _ = batch()
    net(inputs).align_loss.backward()
    tables = net.inputs.fields.tables
    for field in (0, 1):  # user, POI: exactly the rows of the batch receive gradient
        rows_with_grad = tables[field].weight.grad.abs().sum(dim=1).nonzero().flatten()
        assert set(rows_with_grad.tolist()) == set(inputs.categorical[:, field].tolist())
    for field in (2, 3, 4):  # not part of t
        assert tables[field].weight.grad is None or tables[field].weight.grad.abs().sum() == 0
    assert net.scene.agg_token.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.network.parameters())  # the PLE is not in the loss


def test_negative_sampling_draws_from_the_global_rng_in_training():
    net = model("larr", align_negatives_ratio=1)
    inputs, _, _ = batch()
    torch.manual_seed(5)
    first = net(inputs).align_loss
    torch.manual_seed(5)
    assert torch.equal(net(inputs).align_loss, first)
    assert not torch.equal(net(inputs).align_loss, first)  # new draws


def test_fm_interaction_equals_the_pairwise_sum():
    fields = torch.randn(4, 6, 5, dtype=torch.float64)
    want = torch.zeros(4, dtype=torch.float64)
    for i, j in itertools.combinations(range(6), 2):
        want += (fields[:, i] * fields[:, j]).sum(dim=-1)
    assert torch.allclose(FMInteraction()(fields), want)


def test_linear_terms_equal_one_hot_times_weights():
    torch.manual_seed(0)
    terms = LinearTerms(LAYOUT, num_tasks=2).double()
    for table in terms.fields.tables:
        torch.nn.init.normal_(table.weight)  # zeros at init; give them values to compare
    inputs, _, _ = batch()
    inputs = CtrInputs(inputs.categorical, inputs.numeric.double())
    want = terms.bias.expand(BATCH, 2).clone()
    for field, table in enumerate(terms.fields.tables):
        one_hot = F.one_hot(inputs.categorical[:, field], BUCKETS).double()  # (B, buckets)
        want += one_hot @ table.weight
    want += inputs.numeric @ terms.numeric.weight.T
    assert torch.allclose(terms(inputs), want)


def test_lr_is_a_linear_model_over_the_one_hot_fields_and_the_numeric_features():
    net = model("lr").double()
    # exactly the parameters of a linear model, per task: a weight per bucket, per numeric feature, a bias
    assert sum(p.numel() for p in net.parameters()) == 2 * (sum(LAYOUT.field_buckets) + NUMERIC + 1)
    wider = model("lr", embedding_dim=64, hidden=(256, 128))  # no embeddings, no hidden layer to size
    assert sum(p.numel() for p in wider.parameters()) == sum(p.numel() for p in net.parameters())
    for p in net.parameters():  # zeros at init: give every weight a value to compare
        torch.nn.init.normal_(p)
    inputs, _, _ = batch()
    inputs = CtrInputs(inputs.categorical, inputs.numeric.double())
    out = net(inputs)
    got = torch.stack([out.ctr_logit, out.ctcvr_logit], dim=1)  # (B, 2)
    linear = net.linear
    want = linear.bias.expand(BATCH, 2).clone()
    for field, table in enumerate(linear.fields.tables):
        want += F.one_hot(inputs.categorical[:, field], BUCKETS).double() @ table.weight
    want += inputs.numeric @ linear.numeric.weight.T
    torch.testing.assert_close(got, want)
    # affine in the numeric features: f(2x) - f(x) = f(x) - f(0)
    zero = net(CtrInputs(inputs.categorical, torch.zeros_like(inputs.numeric))).ctr_logit
    double = net(CtrInputs(inputs.categorical, 2 * inputs.numeric)).ctr_logit
    torch.testing.assert_close(double - out.ctr_logit, out.ctr_logit - zero)
    assert not torch.allclose(out.ctr_logit, zero)


def test_cgc_layer_mixes_own_and_shared_experts_with_per_task_softmax_gates():
    torch.manual_seed(0)
    layer = CGCLayer(6, num_tasks=2, task_experts=2, shared_experts=3, expert_hidden=(5, 4)).double()
    last = CGCLayer(6, num_tasks=2, task_experts=2, shared_experts=3, expert_hidden=(5, 4), last=True)
    assert last.shared_gate is None and layer.shared_gate.out_features == 2 * 2 + 3
    tasks = [torch.randn(3, 6, dtype=torch.float64) for _ in range(2)]
    shared = torch.randn(3, 6, dtype=torch.float64)
    outputs, shared_out = layer(tasks, shared)

    shared_experts = [e(shared) for e in layer.shared_experts]
    every = []
    for t in range(2):
        experts = [e(tasks[t]) for e in layer.task_experts[t]] + shared_experts
        every += experts[:2]
        weights = torch.softmax(layer.task_gates[t](tasks[t]), dim=-1)  # (3, 5)
        want = sum(weights[:, k : k + 1] * experts[k] for k in range(5))
        assert torch.allclose(outputs[t], want)
    weights = torch.softmax(layer.shared_gate(shared), dim=-1)  # (3, 7)
    want = sum(weights[:, k : k + 1] * e for k, e in enumerate(every + shared_experts))
    assert torch.allclose(shared_out, want)
    assert torch.allclose(
        mix_experts(torch.zeros(3, 2), [torch.ones(3, 4), 3 * torch.ones(3, 4)]), 2 * torch.ones(3, 4)
    )


def test_larr_prediction_input_is_s_t_and_the_other_features_each_once():
    net = model("larr").eval()
    d = SMALL["embedding_dim"]
    assert net.network.levels[0].task_gates[0].in_features == 2 * d + FIELDS * d + NUMERIC
    inputs, _, _ = batch()
    seen = []
    hook = net.network.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        net(inputs)
        dense, fields = net.inputs(inputs)
    hook.remove()
    x = seen[0]
    scene = net.scene(inputs.scene_rows)
    others = [fields[:, f] for f in range(FIELDS) if f not in (0, 1)]
    want = torch.cat([scene, fields[:, 0], fields[:, 1], *others, inputs.numeric], dim=1)
    torch.testing.assert_close(x, want)


def test_build_model_rejects_bad_requests_by_name():
    with pytest.raises(ValueError, match="unknown CTR model 'p6'.*wide_deep"):
        build_model("p6", LAYOUT, config())
    with pytest.raises(ValueError, match="'larr' needs a scene_table"):
        build_model("larr", LAYOUT, config())
    no_scene = FeatureLayout(LAYOUT.field_names, LAYOUT.field_buckets, LAYOUT.numeric_names, 0, 1)
    with pytest.raises(ValueError, match="scene_features"):
        build_model("larr", no_scene, config(), scene_table())
    with pytest.raises(ValueError, match="scene_table has 4 rows"):
        build_model("larr", LAYOUT, config(), scene_table()[:4])
    with pytest.raises(ValueError, match="scene_heads=3"):
        build_model("larr", LAYOUT, config(scene_heads=3), scene_table())
    assert build_model("ple", no_scene, config()) is not None  # the other models need no scene


def test_bad_batches_are_named():
    net = model("larr")
    inputs, _, _ = batch()
    with pytest.raises(ValueError, match="scene_rows"):
        net(CtrInputs(inputs.categorical, inputs.numeric))
    with pytest.raises(ValueError, match="scene_rows must be rows of the scene table"):
        net(CtrInputs(inputs.categorical, inputs.numeric, inputs.scene_rows - TABLE_ROWS))
    with pytest.raises(ValueError, match="numeric must be"):
        model("ple")(CtrInputs(inputs.categorical, inputs.numeric[:, :2]))
    with pytest.raises(ValueError, match="categorical must be"):
        model("deepfm")(CtrInputs(inputs.categorical[:, :4], inputs.numeric))


def test_larr_aggregates_each_distinct_scene_once_with_the_same_result():
    larr = model("larr").eval()
    inputs, _, _ = batch()
    rows = inputs.scene_rows.clone()
    rows[1::2] = rows[0]  # half the batch shares one scene, as the impressions of one request do
    inputs.scene_rows = rows
    calls = []
    hook = larr.scene.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        out = larr(inputs)
        dense, fields = larr.inputs(inputs)
        target = torch.cat([fields[:, larr.user_field], fields[:, larr.poi_field]], dim=1)
        hook.remove()
        per_row = larr.network(torch.cat([larr.scene(rows), target, dense[:, target.shape[1] :]], dim=1))
    assert calls == [len(torch.unique(rows, dim=0))] and calls[0] < len(rows)
    torch.testing.assert_close(out.ctr_logit, per_row[:, 0])
    torch.testing.assert_close(out.ctcvr_logit, per_row[:, 1])


# -- LARR+ (training/ctr/models/larr_plus.py) ------------------------------------------------------
def _centred(table: np.ndarray) -> torch.Tensor:
    """Rows less their mean, scaled to unit RMS per dimension: from the definition, in float64."""
    spread = table.astype(np.float64) - table.astype(np.float64).mean(axis=0)
    return torch.from_numpy(spread / np.sqrt((spread**2).mean())).float()


def _plus_reference(net, inputs: CtrInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(PLE input, t, the match logit) of LARR+ computed the plain way, from its definition."""
    d = SMALL["embedding_dim"]
    dense, fields = net.inputs(inputs)
    texts = torch.cat([_centred(text_table()[:USER_TEXTS]), _centred(text_table()[USER_TEXTS:])])
    user_text, poi_text = texts[inputs.text_rows[:, 0]], texts[inputs.text_rows[:, 1]]
    user, poi = fields[:, 0], fields[:, 1]
    if net.text_to_target is not None:
        user, poi = user + net.text_to_target["user"](user_text), poi + net.text_to_target["poi"](poi_text)
    target = torch.cat([user, poi], dim=1)
    scenes = _centred(scene_table())[inputs.scene_rows]  # (B, n, w)
    scene_poi = torch.einsum("bnd,bd->b", net.scene_match(scenes), net.poi_match(poi_text)) / d**0.5
    user_poi = (net.user_match(user_text) * net.poi_match(poi_text)).sum(-1) / d**0.5
    others = [fields[:, f] for f in range(FIELDS) if f not in (0, 1)]
    ple_input = torch.cat([net.scene(inputs.scene_rows), target, *others, inputs.numeric], dim=1)
    return ple_input, target, scene_poi + user_poi


def _random_match(net) -> None:
    """Give B (zero in a fresh model) weights, so that the match is not zero."""
    torch.nn.init.normal_(net.poi_match.weight, std=0.3)


@pytest.mark.parametrize("text_in_target", [True, False])
def test_larr_plus_adds_the_scene_and_user_matches_with_each_shop_to_both_logits(text_in_target):
    net = model("larr_plus", text_in_target=text_in_target).eval()
    d = SMALL["embedding_dim"]
    assert net.network.levels[0].task_gates[0].in_features == 2 * d + FIELDS * d + NUMERIC  # LARR's input
    inputs, _, _ = batch()
    with torch.no_grad():
        assert torch.equal(net.match_logit(inputs.scene_rows, net_texts(net, inputs)), torch.zeros(BATCH))
        _random_match(net)
        seen = []
        hook = net.network.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        out = net(inputs)
        hook.remove()
        want_input, _, match = _plus_reference(net, inputs)
        torch.testing.assert_close(seen[0], want_input)
        assert match.abs().min() > 0
        per_task = net.network(want_input)
        torch.testing.assert_close(out.ctr_logit, per_task[:, 0] + match)
        torch.testing.assert_close(out.ctcvr_logit, per_task[:, 1] + match)
        # another shop text changes the prediction; the text table is a frozen buffer in the state dict
        other_shop = inputs.text_rows.clone()
        other_shop[:, 1] = USER_TEXTS + (other_shop[:, 1] - USER_TEXTS + 1) % POI_TEXTS
        moved = CtrInputs(inputs.categorical, inputs.numeric, inputs.scene_rows, text_rows=other_shop)
        assert not torch.allclose(net(moved).ctr_logit, out.ctr_logit)
    assert "text_table" in net.state_dict() and "match_scenes" in net.state_dict()
    assert all(p.data_ptr() != net.text_table.data_ptr() for p in net.parameters())
    assert (net.text_to_target is not None) == text_in_target


def net_texts(net, inputs: CtrInputs) -> dict[str, torch.Tensor]:
    return {side: net.text_table[inputs.text_rows[:, k]] for k, side in enumerate(net.sides)}


def test_larr_plus_centres_each_side_and_the_match_scenes_and_leaves_larrs_scene_table():
    net = model("larr_plus")
    torch.testing.assert_close(net.text_table[:USER_TEXTS], _centred(text_table()[:USER_TEXTS]))
    torch.testing.assert_close(net.text_table[USER_TEXTS:], _centred(text_table()[USER_TEXTS:]))
    for part in (net.text_table[:USER_TEXTS], net.text_table[USER_TEXTS:], net.match_scenes):
        assert part.mean(0).abs().max() < 1e-5 and abs(part.pow(2).mean().item() - 1) < 1e-5
    assert torch.equal(net.scene.scene_table, torch.from_numpy(scene_table()))  # the aggregator: LARR's
    # an encoder whose vectors all sit in one narrow cone: what differs between shops is what remains
    cone = np.ones((POI_TEXTS, SCENE_DIM), np.float32) + 0.01 * text_table()[:POI_TEXTS]
    poi_only = build_model(
        "larr_plus", replace(LAYOUT, text_sides=("poi",)), config(), scene_table(), (cone, (7,))
    )
    torch.testing.assert_close(poi_only.text_table, _centred(text_table()[:POI_TEXTS]), rtol=1e-3, atol=1e-3)
    same = build_model(
        "larr_plus", replace(LAYOUT, text_sides=("poi",)), config(), scene_table(), (cone[:1], (1,))
    )
    assert torch.equal(same.text_table, torch.zeros(1, SCENE_DIM))  # one row: nothing differs


@pytest.mark.parametrize("text_in_target", [True, False])
def test_larr_plus_aligns_the_scene_with_its_t(text_in_target):
    net = model("larr_plus", text_in_target=text_in_target)
    inputs, _, _ = batch()
    got = net(inputs).align_loss
    _, target, _ = _plus_reference(net, inputs)
    from tests.training.ctr.test_alignment import naive_symmetric_info_nce

    want = naive_symmetric_info_nce(net.scene(inputs.scene_rows), target, 0.1)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_larr_plus_sampled_negatives_take_texts_from_each_sides_own_rows():
    net = model("larr_plus", align_negatives_ratio=3, text_in_target=True)
    seen = {"user": [], "poi": []}
    for side in seen:
        net.text_to_target[side].register_forward_pre_hook(
            lambda _m, args, side=side: seen[side].append(args[0])
        )
    torch.manual_seed(5)
    negatives = net.sampled_targets(BATCH)
    assert negatives.shape == (3 * BATCH, 2 * SMALL["embedding_dim"])
    user_rows = [(row == net.text_table).all(1).nonzero().item() for row in seen["user"][0]]
    poi_rows = [(row == net.text_table).all(1).nonzero().item() for row in seen["poi"][0]]
    assert all(r < USER_TEXTS for r in user_rows) and all(r >= USER_TEXTS for r in poi_rows)
    # without texts in t the negatives are LARR's own: random rows of the ID embedding tables
    ids_only = model("larr_plus", align_negatives_ratio=3, text_in_target=False)
    torch.manual_seed(5)
    larr = model("larr", align_negatives_ratio=3)
    larr.load_state_dict(ids_only.state_dict(), strict=False)
    torch.manual_seed(6)
    got = ids_only.sampled_targets(BATCH)
    torch.manual_seed(6)
    torch.testing.assert_close(got, larr.sampled_targets(BATCH))


def test_larr_plus_without_user_texts_or_with_another_encoders_width():
    torch.manual_seed(0)
    poi_only = replace(LAYOUT, text_sides=("poi",))
    net = build_model(
        "larr_plus",
        poi_only,
        config(text_in_target=True),
        scene_table(),
        (text_table()[:POI_TEXTS], (POI_TEXTS,)),
    )
    assert net.user_match is None and set(net.text_to_target) == {"poi"}
    _random_match(net)
    inputs, _, _ = batch()
    inputs.text_rows = inputs.text_rows[:, 1:] - USER_TEXTS
    out = net(inputs)
    assert torch.isfinite(out.ctr_logit).all() and torch.isfinite(out.align_loss)
    # texts of a wider encoder than the scene vectors: B reads the text width, A the scene width
    wide = build_model(
        "larr_plus", PLUS_LAYOUT, config(), scene_table(), (text_table(24), (USER_TEXTS, POI_TEXTS))
    )
    assert wide.poi_match.in_features == 24 and wide.scene_match.in_features == SCENE_DIM
    _random_match(wide)
    assert torch.isfinite(wide(batch()[0]).ctr_logit).all()


def test_larr_plus_bad_requests_are_named():
    texts = (text_table(), (USER_TEXTS, POI_TEXTS))
    with pytest.raises(ValueError, match="needs a scene_table and a text_table"):
        build_model("larr_plus", PLUS_LAYOUT, config(), scene_table())
    with pytest.raises(ValueError, match="the POI side of the text vectors"):
        build_model("larr_plus", replace(LAYOUT, text_sides=("user",)), config(), scene_table(), texts)
    with pytest.raises(ValueError, match=r"side_rows \[12, 6\]"):
        build_model("larr_plus", PLUS_LAYOUT, config(), scene_table(), (text_table(), (USER_TEXTS, 6)))
    net = model("larr_plus")
    inputs, _, _ = batch()
    with pytest.raises(ValueError, match=r"text_rows of shape \(8, 2\), got None"):
        net(CtrInputs(inputs.categorical, inputs.numeric, inputs.scene_rows))
    with pytest.raises(ValueError, match="text_rows must be rows of the text table"):
        net(CtrInputs(inputs.categorical, inputs.numeric, inputs.scene_rows, text_rows=inputs.text_rows + 50))


def test_cgc_layer_stacked_inference_equals_expert_by_expert_and_follows_weight_changes():
    torch.manual_seed(0)
    layer = CGCLayer(6, num_tasks=2, task_experts=2, shared_experts=3, expert_hidden=(5, 4)).double().eval()
    tasks = [torch.randn(3, 6, dtype=torch.float64) for _ in range(2)]
    shared = torch.randn(3, 6, dtype=torch.float64)
    for inputs in (tasks, [shared, shared]):  # own task inputs; level 1, where every expert reads one
        each, each_shared = layer.forward_each(inputs, shared)
        with torch.inference_mode():
            stacked, stacked_shared = layer(inputs, shared)
        for a, b in zip(each, stacked, strict=True):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(each_shared, stacked_shared)
    with torch.no_grad():  # weights changed after the stack was built: rebuilt, not stale
        before, _ = layer(tasks, shared)
        layer.shared_experts[0][0].weight.add_(1.0)
        changed, _ = layer(tasks, shared)
    torch.testing.assert_close(changed[0], layer.forward_each(tasks, shared)[0][0])
    assert not torch.allclose(changed[0], before[0])


def test_memoized_scene_aggregation_equals_the_computed_one_and_is_bounded():
    net = model("larr").eval()
    inputs, _, _ = batch()
    rows = inputs.scene_rows
    with torch.inference_mode():
        want = net.scene(rows)
        net.scene.memoize(3)
        first = net.scene(rows[:2])
        assert len(net.scene.memo) == 2
        again = net.scene(rows[[1, 0]])  # both remembered: nothing new
        assert len(net.scene.memo) == 2
        everything = net.scene(rows)  # more scenes than the memo holds: all returned, 3 kept
        assert len(net.scene.memo) == 3
        assert list(net.scene.memo) == [tuple(r) for r in rows[-3:].tolist()]  # least recent dropped
    torch.testing.assert_close(first, want[:2])
    torch.testing.assert_close(again, want[[1, 0]])
    torch.testing.assert_close(everything, want)

    net.scene.memo.clear()
    net.train()
    net.scene(rows)  # training: computed, never remembered
    net.eval()
    net.scene(rows)  # gradients recorded: computed too (the memo's vectors have no graph)
    assert not net.scene.memo
    with pytest.raises(ValueError, match="capacity"):
        net.scene.memoize(-1)
