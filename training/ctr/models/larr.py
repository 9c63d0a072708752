"""LARR (RecSys 2024): PLE plus the real-time scene aggregated by a small transformer and aligned
with the recommender's user and POI embeddings.

Per sample: the n scene features' frozen vectors e_1..e_n (rows of the exported scene table,
`CtrInputs.scene_rows`) with a trainable aggregation token a in front go through a bidirectional
transformer encoder T; pooling (a's output, or the mean over the n scene positions) and an MLP g
give s = g(pool(T([a; e_1; ...; e_n]))), of the width of t = concat(user embedding, POI embedding)
(the PLE's own field embeddings). The alignment loss is symmetric InfoNCE between s and t over the
batch; PLE predicts CTR and CTCVR from concat(s, t, the other fields' embeddings, numeric): PLE's
own input, each field once, plus s.
`ModelConfig.align = False` (the no_al ablation) keeps the concatenation and drops the loss.
The loss is computed in training mode only (`align_loss` is None in eval mode): it is O(B^2) in the
batch, and scoring batches can be large.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.ctr.alignment import symmetric_info_nce
from training.ctr.inputs import CtrInputs, CtrOutput, FeatureLayout, ModelConfig
from training.ctr.layers import MLP, EmbeddedInputs, task_output
from training.ctr.models.ple import PleNetwork


class SceneAggregator(nn.Module):
    """s = g(pool(T([a; e_1..e_n]))): (B, n) scene-table rows -> (B, output_dim).

    The scene table is a buffer: saved in the state dict (scoring needs no second file), moved with
    the model, never in `parameters()` and so never trained. T is a post-norm
    `nn.TransformerEncoder` (no mask: every token attends to every token). `forward` runs T's layers
    itself, equal to `self.encoder(tokens)` at the pooled positions (tested) but cheaper, because
    the scene vectors are frozen rows of a small table:
    - the first layer's query/key/value projections are computed once per table row and gathered
      per sample, not computed for every sample's n tokens;
    - with agg-token pooling, the last layer is computed for the aggregation token only (the other
      positions' outputs are never read).

    `memoize(capacity)` (the scoring pyfunc, a frozen model) remembers s per distinct scene.
    """

    def __init__(self, scene_table: np.ndarray, output_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        table = np.asarray(scene_table, dtype=np.float32)
        if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
            raise ValueError(f"scene_table must be a non-empty (rows, dim) matrix, got shape {table.shape}")
        if not np.isfinite(table).all():
            raise ValueError("scene_table holds non-finite values")
        width = table.shape[1]
        if width % cfg.scene_heads:
            raise ValueError(f"scene_heads={cfg.scene_heads} must divide the scene vector width {width}")
        self.register_buffer("scene_table", torch.from_numpy(table.copy()))
        self.agg_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, cfg.scene_heads, cfg.scene_ffn, dropout=cfg.dropout, batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.scene_layers, enable_nested_tensor=False)
        self.project = MLP(width, (width,), output_dim)  # g
        self.pooling = cfg.pooling
        self.memo: OrderedDict[tuple[int, ...], Tensor] | None = None
        self.memo_capacity = 0

    def memoize(self, capacity: int) -> None:
        """Remember s of up to `capacity` distinct scenes (least recently used dropped) whenever no
        gradient is recorded: a scoring process meets the same few scenes request after request.
        For a frozen model only: nothing tells the memo that the weights changed. 0 = off."""
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.memo = OrderedDict() if capacity else None
        self.memo_capacity = capacity

    def check_rows(self, scene_rows: Tensor) -> None:
        if scene_rows.numel() and (scene_rows.min() < 0 or scene_rows.max() >= len(self.scene_table)):
            raise ValueError(f"scene_rows must be rows of the scene table (0..{len(self.scene_table) - 1})")

    def forward(self, scene_rows: Tensor) -> Tensor:
        self.check_rows(scene_rows)
        if self.memo is None or self.training or torch.is_grad_enabled():
            return self.aggregate(scene_rows)
        keys = [tuple(row) for row in scene_rows.tolist()]
        new = [index for index, key in enumerate(keys) if key not in self.memo]
        if new:
            for index, vector in zip(new, self.aggregate(scene_rows[new]), strict=True):
                self.memo[keys[index]] = vector
        vectors = [self.memo[key] for key in keys]
        for key in keys:
            self.memo.move_to_end(key)
        while len(self.memo) > self.memo_capacity:
            self.memo.popitem(last=False)
        return torch.stack(vectors) if vectors else self.aggregate(scene_rows)

    def aggregate(self, scene_rows: Tensor) -> Tensor:
        """s of every row of `scene_rows` (B, n), computed."""
        layers = self.encoder.layers
        agg_only = self.pooling == "agg_token"
        # Layer 1 reads the raw tokens [a; e_1..e_n]: project a and every table row once, then gather.
        tokens = torch.cat([self.agg_token[0], self.scene_table])  # (1 + R, width), row 0 = a
        rows = F.pad(scene_rows + 1, (1, 0))  # (B, 1 + n) rows of `tokens`
        heads, dropout = layers[0].self_attn.num_heads, self.attention_dropout(layers[0])
        if agg_only and len(layers) == 1:  # only a's output is read: one query, the same for every sample
            query, x = in_projection(layers[0], self.agg_token, 0), self.agg_token  # (1, 1, width)
            # so each table row's attention score is computed once too, then gathered per sample
            scores = attention_scores(query[0], in_projection(layers[0], tokens, 1), heads)  # (1 + R, heads)
            values = in_projection(layers[0], tokens, 2)  # (1 + R, w)
            attended = table_weighted_values(F.embedding(rows, scores), rows, values, dropout)
        else:
            query, x = F.embedding(rows, in_projection(layers[0], tokens, 0)), F.embedding(rows, tokens)
            key, value = (F.embedding(rows, in_projection(layers[0], tokens, part)) for part in (1, 2))
            attended = attention(query, key, value, heads, dropout)
        x = self.encoder_layer(layers[0], x, attended)
        for depth, layer in enumerate(layers[1:], start=2):
            query, key, value = (in_projection(layer, x, part) for part in range(3))
            if agg_only and depth == len(layers):
                query, x = query[:, :1], x[:, :1]  # the last layer only for a
            attended = attention(query, key, value, layer.self_attn.num_heads, self.attention_dropout(layer))
            x = self.encoder_layer(layer, x, attended)
        pooled = x[:, 0] if agg_only else x[:, 1:].mean(dim=1)  # (B, width)
        return self.project(pooled)

    def tokens(self, scene_rows: Tensor) -> Tensor:
        """[a; e_1..e_n], (B, n) -> (B, 1 + n, width): what `self.encoder` would read (tests)."""
        scenes = F.embedding(scene_rows, self.scene_table)  # (B, n, width)
        return torch.cat([self.agg_token.expand(len(scenes), -1, -1), scenes], dim=1)

    def attention_dropout(self, layer: nn.TransformerEncoderLayer) -> float:
        return layer.self_attn.dropout if self.training else 0.0

    def encoder_layer(self, layer: nn.TransformerEncoderLayer, x: Tensor, attended: Tensor) -> Tensor:
        """`layer`'s post-norm forward from its attention's heads output `attended` (B, Lq, w), before
        the output projection; x (B|1, Lq, w) holds the query positions' inputs (the residual)."""
        attended = layer.self_attn.out_proj(attended)
        x = layer.norm1(x + layer.dropout1(attended))
        feed_forward = layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))
        return layer.norm2(x + layer.dropout2(feed_forward))


