"""The compact scene-vector export that CTR training and scoring load: numpy only (no Spark).

One `.npz` file per encoder version (`<lakehouse>/_exports/scene_vectors/<encoder_version>.npz`,
written by `larr embed scenes`). Per scene feature it holds the feature's scene ids (the same
xxhash64 as the `scene_<feature>_id` columns of the CTR samples), sorted, and a matrix with one
row per id plus ONE EXTRA LAST ROW: the feature's "unknown" vector, used for ids that were not
embedded (values first seen at scoring time). The unknown vector is the L2-normalised mean of the
feature's vectors (the centre of the feature's values, a unit vector like every other row; zeros
when the feature has no vectors). Vectors are never joined into per-row samples: a model maps ids
to rows (`SceneVectors.rows`) and looks rows up in the matrix (e.g. `nn.Embedding.from_pretrained`).

    >>> import numpy as np, io
    >>> buffer = io.BytesIO()
    >>> save_scene_vectors(buffer, {"weather": (np.array([7, 3]), np.eye(2, dtype=np.float32))}, {})
    >>> _ = buffer.seek(0)
    >>> weather = load_scene_vectors(buffer)["weather"]
    >>> weather.ids.tolist(), weather.matrix.shape
    ([3, 7], (3, 2))
    >>> rows, unknown = weather.rows([7, 3, 99])
    >>> rows.tolist(), unknown
    ([1, 0, 2], 1)
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

FORMAT = 1
META_KEY = "meta"
UNKNOWN = "l2-normalised mean of the feature's vectors (zeros when it has none)"


class SceneVectors(NamedTuple):
    ids: np.ndarray  # (n,) int64, sorted ascending
    matrix: np.ndarray  # (n + 1, dim) float32: row i is ids[i]'s vector, row n the unknown vector

    @property
    def unknown_row(self) -> int:
        return len(self.ids)

    def rows(self, ids) -> tuple[np.ndarray, int]:
        """Matrix row of each id (`unknown_row` for ids not in the export) and the unknown count."""
        query = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(query.shape, dtype=np.int64), int(query.size)
        position = np.searchsorted(self.ids, query)
        found = self.ids[np.minimum(position, len(self.ids) - 1)] == query
        return np.where(found, position, self.unknown_row).astype(np.int64), int((~found).sum())

    def lookup(self, ids) -> tuple[np.ndarray, int]:
        """(len(ids), dim) vectors and how many ids were unknown."""
        rows, unknown = self.rows(ids)
        return self.matrix[rows], unknown


def unknown_vector(vectors: np.ndarray, dim: int) -> np.ndarray:
    if len(vectors) == 0:
        return np.zeros(dim, dtype=np.float32)
    mean = vectors.astype(np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def save_scene_vectors(target, per_feature: dict[str, tuple[np.ndarray, np.ndarray]], meta: dict) -> None:
    """Write `{feature: (ids, (n, dim) vectors)}` and `meta` (JSON-able) to a path or binary file."""
    arrays: dict[str, np.ndarray] = {}
    dims = {np.asarray(v).shape[1] for _, v in per_feature.values() if np.asarray(v).ndim == 2}
    dim = int(meta.get("dim") or (dims.pop() if len(dims) == 1 else 0))
    for feature, (ids, vectors) in per_feature.items():
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), dim)
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"feature {feature}: duplicate scene ids")
        order = np.argsort(ids, kind="stable")
        arrays[f"ids__{feature}"] = ids[order]
        arrays[f"matrix__{feature}"] = np.vstack([vectors[order], unknown_vector(vectors, dim)[None, :]])
    header = {"format": FORMAT, "dim": dim, "features": list(per_feature), "unknown": UNKNOWN, **meta}
    arrays[META_KEY] = np.array(json.dumps(header))
    np.savez(target, **arrays)


def load_scene_vectors(path) -> dict[str, SceneVectors]:
    """`{feature: SceneVectors(ids, matrix)}` from an export (a path or binary file)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data[META_KEY]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: scene vector export format {meta.get('format')!r}, expected {FORMAT}")
        return {f: SceneVectors(data[f"ids__{f}"], data[f"matrix__{f}"]) for f in meta["features"]}


def load_scene_meta(path) -> dict:
    """The export's header: format, dim, features, unknown, encoder_uri, encoder_version."""
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data[META_KEY]))
