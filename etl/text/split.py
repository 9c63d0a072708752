"""The deterministic held-out split shared by the corpus and the pair builder.

A row's split is a hash of (seed, kind, id): the same POI (or user) is held out in every table
built with the same seed, whatever the partitioning or the order rows arrive in.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from core.randomness import uniform

TRAIN, HELDOUT = "train", "heldout"
SPLITS = (TRAIN, HELDOUT)


def heldout_split(seed: int, fraction: float, kind: str, key: Column | str) -> Column:
    """'heldout' for a hash-chosen `fraction` of keys of one kind (poi, user, general), else 'train'."""
    return F.when(uniform(seed, f"heldout_{kind}", key) < F.lit(fraction), F.lit(HELDOUT)).otherwise(
        F.lit(TRAIN)
    )


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
