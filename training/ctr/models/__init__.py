"""The CTR / CTCVR models, one per file, all `forward(CtrInputs) -> CtrOutput` (training/ctr/inputs.py).

`build_model` is the one place that maps a model name (`training/ctr/names.py`, the `larr.ctr_model`
tag) to a fresh module.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from training.ctr import names
from training.ctr.inputs import FeatureLayout, ModelConfig
from training.ctr.models.deepfm import DeepFM
from training.ctr.models.larr import LARR
from training.ctr.models.larr_plus import LARRPlus
from training.ctr.models.lr import LogisticRegression
from training.ctr.models.ple import PLE
from training.ctr.models.wide_deep import WideDeep

# Hook: "p5", the P5-style text model (training/ctr/models/p5.py), has its own constructor
# (`build_p5`); the trainer builds it directly. To route it through here, add it to ID_MODELS
# (names.py) and give build_model a branch for it.
# Part of the checkpoint key: bump a model's revision when its parameters change shape, so a run
# does not resume a checkpoint it cannot load. larr 2: the PLE input holds t once, not twice;
# larr_plus 2: the match is a term of the logits, not PLE inputs.
MODEL_REVISIONS = {names.LARR: 2, names.LARR_PLUS: 2}


def build_model(
    name: str,
    layout: FeatureLayout,
    cfg: ModelConfig,
    scene_table: np.ndarray | None = None,
    text_table: tuple[np.ndarray, tuple[int, ...]] | None = None,
) -> nn.Module:
    """A fresh model `name` for `layout`; LARR also needs the frozen (rows, dim) scene table, LARR+
    also the frozen text table and its rows per side (`layout.text_sides`)."""
    if name == names.LR:
        return LogisticRegression(layout)  # cfg has nothing for it: no embeddings, no hidden layer
    if name == names.WIDE_DEEP:
        return WideDeep(layout, cfg)
    if name == names.DEEPFM:
        return DeepFM(layout, cfg)
    if name == names.PLE:
        return PLE(layout, cfg)
    if name == names.LARR:
        if scene_table is None:
            raise ValueError("model 'larr' needs a scene_table (the exported scene vectors), got None")
        return LARR(layout, cfg, scene_table)
    if name == names.LARR_PLUS:
        if scene_table is None or text_table is None:
            raise ValueError("model 'larr_plus' needs a scene_table and a text_table (the exported vectors)")
        return LARRPlus(layout, cfg, scene_table, *text_table)
    raise ValueError(f"unknown CTR model {name!r}; choose one of {', '.join(names.ID_MODELS)}")