def attention(query: Tensor, key: Tensor, value: Tensor, heads: int, dropout: float = 0.0) -> Tensor:
    """Multi-head softmax attention of projected (B|1, Lq, w) queries over (B, L, w) keys / values.

    One query (the aggregation token) is a broadcast product and a sum over the few keys: on CPU,
    ~4x faster than batched matmuls of B x heads tiny matrices; several queries use SDPA.
    """
    if query.shape[1] == 1:
        return weighted_values(attention_scores(query, key, heads), value, dropout)
    split = lambda t: t.unflatten(-1, (heads, -1))  # noqa: E731  (B, L, w) -> (B, L, heads, w / heads)
    query, key, value = (split(t).transpose(1, 2) for t in (query, key, value))  # (B, heads, L, w / heads)
    attended = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
    return attended.transpose(1, 2).flatten(2)  # (B, Lq, w)


def attention_scores(query: Tensor, key: Tensor, heads: int) -> Tensor:
    """Scaled per-head dot products of one query (..., 1, w) with keys (..., L, w) -> (..., L, heads)."""
    head_dim = query.shape[-1] // heads
    product = query.unflatten(-1, (heads, head_dim)) * key.unflatten(-1, (heads, head_dim))
    return product.sum(dim=-1) * head_dim**-0.5


