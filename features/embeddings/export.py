"""Compact `.npz` exports of one encoder version's vectors, for CTR training and scoring (numpy
only; see `vectors.py` for the layout and loader):
- features.scene_embeddings -> `_exports/scene_vectors/<encoder_version>.npz`: one matrix per
  scene feature (`larr embed scenes`; small by construction: distinct scene values, thousands);
- features.poi_embeddings / features.user_embeddings -> `_exports/text_vectors/<encoder_version>.npz`:
  one matrix per side, `poi` and `user`, keyed by poi_id / user_id (`larr embed texts`; what
  `larr_plus` reads beside the scene vectors).

An export collects one version's rows to the driver and writes one file under the lakehouse (through
Hadoop's FileSystem for object stores; a local file is replaced atomically), and is logged to the
active MLflow run. The text export is as large as the catalogue and the embedded users: 1M POIs of
a 576-wide encoder are 2.3 GB, so `max_rows` refuses an export the driver should not hold.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.catalog import TableCatalog, is_remote
from features.embeddings.encoder_runtime import EncoderRef
from features.embeddings.vectors import save_scene_vectors

EXPORT_DIR = "_exports/scene_vectors"
TEXT_EXPORT_DIR = "_exports/text_vectors"
# the text tables' sides and id columns (features/embeddings/texts.py writes them)
TEXT_TABLES = {"poi": ("features.poi_embeddings", "poi_id"), "user": ("features.user_embeddings", "user_id")}


def export_path(
    catalog: TableCatalog, encoder_version: str, export_dir: str = "", default_dir: str = EXPORT_DIR
) -> str:
    root = export_dir or f"{catalog.root.rstrip('/')}/{default_dir}"
    return f"{root.rstrip('/')}/{encoder_version}.npz"


def feature_matrices(stored: DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One version's rows -> {feature: (scene ids, (n, dim) vectors)} (collects: small table)."""
    frame = stored.where(F.col("vector").isNotNull()).select("feature", "scene_id", "vector").toPandas()
    return {
        feature: (
            group["scene_id"].to_numpy(np.int64),
            np.stack(group["vector"].to_list()).astype(np.float32),
        )
        for feature, group in frame.groupby("feature", sort=True)
    }


def export_scene_vectors(
    spark: SparkSession, catalog: TableCatalog, ref: EncoderRef, table_version: int, export_dir: str = ""
) -> str:
    """Write the export of `ref.version` from features.scene_embeddings at `table_version`."""
    stored = catalog.read(spark, "features.scene_embeddings", version=table_version).where(
        F.col("encoder_version") == ref.version
    )
    meta = {
        "dim": ref.dim,
        "encoder_uri": ref.uri,
        "encoder_version": ref.version,
        "table_version": table_version,
    }
    path = export_path(catalog, ref.version, export_dir)
    _save(spark, path, feature_matrices(stored), meta)
    return path


class ExportTooLarge(ValueError):
    pass


def text_matrices(
    spark: SparkSession, catalog: TableCatalog, encoder_version: str, versions: dict[str, int], max_rows: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{side: (ids, (n, dim) vectors)} of one encoder version, each side's table at `versions[side]`."""
    per_side = {}
    for side, version in sorted(versions.items()):
        table, id_column = TEXT_TABLES[side]
        stored = catalog.read(spark, table, version=version).where(
            (F.col("encoder_version") == encoder_version) & F.col("vector").isNotNull()
        )
        rows = stored.count()
        if rows > max_rows:
            raise ExportTooLarge(
                f"{table} holds {rows} vectors of encoder version {encoder_version}, more than "
                f"max_export_rows={max_rows}: raise it if the driver can hold them, or embed fewer texts"
            )
        frame = stored.select(id_column, "vector").toPandas()
        vectors = np.stack(frame["vector"].to_list()) if rows else np.zeros((0, 0))
        per_side[side] = (frame[id_column].to_numpy(np.int64), vectors.astype(np.float32))
    return per_side


def export_text_vectors(
    spark: SparkSession,
    catalog: TableCatalog,
    ref: EncoderRef,
    versions: dict[str, int],
    max_rows: int,
    export_dir: str = "",
) -> str:
    """Write the text export of `ref.version`: each side of `versions` ({"poi"|"user": table version})."""
    meta = {
        "dim": ref.dim,
        "encoder_uri": ref.uri,
        "encoder_version": ref.version,
        "table_versions": versions,
    }
    path = export_path(catalog, ref.version, export_dir, TEXT_EXPORT_DIR)
    _save(spark, path, text_matrices(spark, catalog, ref.version, versions, max_rows), meta)
    return path


def _save(spark: SparkSession, path: str, per_feature: dict, meta: dict) -> None:
    if is_remote(path):
        buffer = io.BytesIO()
        save_scene_vectors(buffer, per_feature, meta)
        _write_remote_bytes(spark, path, buffer.getvalue())
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=Path(path).parent, suffix=".npz", delete=False) as tmp:
            save_scene_vectors(tmp, per_feature, meta)
        Path(tmp.name).replace(path)  # readers never see a half-written file


def log_export(path: str, artifact_path: str = "scene_vectors") -> None:
    """Attach a local export to the active MLflow run (if any)."""
    import mlflow

    if mlflow.active_run() is not None and not is_remote(path):
        mlflow.log_artifact(path, artifact_path=artifact_path)


def _write_remote_bytes(spark: SparkSession, uri: str, payload: bytes) -> None:
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark._jsc.hadoopConfiguration()).create(path, True)
    try:
        stream.write(bytearray(payload))
    finally:
        stream.close()
