"""P5-style prompts: one short sentence per CTR sample, for the LLM baseline (`models/p5.py`).

The prompt states the user (id, then the dataset's user and event fields), the shop (id, then
its item fields), the list position when the log has one, and the scene values in the dataset
schema's order (all from the model's `FeatureLayout`), and ends with "the user will", whose next
word the model scores: " no", " click" or " order". On the synthetic world:

    user 123 female 25-34 Guangzhou gold ios; shop 456 Guangzhou Cantonese 2; position 3;
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

from training.ctr.inputs import FeatureLayout

MISSING = "unknown"
ENDING = "; the user will"


class PromptError(ValueError):
    pass


def _groups(layout: FeatureLayout) -> list[tuple[str, tuple[str, ...]]]:
    """(word, columns) of each ";"-separated group of a prompt."""
    position = ("position",) if "position" in layout.small_int_fields else ()
    groups = [("user", layout.user_columns), ("shop", layout.poi_columns)]
    groups += [("position", position)] if position else []
    return groups + [("scene", tuple(f"scene_{f}" for f in layout.all_scene_features))]


def prompt_columns(layout: FeatureLayout) -> tuple[str, ...]:
    """The sample columns a prompt reads, in prompt order."""
    return tuple(c for _, columns in _groups(layout) for c in columns)


def build_prompts(batch: dict[str, np.ndarray], layout: FeatureLayout) -> list[str]:
    """The prompt of every sample in `batch` (columns of samples.ctr, one array each)."""
    columns = prompt_columns(layout)
    missing = [c for c in columns if c not in batch]
    if missing:
        raise PromptError(f"prompts need column {missing[0]!r} (missing: {', '.join(missing)})")
    lengths = {c: len(batch[c]) for c in columns}
    if len(set(lengths.values())) > 1:
        raise PromptError(f"prompt columns differ in length: {lengths}")
    integers = {"user_id", "poi_id", *layout.small_int_fields}
    t = {c: _text(c, batch[c], c in integers) for c in columns}
    prompts = None
    for word, group in _groups(layout):
        part = word + " " + t[group[0]]
        for column in group[1:]:
            part = part + " " + t[column]
        prompts = part if prompts is None else prompts + "; " + part
    if prompts is None or not len(prompts):
        return []
    return (prompts + ENDING).tolist()


def _text(column: str, values: np.ndarray, integer: bool) -> pd.Series:
    """Values as strings (object dtype, nulls -> MISSING); integers without a trailing ".0"."""
    series = pd.Series(np.asarray(values, dtype=object))
    if integer:
        try:
            series = series.astype("Int64")
        except (TypeError, ValueError) as error:
            raise PromptError(f"prompt column {column!r} must hold integers: {error}") from None
    return series.astype("string").fillna(MISSING).astype(object).reset_index(drop=True)