def weighted_values(scores: Tensor, value: Tensor, dropout: float = 0.0) -> Tensor:
    """One query's attention output from its scores (B, L, heads) over values (B, L, w) -> (B, 1, w)."""
    weights = F.dropout(scores.softmax(dim=1), p=dropout)  # (B, L, heads)
    heads = weights.shape[-1]
    return (weights.unsqueeze(-1) * value.unflatten(-1, (heads, -1))).sum(dim=1).flatten(1).unsqueeze(1)


def table_weighted_values(scores: Tensor, rows: Tensor, values: Tensor, dropout: float = 0.0) -> Tensor:
    """`weighted_values` when every sample's values are rows of one table: scores (B, L, heads) of
    the table rows `rows` (B, L), values (R, w) -> (B, 1, w).

    A small table takes a (B, R, heads) matrix of each row's summed weights and one matmul per head
    instead of gathering (B, L, w) values (~2x faster forward and backward on the demo's 62 rows);
    a table larger than the gathered values falls back to the gather.
    """
    batch, positions, heads = scores.shape
    if len(values) * heads > positions * values.shape[-1]:
        return weighted_values(scores, F.embedding(rows, values), dropout)
    weights = F.dropout(scores.softmax(dim=1), p=dropout)  # (B, L, heads)
    index = rows.unsqueeze(-1).expand(-1, -1, heads)
    per_row = weights.new_zeros(batch, len(values), heads).scatter_add(1, index, weights)  # (B, R, heads)
    attended = torch.einsum(
        "brh,rhd->bhd", per_row, values.unflatten(-1, (heads, -1))
    )  # (B, heads, w / heads)
    return attended.flatten(1).unsqueeze(1)


def in_projection(layer: nn.TransformerEncoderLayer, x: Tensor, part: int) -> Tensor:
    """The query (0), key (1) or value (2) projection of `layer`'s attention: (..., w) -> (..., w)."""
    attn = layer.self_attn
    rows = slice(part * attn.embed_dim, (part + 1) * attn.embed_dim)
    return F.linear(x, attn.in_proj_weight[rows], attn.in_proj_bias[rows])


def distinct_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """(distinct rows (K, n), inverse (B,)) of a (B, n) integer matrix: rows == distinct[inverse].

    `torch.unique(dim=0)` compares rows one pair at a time (~12 ms for a batch of 2400 on CPU).
    Here column by column: the code of rows[:, :c] (< B distinct values) times (max + 1) plus
    column c is an exact code of rows[:, :c + 1] that cannot overflow; one 1-D unique per column.
    """
    if rows.shape[1] == 0 or len(rows) == 0:
        return rows[:1], torch.zeros(len(rows), dtype=torch.long, device=rows.device)
    if rows.min() < 0:
        raise ValueError("distinct_rows needs non-negative integers (codes would collide)")
    shift = int(rows.max()) + 1
    code = rows[:, 0].long()
    for column in range(1, rows.shape[1]):
        code = torch.unique(code, return_inverse=True)[1] * shift + rows[:, column]
    _, inverse = torch.unique(code, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(rows), dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(rows), device=rows.device), reduce="amin")
    return rows[first], inverse


class SceneParts(NamedTuple):
    """What LARR's forward computes before its PLE (`larr_plus` adds to it, training/ctr/models/larr_plus.py)."""

    rows: Tensor  # (B, n) scene-table rows
    ordered: Tensor  # (B, F*D) the field embeddings: t = the first 2D, then the other fields
    numeric: Tensor  # (B, N)
    distinct_scenes: Tensor  # (K, 2D) s of each distinct scene of the batch
    inverse: Tensor  # (B,) each sample's row of distinct_scenes


