"""Sample rows -> `CtrInputs`: one encoding for training batches and for the scoring model.

The fields come from the dataset schema (`core.dataset_schema.sample_fields`, read from the
lakehouse by the trainer and saved with the model in its `FeatureLayout`). Categorical fields are
hashed into per-field embedding tables (`id mod buckets`): user and POI ids, the xxhash64 ids of
the declared string fields, the declared integer fields (and the list position) by value, and
the scene feature ids (every model sees the scene as ordinary ID features; LARR adds their LLM
vectors). Counts enter as log1p, rates as they are, declared numeric fields as declared, the
request-item features (distance_km as log1p, open_now as it is) unless `request_item: false`,
and any `extra_numeric` columns as they are. For
LARR every scene value is also mapped to its row in the frozen scene table (the stage-3 export
of one encoder version, features concatenated in the schema's order); an id the export does not
hold gets its feature's unknown row and is counted. For `larr_plus` the user and POI ids are also
mapped to their rows in the frozen text table (the `larr embed texts` export of the same encoder,
sides in `TEXT_SIDES` order); an id without a text vector gets its side's unknown row (the mean).

Training batches already carry the `*_id` columns Spark computed; a scoring request carries the
raw strings, and `with_hashed_ids` derives the same ids (Spark's xxhash64, re-implemented in
`hashing.py`, over the distinct values only); a request without a request-item column carries
its raw inputs and `with_request_item` derives it (`request_item.py`, Spark's semantics in numpy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from core.dataset_schema import SampleFields
from features.embeddings.vectors import SceneVectors
from training.ctr.inputs import CtrInputs, FeatureLayout

# The statistics' columns, spelled out, not imported from the Spark job (features.stats), which the
# scoring model does not load; tests/training/ctr/test_encoding.py checks them against it.
_ENTITIES, _COUNTS, _RATES = ("user", "poi", "user_poi"), ("impressions", "clicks", "orders"), ("ctr", "cvr")
COUNT_COLUMNS = tuple(f"{prefix}_{name}" for prefix in _ENTITIES for name in _COUNTS)
RATE_COLUMNS = tuple(f"{prefix}_{name}" for prefix in _ENTITIES for name in _RATES)
NUMERIC_COLUMNS = (*COUNT_COLUMNS, *RATE_COLUMNS)


def id_column(feature: str) -> str:
    return f"scene_{feature}_id"  # as features.scene_values.id_column


def value_column(feature: str) -> str:
    return f"scene_{feature}"  # as features.scene_values.value_column


LABEL_COLUMNS = ("click", "ctcvr", "neg_rate")
# the sides of the text export (features/embeddings/export.py TEXT_TABLES) and the id each is keyed by
TEXT_SIDES = {"user": "user_id", "poi": "poi_id"}


class FeatureError(ValueError):
    pass


@dataclass(frozen=True)
class EncodingConfig:
    id_buckets: int = 100_000  # embedding rows for user_id and poi_id
    field_buckets: int = 1_000  # embedding rows for every other hashed field and scene id
    small_buckets: int = 64  # price level and list position
    request_item: bool = True  # the schema's request-item features as numeric inputs; False: left out
    # more numeric sample columns as inputs, as they are (`larr gap`'s oracles: the truth table's
    # semantic logit or collaborative score joined into its samples); a scoring request needs them too
    extra_numeric: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if min(self.id_buckets, self.field_buckets, self.small_buckets) < 2:
            raise ValueError("id_buckets, field_buckets and small_buckets must be >= 2")
        if len(set(self.extra_numeric)) != len(self.extra_numeric):
            raise ValueError(f"extra_numeric names a column twice: {list(self.extra_numeric)}")


def build_layout(
    cfg: EncodingConfig,
    fields: SampleFields,
    scene_features: tuple[str, ...],
    with_scene: bool,
    text_sides: tuple[str, ...] = (),
) -> FeatureLayout:
    """The layout of a dataset's samples: `fields` and `scene_features` from its schema; `text_sides`
    (larr_plus) the sides of the text export the model reads, in `TEXT_SIDES` order."""
    unknown = [side for side in text_sides if side not in TEXT_SIDES]
    if unknown:
        raise FeatureError(f"text side {unknown[0]!r} is not one of {', '.join(TEXT_SIDES)}")
    names = (
        "user_id",
        "poi_id",
        *[f"{name}_id" for name in fields.hashed],
        *fields.small_int,
        *[id_column(f) for f in scene_features],
    )
    buckets = {"user_id": cfg.id_buckets, "poi_id": cfg.id_buckets}
    buckets |= {name: cfg.small_buckets for name in fields.small_int}
    user_side = {*fields.user_fields.values(), *fields.event_fields} - {"position"}
    derived = fields.request_item if cfg.request_item else ()
    left_out = {f.name for f in fields.request_item} - {f.name for f in derived}
    return FeatureLayout(
        field_names=names,
        field_buckets=tuple(buckets.get(name, cfg.field_buckets) for name in names),
        numeric_names=(
            *NUMERIC_COLUMNS,
            *[c for c in fields.numeric if c not in left_out],
            *[c for c in cfg.extra_numeric if c not in NUMERIC_COLUMNS and c not in fields.numeric],
        ),
        user_field=names.index("user_id"),
        poi_field=names.index("poi_id"),
        scene_features=tuple(scene_features) if with_scene else (),
        hashed_fields=fields.hashed,
        small_int_fields=fields.small_int,
        log1p_numeric=(*COUNT_COLUMNS, *[c for c in fields.log1p if c not in left_out]),
        user_columns=(
            "user_id",
            *[c for c in (*fields.user_fields.values(), *fields.event_fields) if c in user_side],
        ),
        poi_columns=("poi_id", *fields.item_fields.values()),
        all_scene_features=tuple(scene_features),
        request_item=tuple((f.name, f.derive, *f.inputs) for f in derived),
        text_sides=tuple(side for side in TEXT_SIDES if side in text_sides),
    )


def raw_columns(layout: FeatureLayout) -> tuple[str, ...]:
    """The columns a scoring request must hold: ids, the strings behind the hashed ids, the integer
    and numeric fields, the scene values. A request-item feature may be replaced by its inputs
    (`request_item_inputs`), from which `with_request_item` derives it."""
    return (
        "user_id",
        "poi_id",
        *layout.hashed_fields,
        *layout.small_int_fields,
        *layout.numeric_names,
        *[value_column(f) for f in layout.all_scene_features],
    )


def request_item_inputs(layout: FeatureLayout) -> tuple[str, ...]:
    """The raw inputs of the layout's request-item features (not otherwise request columns), once each."""
    own = set(raw_columns(layout))
    inputs = [c for _, _, *columns in layout.request_item for c in columns if c not in own]
    return tuple(dict.fromkeys(inputs))


