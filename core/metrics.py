"""Ranking metrics over Spark DataFrames without collecting rows.

AUC is computed from a histogram of the score: rows are counted per score bin by Spark, only
the histogram (at most `bins` rows, independent of the data size) reaches the driver, and the
Mann-Whitney statistic is taken over bins with ties inside a bin counted as one half.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def auc_from_histogram(positives: np.ndarray, negatives: np.ndarray) -> float:
    """AUC from per-bin counts of positives and negatives, bins in ascending score order."""
    positives = np.asarray(positives, dtype=np.float64)
    negatives = np.asarray(negatives, dtype=np.float64)
    n_pos, n_neg = positives.sum(), negatives.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    negatives_below = np.cumsum(negatives) - negatives
    return float(np.sum(positives * (negatives_below + 0.5 * negatives)) / (n_pos * n_neg))


def binned_auc(df: DataFrame, score: str, label: str, bins: int = 1_000_000) -> float:
    """AUC of a score in [0, 1] against a 0/1 label, exact up to ties within 1/bins."""
    hist = (
        df.select(
            F.least(F.floor(F.col(score) * bins), F.lit(bins - 1)).alias("bin"), F.col(label).alias("y")
        )
        .groupBy("bin")
        .agg(F.sum("y").alias("pos"), F.sum(1 - F.col("y")).alias("neg"))
        .orderBy("bin")
        .toPandas()
    )
    return auc_from_histogram(hist["pos"].to_numpy(), hist["neg"].to_numpy())
