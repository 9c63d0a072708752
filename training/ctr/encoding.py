"""Sample rows -> `CtrInputs`: one encoding for training batches and for the scoring model.

Categorical fields are hashed into per-field embedding tables (`id mod buckets`): user and POI
ids, the xxhash64 ids of the user / POI / device fields, the price level, the list position and
the 10 scene feature ids (every model sees the scene as ordinary ID features; LARR adds their LLM
vectors). Counts enter as log1p, rates as they are. For LARR every scene value is also mapped to
its row in the frozen scene table (the stage-3 export of one encoder version, features
concatenated in `SCENE_FEATURES` order); an id the export does not hold gets its feature's
unknown row and is counted.

Training batches already carry the `*_id` columns Spark computed; a scoring request carries the
raw strings, and `with_hashed_ids` derives the same ids (Spark's xxhash64, re-implemented in
`hashing.py`, over the distinct values only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from etl.tokens import SCENE_FEATURES
from features.embeddings.vectors import SceneVectors
from training.ctr.inputs import CtrInputs, FeatureLayout

# Spelled out, not imported from the Spark jobs (features.samples, features.stats), which the scoring
# model does not load;
# tests/training/ctr/test_encoding.py checks them against features.samples and features.stats.
HASHED_FIELDS = ("user_gender", "user_age_band", "user_home_city", "user_member_level", "device",
                 "poi_city", "poi_cuisine")  # fmt: skip
_ENTITIES, _COUNTS, _RATES = ("user", "poi", "user_poi"), ("impressions", "clicks", "orders"), ("ctr", "cvr")
COUNT_COLUMNS = tuple(f"{prefix}_{name}" for prefix in _ENTITIES for name in _COUNTS)
RATE_COLUMNS = tuple(f"{prefix}_{name}" for prefix in _ENTITIES for name in _RATES)
NUMERIC_COLUMNS = (*COUNT_COLUMNS, *RATE_COLUMNS)


def id_column(feature: str) -> str:
    return f"scene_{feature}_id"  # as features.scene_values.id_column


def value_column(feature: str) -> str:
    return f"scene_{feature}"  # as features.scene_values.value_column


SCENE_ID_COLUMNS = tuple(id_column(f) for f in SCENE_FEATURES)
SCENE_VALUE_COLUMNS = tuple(value_column(f) for f in SCENE_FEATURES)
SMALL_INT_FIELDS = ("poi_price_level", "position")
LABEL_COLUMNS = ("click", "ctcvr", "neg_rate")
# the raw columns a scoring request must hold (the strings behind the hashed ids, scene values)
RAW_COLUMNS = ("user_id", "poi_id", *HASHED_FIELDS, *SMALL_INT_FIELDS, *NUMERIC_COLUMNS, *SCENE_VALUE_COLUMNS)


class FeatureError(ValueError):
    pass


@dataclass(frozen=True)
class EncodingConfig:
    id_buckets: int = 100_000  # embedding rows for user_id and poi_id
    field_buckets: int = 1_000  # embedding rows for every other hashed field and scene id
    small_buckets: int = 64  # price level and list position

    def __post_init__(self) -> None:
        if min(self.id_buckets, self.field_buckets, self.small_buckets) < 2:
            raise ValueError("id_buckets, field_buckets and small_buckets must be >= 2")


def field_columns() -> tuple[str, ...]:
    """The categorical columns of a sample, in `CtrInputs.categorical` order."""
    return (
        "user_id",
        "poi_id",
        *[f"{name}_id" for name in HASHED_FIELDS],
        *SMALL_INT_FIELDS,
        *SCENE_ID_COLUMNS,
    )


def build_layout(cfg: EncodingConfig, with_scene: bool) -> FeatureLayout:
    fields = field_columns()
    buckets = {"user_id": cfg.id_buckets, "poi_id": cfg.id_buckets}
    buckets |= {name: cfg.small_buckets for name in SMALL_INT_FIELDS}
    return FeatureLayout(
        field_names=fields,
        field_buckets=tuple(buckets.get(name, cfg.field_buckets) for name in fields),
        numeric_names=NUMERIC_COLUMNS,
        user_field=fields.index("user_id"),
        poi_field=fields.index("poi_id"),
        scene_features=SCENE_FEATURES if with_scene else (),
    )


def training_columns(with_texts: bool = False) -> list[str]:
    """What a trainer reads from samples.ctr."""
    columns = [*field_columns(), *NUMERIC_COLUMNS, *LABEL_COLUMNS]
    if with_texts:
        from training.ctr.prompts import PROMPT_COLUMNS

        columns += [c for c in PROMPT_COLUMNS if c not in columns]
    return columns


class SceneTable:
    """The frozen scene table of one export: every feature's matrix stacked, and id -> row lookup."""

    def __init__(self, vectors: dict[str, SceneVectors]) -> None:
        missing = [f for f in SCENE_FEATURES if f not in vectors]
        if missing:
            raise FeatureError(f"scene vector export lacks the scene features {missing}")
        self.vectors = vectors
        sizes = [len(vectors[f].matrix) for f in SCENE_FEATURES]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.matrix = np.vstack([vectors[f].matrix for f in SCENE_FEATURES]).astype(np.float32)
        # each feature's unknown vector is its matrix's last row
        self.unknown_rows = self.offsets + np.asarray([len(vectors[f].ids) for f in SCENE_FEATURES])

    def rows(self, scene_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, n) scene ids -> (B, n) table rows and the unknown count per feature."""
        rows = np.empty(scene_ids.shape, dtype=np.int64)
        unknown = np.zeros(len(SCENE_FEATURES), dtype=np.int64)
        for k, feature in enumerate(SCENE_FEATURES):  # a loop over the 10 features, not rows
            local, unknown[k] = self.vectors[feature].rows(scene_ids[:, k])
            rows[:, k] = local + self.offsets[k]
        return rows, unknown


def _column(batch: dict, name: str, source: str) -> np.ndarray:
    try:
        return np.asarray(batch[name])
    except KeyError:
        raise FeatureError(f"{source} has no column {name!r}") from None


def encode(
    batch: dict,
    layout: FeatureLayout,
    scene_table: SceneTable | None = None,
    texts: list[str] | None = None,
    source: str = "batch",
) -> tuple[CtrInputs, np.ndarray]:
    """A batch (`dict` or DataFrame of sample columns) -> (CtrInputs, unknown scene values per feature)."""
    columns = [_column(batch, name, source).astype(np.int64) for name in layout.field_names]
    buckets = np.asarray(layout.field_buckets, dtype=np.int64)
    categorical = np.mod(np.stack(columns, axis=1), buckets)  # numpy mod is >= 0 for negative hashes
    numeric = np.stack([_column(batch, name, source).astype(np.float64) for name in layout.numeric_names], 1)
    counts = np.asarray([name in COUNT_COLUMNS for name in layout.numeric_names])
    if not np.isfinite(numeric).all():
        bad = [n for n, ok in zip(layout.numeric_names, np.isfinite(numeric).all(0), strict=True) if not ok]
        raise FeatureError(f"{source}: column {bad[0]!r} holds null or non-finite values")
    numeric[:, counts] = np.log1p(np.maximum(numeric[:, counts], 0.0))
    scene_rows, unknown = None, np.zeros(len(SCENE_FEATURES), dtype=np.int64)
    if layout.scene_features:
        if scene_table is None:
            raise FeatureError("the model needs scene vectors but none were given")
        scene_ids = np.stack(
            [_column(batch, id_column(f), source).astype(np.int64) for f in SCENE_FEATURES], 1
        )
        rows, unknown = scene_table.rows(scene_ids)
        scene_rows = torch.from_numpy(rows)
    inputs = CtrInputs(
        categorical=torch.from_numpy(categorical),
        numeric=torch.from_numpy(numeric.astype(np.float32)),
        scene_rows=scene_rows,
        texts=texts,
    )
    return inputs, unknown


def with_hashed_ids(frame, source: str = "request"):
    """A scoring request (pandas, raw strings) plus the `*_id` columns Spark computes for samples."""
    from training.ctr.hashing import spark_xxhash64

    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    if missing:
        raise FeatureError(f"{source} has no column {missing[0]!r} (needs {', '.join(RAW_COLUMNS)})")
    out = frame.copy()
    for name in HASHED_FIELDS:
        out[f"{name}_id"] = spark_xxhash64(name, frame[name].to_numpy(dtype=object))
    for feature in SCENE_FEATURES:
        out[id_column(feature)] = spark_xxhash64(feature, frame[value_column(feature)].to_numpy(dtype=object))
    return out
