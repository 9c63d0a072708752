"""features.scene_embeddings (one encoder version) -> `<encoder_version>.npz`, the compact export;
one file per encoder version; see `vectors.py` for its layout and loader.

The table is small by construction (distinct scene values, thousands of rows): the export
collects one version's (feature, scene_id, vector) rows to the driver and writes one file under
the lakehouse (through Hadoop's FileSystem for object stores), and logs it to the active MLflow run.
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


def export_path(catalog: TableCatalog, encoder_version: str, export_dir: str = "") -> str:
    root = export_dir or f"{catalog.root.rstrip('/')}/{EXPORT_DIR}"
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
    if is_remote(path):
        buffer = io.BytesIO()
        save_scene_vectors(buffer, feature_matrices(stored), meta)
        _write_remote_bytes(spark, path, buffer.getvalue())
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=Path(path).parent, suffix=".npz", delete=False) as tmp:
            save_scene_vectors(tmp, feature_matrices(stored), meta)
        Path(tmp.name).replace(path)  # readers never see a half-written file
    return path


def log_export(path: str) -> None:
    """Attach a local export to the active MLflow run (if any)."""
    import mlflow

    if mlflow.active_run() is not None and not is_remote(path):
        mlflow.log_artifact(path, artifact_path="scene_vectors")


def _write_remote_bytes(spark: SparkSession, uri: str, payload: bytes) -> None:
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark._jsc.hadoopConfiguration()).create(path, True)
    try:
        stream.write(bytearray(payload))
    finally:
        stream.close()