class LARR(nn.Module):
    def __init__(
        self, layout: FeatureLayout, cfg: ModelConfig, scene_table: np.ndarray, extra_inputs: int = 0
    ) -> None:
        """`extra_inputs`: more PLE input columns a subclass appends (`LARRPlus`); 0 for the paper's LARR."""
        super().__init__()
        if not layout.scene_features:
            raise ValueError("LARR needs a layout with scene_features (the n scene features of scene_rows)")
        for name, field in (("user_field", layout.user_field), ("poi_field", layout.poi_field)):
            if not 0 <= field < layout.num_fields:
                raise ValueError(f"layout.{name}={field} is not a field index (0..{layout.num_fields - 1})")
        rows = np.shape(scene_table)[0] if np.ndim(scene_table) == 2 else 0
        if rows < len(layout.scene_features):
            raise ValueError(
                f"scene_table has {rows} rows, fewer than the {len(layout.scene_features)} scene features "
                "(every feature has at least its unknown row)"
            )
        self.user_field, self.poi_field = layout.user_field, layout.poi_field
        self.num_scene_features = len(layout.scene_features)
        self.align = cfg.align
        self.temperature = cfg.align_temperature
        self.negatives_ratio = cfg.align_negatives_ratio
        self.inputs = EmbeddedInputs(layout, cfg.embedding_dim)
        self.target_dim = 2 * cfg.embedding_dim  # t = concat(user embedding, POI embedding)
        # the user and POI fields first (they are t), then the other fields in layout order
        others = [f for f in range(layout.num_fields) if f not in (layout.user_field, layout.poi_field)]
        self.register_buffer(
            "field_order", torch.tensor([layout.user_field, layout.poi_field, *others]), persistent=False
        )
        self.scene = SceneAggregator(scene_table, self.target_dim, cfg)
        # concat(s, t, the other features): PLE's own input (every field once, numeric) plus s
        self.network = PleNetwork(self.target_dim + self.inputs.output_dim + extra_inputs, cfg)

    def forward(self, inputs: CtrInputs) -> CtrOutput:
        parts = self.scene_parts(inputs)
        return self.predict(parts, parts.ordered[:, : self.target_dim])

    def scene_parts(self, inputs: CtrInputs) -> SceneParts:
        rows = inputs.scene_rows
        if rows is None or rows.ndim != 2 or rows.shape != (len(inputs), self.num_scene_features):
            got = None if rows is None else tuple(rows.shape)
            raise ValueError(
                f"LARR needs scene_rows of shape ({len(inputs)}, {self.num_scene_features}), got {got}"
            )
        dense, fields = self.inputs(inputs)  # (B, F*D + N), (B, F, D)
        ordered = fields[:, self.field_order].flatten(1)  # (B, F*D): t, then the other fields
        numeric = dense[:, ordered.shape[1] :]  # (B, N)
        # samples of one request (and many requests) share their scene: aggregate each distinct
        # one once, and align each distinct one once (one row of the similarity matrix)
        self.scene.check_rows(rows)
        distinct, inverse = distinct_rows(rows)
        return SceneParts(rows, ordered, numeric, self.scene(distinct), inverse)

    def predict(self, parts: SceneParts, target: Tensor, extra: tuple[Tensor, ...] = ()) -> CtrOutput:
        """PLE over concat(s, t, the other fields, numeric, `extra`), t = `target` (B, 2D), aligned with s."""
        scene = parts.distinct_scenes[parts.inverse]  # (B, 2D)
        align_loss = None
        if self.align and self.training:
            align_loss = symmetric_info_nce(
                parts.distinct_scenes,
                target,
                self.temperature,
                self.sampled_targets(len(target)),
                parts.inverse,
            )
        others = parts.ordered[:, self.target_dim :]
        return task_output(
            self.network(torch.cat([scene, target, others, parts.numeric, *extra], dim=1)), align_loss
        )

    def sampled_targets(self, batch: int) -> Tensor | None:
        """Extra alignment negatives: ratio * B random (user row, POI row) pairs of the embedding
        tables, concatenated like t (uniform over buckets; global torch RNG)."""
        if self.negatives_ratio == 0:
            return None
        users = self.inputs.fields.tables[self.user_field].weight
        pois = self.inputs.fields.tables[self.poi_field].weight
        count = self.negatives_ratio * batch
        user_rows = torch.randint(users.shape[0], (count,), device=users.device)
        poi_rows = torch.randint(pois.shape[0], (count,), device=pois.device)
        return torch.cat([users[user_rows], pois[poi_rows]], dim=1)  # (ratio * B, 2D)
