"""P5-style prompts: one short sentence per CTR sample, for the LLM baseline (`models/p5.py`).

The prompt states the user (id, gender, age band, home city, member level, device), the shop (id,
city, cuisine, price level), the list position and the 10 scene values in `SCENE_FEATURES` order,
and ends with "the user will", whose next word the model scores: " no", " click" or " order":

    user 123 female 25-34 Guangzhou gold ios; shop 456 Guangzhou Cantonese price 2; position 3;
    scene Guangzhou business district lunch weekday rainy mild 10-20C spring in home city office
    Sichuan; the user will

Fields are separated by spaces, groups by ";" (fixed order, so the fine-tuned model knows which
word is which): about 60-70 SmolLM2 tokens, most of them the digits of ids and value words; commas
would add 15 more, and a CPU forward pass costs per token. Built with vectorised pandas string
concatenation (no loop over rows). A null value reads "unknown".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from etl.tokens import SCENE_FEATURES

MISSING = "unknown"
ENDING = "; the user will"
USER_COLUMNS = ("user_id", "user_gender", "user_age_band", "user_home_city", "user_member_level", "device")
POI_COLUMNS = ("poi_id", "poi_city", "poi_cuisine", "poi_price_level")
SCENE_COLUMNS = tuple(f"scene_{feature}" for feature in SCENE_FEATURES)
PROMPT_COLUMNS = (*USER_COLUMNS, *POI_COLUMNS, "position", *SCENE_COLUMNS)
_INTEGER_COLUMNS = ("user_id", "poi_id", "poi_price_level", "position")


class PromptError(ValueError):
    pass


def build_prompts(batch: dict[str, np.ndarray]) -> list[str]:
    """The prompt of every sample in `batch` (columns of samples.ctr, one array each)."""
    missing = [c for c in PROMPT_COLUMNS if c not in batch]
    if missing:
        raise PromptError(f"prompts need column {missing[0]!r} (missing: {', '.join(missing)})")
    lengths = {c: len(batch[c]) for c in PROMPT_COLUMNS}
    if len(set(lengths.values())) > 1:
        raise PromptError(f"prompt columns differ in length: {lengths}")
    t = {c: _text(c, batch[c]) for c in PROMPT_COLUMNS}
    scene = t[SCENE_COLUMNS[0]]
    for column in SCENE_COLUMNS[1:]:
        scene = scene + " " + t[column]
    prompts = (
        "user " + t["user_id"] + " " + t["user_gender"] + " " + t["user_age_band"] + " "
        + t["user_home_city"] + " " + t["user_member_level"] + " " + t["device"]
        + "; shop " + t["poi_id"] + " " + t["poi_city"] + " " + t["poi_cuisine"]
        + " price " + t["poi_price_level"]
        + "; position " + t["position"]
        + "; scene " + scene + ENDING
    )  # fmt: skip
    return prompts.tolist()


def _text(column: str, values: np.ndarray) -> pd.Series:
    """Values as strings (object dtype, nulls -> MISSING); integers without a trailing ".0"."""
    series = pd.Series(np.asarray(values, dtype=object))
    if column in _INTEGER_COLUMNS:
        try:
            series = series.astype("Int64")
        except (TypeError, ValueError) as error:
            raise PromptError(f"prompt column {column!r} must hold integers: {error}") from None
    return series.astype("string").fillna(MISSING).astype(object).reset_index(drop=True)
