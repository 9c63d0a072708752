"""What every CTR model consumes and returns: the contract between the feature encoding
(`features_encoding.py`, shared by training and the scoring model) and the models.

A batch of samples becomes `CtrInputs`: one bucket index per categorical field (ids hashed into
that field's embedding table), normalised numeric features, for LARR the row of every scene
feature's value in the model's frozen scene table, for `larr_plus` also the user's and the POI's
rows in its frozen text table, and for the P5-style model the prompt texts.
A model returns `CtrOutput`: one CTR and one CTCVR logit per sample (in the negatively sampled
space the model is trained in) and, for LARR, its unweighted alignment loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class FeatureLayout:
    """The shapes a model is built for (saved with the model, so scoring rebuilds the same one)."""

    field_names: tuple[str, ...]  # categorical fields, in column order of CtrInputs.categorical
    field_buckets: tuple[int, ...]  # embedding-table rows of each field
    numeric_names: tuple[str, ...]  # in column order of CtrInputs.numeric
    user_field: int  # index of user_id in field_names (LARR's alignment target)
    poi_field: int  # index of poi_id in field_names
    scene_features: tuple[str, ...] = ()  # the n scene features of CtrInputs.scene_rows (LARR)
    # from the dataset schema (core.dataset_schema.sample_fields), so scoring rebuilds the inputs
    hashed_fields: tuple[str, ...] = ()  # string columns behind the `<name>_id` fields
    small_int_fields: tuple[str, ...] = ()  # integer columns embedded by value
    log1p_numeric: tuple[str, ...] = ()  # numeric columns that enter as log1p
    user_columns: tuple[str, ...] = ()  # what a P5 prompt says of the user (and the event's fields)
    poi_columns: tuple[str, ...] = ()  # what a P5 prompt says of the shop
    all_scene_features: tuple[str, ...] = ()  # every scene feature of the samples (P5 prompts, scoring)
    # request-item features among numeric_names: (name, derive, *scoring inputs), so scoring derives
    # a missing one from raw rows (training/ctr/request_item.py)
    request_item: tuple[tuple[str, ...], ...] = ()
    text_sides: tuple[str, ...] = ()  # larr_plus: the sides (user, poi) of CtrInputs.text_rows

    def __post_init__(self) -> None:  # a layout read back from JSON holds lists
        object.__setattr__(self, "request_item", tuple(tuple(r) for r in self.request_item))

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    @property
    def num_numeric(self) -> int:
        return len(self.numeric_names)


@dataclass
class CtrInputs:
    categorical: torch.Tensor  # (B, F) int64 bucket index per field
    numeric: torch.Tensor  # (B, N) float32
    scene_rows: torch.Tensor | None = None  # (B, n) int64 row of each scene value in the scene table
    texts: list[str] | None = None  # P5-style prompts, one per sample
    text_rows: torch.Tensor | None = None  # (B, sides) larr_plus: the user's / POI's row in the text table

    def to(self, device: torch.device | str) -> CtrInputs:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return CtrInputs(
            move(self.categorical),
            move(self.numeric),
            move(self.scene_rows),
            self.texts,
            move(self.text_rows),
        )

    def __len__(self) -> int:
        return int(self.categorical.shape[0])


class CtrOutput(NamedTuple):
    ctr_logit: torch.Tensor  # (B,) logit of P(click) in the sampled space
    ctcvr_logit: torch.Tensor  # (B,) logit of P(click and order) in the sampled space
    align_loss: torch.Tensor | None = None  # LARR: symmetric InfoNCE (unweighted); None otherwise


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of every CTR model (each reads the fields it needs)."""

    embedding_dim: int = 16  # per categorical field
    hidden: tuple[int, ...] = (256, 128)  # Wide&Deep / DeepFM deep part
    dropout: float = 0.0
    # PLE (and LARR's PLE): customised gate control, `ple_levels` extraction layers
    shared_experts: int = 2
    task_experts: int = 2
    expert_hidden: tuple[int, ...] = (128, 64)
    ple_levels: int = 2
    tower_hidden: tuple[int, ...] = (64,)
    # LARR: scene aggregation and alignment
    scene_layers: int = 1  # bidirectional transformer encoder layers over [agg; e_1..e_n]
    scene_heads: int = 4
    scene_ffn: int = 256
    pooling: str = "agg_token"  # agg_token | mean
    align: bool = True  # False = the no_al ablation: plain concatenation, no alignment loss
    align_temperature: float = 0.1
    align_negatives_ratio: int = 0  # extra sampled negatives per sample, beyond the in-batch ones
    # LARR+: also add the user's / POI's projected text vectors to t (and so to the alignment)
    text_in_target: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in ("agg_token", "mean"):
            raise ValueError(f"pooling must be agg_token or mean, got {self.pooling!r}")
        if self.align_temperature <= 0:
            raise ValueError(f"align_temperature must be > 0, got {self.align_temperature}")
        if self.align_negatives_ratio < 0:
            raise ValueError(f"align_negatives_ratio must be >= 0, got {self.align_negatives_ratio}")
        if self.embedding_dim < 1 or self.ple_levels < 1 or self.scene_layers < 1:
            raise ValueError("embedding_dim, ple_levels and scene_layers must be >= 1")