def with_request_item(frame, layout: FeatureLayout, source: str = "request"):
    """A scoring request (pandas) plus the request-item columns it lacks, derived from its raw inputs
    exactly as `etl samples` derives them."""
    from training.ctr.request_item import with_request_item as derive

    return derive(frame, layout.request_item, error=FeatureError, source=source)


def training_columns(layout: FeatureLayout, with_texts: bool = False) -> list[str]:
    """What a trainer reads from samples.ctr."""
    columns = [*layout.field_names, *layout.numeric_names, *LABEL_COLUMNS]
    if with_texts:
        from training.ctr.prompts import prompt_columns

        columns += [c for c in prompt_columns(layout) if c not in columns]
    return columns


class SceneTable:
    """A frozen vector table of one export: every feature's matrix stacked, and id -> row lookup.
    The scene table's features are the scene features; the text table's are the sides (user, poi)."""

    def __init__(self, vectors: dict[str, SceneVectors], scene_features: tuple[str, ...]) -> None:
        missing = [f for f in scene_features if f not in vectors]
        if missing:
            raise FeatureError(f"scene vector export lacks the scene features {missing}")
        self.features = tuple(scene_features)
        self.vectors = vectors
        sizes = [len(vectors[f].matrix) for f in self.features]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.matrix = np.vstack([vectors[f].matrix for f in self.features]).astype(np.float32)
        # each feature's unknown vector is its matrix's last row
        self.unknown_rows = self.offsets + np.asarray([len(vectors[f].ids) for f in self.features])

    def rows(self, scene_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, n) scene ids -> (B, n) table rows and the unknown count per feature."""
        rows = np.empty(scene_ids.shape, dtype=np.int64)
        unknown = np.zeros(len(self.features), dtype=np.int64)
        for k, feature in enumerate(self.features):  # a loop over the n features, not rows
            local, unknown[k] = self.vectors[feature].rows(scene_ids[:, k])
            rows[:, k] = local + self.offsets[k]
        return rows, unknown


class FrozenTables(NamedTuple):
    """A model's frozen vector tables: the scene table (LARR, LARR+), the text table (LARR+)."""

    scene: SceneTable | None = None
    text: SceneTable | None = None

    @classmethod
    def load(cls, scene_vectors: str | None, text_vectors: str | None, scene_features: tuple[str, ...]):
        """From the exports' paths (None: no such table); the text table holds the export's sides."""
        from features.embeddings.vectors import load_scene_vectors

        scene = SceneTable(load_scene_vectors(scene_vectors), scene_features) if scene_vectors else None
        text = None
        if text_vectors:
            by_side = load_scene_vectors(text_vectors)
            text = SceneTable(by_side, tuple(side for side in TEXT_SIDES if side in by_side))
        return cls(scene, text)

    def model_inputs(self) -> tuple:
        """`build_model`'s scene_table and text_table arguments."""
        scene = None if self.scene is None else self.scene.matrix
        if self.text is None:
            return scene, None
        side_rows = tuple(len(self.text.vectors[side].matrix) for side in self.text.features)
        return scene, (self.text.matrix, side_rows)


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
    text_table: SceneTable | None = None,
) -> tuple[CtrInputs, np.ndarray]:
    """A batch (`dict` or DataFrame of sample columns) -> (CtrInputs, unknown scene values per feature)."""
    columns = [_column(batch, name, source).astype(np.int64) for name in layout.field_names]
    buckets = np.asarray(layout.field_buckets, dtype=np.int64)
    categorical = np.mod(np.stack(columns, axis=1), buckets)  # numpy mod is >= 0 for negative hashes
    numeric = np.stack([_column(batch, name, source).astype(np.float64) for name in layout.numeric_names], 1)
    counts = np.asarray([name in layout.log1p_numeric for name in layout.numeric_names], dtype=bool)
    if not np.isfinite(numeric).all():
        bad = [n for n, ok in zip(layout.numeric_names, np.isfinite(numeric).all(0), strict=True) if not ok]
        raise FeatureError(f"{source}: column {bad[0]!r} holds null or non-finite values")
    numeric[:, counts] = np.log1p(np.maximum(numeric[:, counts], 0.0))
    scene_rows, unknown = None, np.zeros(len(layout.scene_features), dtype=np.int64)
    if layout.scene_features:
        if scene_table is None:
            raise FeatureError("the model needs scene vectors but none were given")
        scene_ids = np.stack(
            [_column(batch, id_column(f), source).astype(np.int64) for f in layout.scene_features], 1
        )
        rows, unknown = scene_table.rows(scene_ids)
        scene_rows = torch.from_numpy(rows)
    text_rows = None
    if layout.text_sides:
        if text_table is None:
            raise FeatureError("the model needs text vectors (larr embed texts) but none were given")
        ids = np.stack([_column(batch, TEXT_SIDES[s], source).astype(np.int64) for s in layout.text_sides], 1)
        text_rows = torch.from_numpy(text_table.rows(ids)[0])  # new users and shops: their side's mean
    inputs = CtrInputs(
        categorical=torch.from_numpy(categorical),
        numeric=torch.from_numpy(numeric.astype(np.float32)),
        scene_rows=scene_rows,
        texts=texts,
        text_rows=text_rows,
    )
    return inputs, unknown


def with_hashed_ids(frame, layout: FeatureLayout, source: str = "request") -> dict[str, np.ndarray]:
    """A scoring request (pandas, raw strings) as {column: array}: its raw columns plus the `*_id`
    columns Spark computes for samples, what `encode` reads. A dict, not a DataFrame: inserting
    columns into a frame costs more than hashing a request's 100 rows (`larr bench ctr`)."""
    from training.ctr.hashing import spark_xxhash64

    needed = raw_columns(layout)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise FeatureError(f"{source} has no column {missing[0]!r} (needs {', '.join(needed)})")
    wanted = set(needed)
    out = {name: column.to_numpy() for name, column in frame.items() if name in wanted}
    for name in layout.hashed_fields:
        out[f"{name}_id"] = spark_xxhash64(name, out[name])
    for feature in layout.all_scene_features:
        out[id_column(feature)] = spark_xxhash64(feature, out[value_column(feature)])
    return out
