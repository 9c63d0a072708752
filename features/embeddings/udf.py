"""The embedding UDF: an iterator pandas UDF, text -> struct<vector array<float>, truncated boolean>.

The encoder is loaded once per Python worker (`encoder_runtime.get_encoder` caches it in the
worker's process; Spark reuses Python workers across tasks), on the task's GPU when Spark gave it
one, never once per batch. Each Arrow batch is embedded in length-sorted mini-batches of
`batch_size` texts; callers also sort rows by text length within partitions (`length_sorted`),
so a batch holds texts of similar length and pads little.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.embeddings import encoder_runtime
from features.embeddings.encoder_runtime import EncoderRef

EMBEDDING_TYPE = "struct<vector: array<float>, truncated: boolean>"


def embed_batches(
    batches: Iterator[pd.Series], ref: EncoderRef, batch_size: int, precision: str = "auto"
) -> Iterator[pd.DataFrame]:
    """The UDF body: the encoder is fetched (loaded or cached) once, at the first batch."""
    model = None
    for texts in batches:
        if model is None:
            device, dtype = encoder_runtime.task_device(precision)
            model = encoder_runtime.get_encoder(ref, device, dtype)
        yield encoder_runtime.embed_series(model, texts, batch_size)


def embedding_udf(ref: EncoderRef, batch_size: int = 32, precision: str = "auto"):
    """A pandas UDF over a string column; the result column has fields `vector` and `truncated`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoder_runtime.check_precision(precision)

    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        yield from embed_batches(batches, ref, batch_size, precision)

    return F.pandas_udf(embed, EMBEDDING_TYPE)


def length_sorted(df: DataFrame, text: str, partitions: int) -> DataFrame:
    """Spread rows over `partitions` tasks and sort each by text length (length bucketing)."""
    return df.repartition(partitions).sortWithinPartitions(F.length(text))
