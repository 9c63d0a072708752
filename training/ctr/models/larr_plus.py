"""LARR+ (beyond the paper): LARR that also reads the frozen text vectors of the user and the POI.

Much of a scene's effect is the scene *times the shop's dishes* (cold dishes on hot days, the
visited province's speciality, breakfast food in the morning). LARR sees the scene through the
LLM but the shop only through its ID embedding, which long-tail shops barely train. LARR+ adds
the offline `larr embed texts` vectors of the same encoder (`CtrInputs.text_rows`, rows of a
frozen text table; no real-time LLM cost):
- a scene x shop term added straight to both logits: sum over the scene features k of
  <A e_k, B poi_text> / sqrt(D), a low-rank bilinear form with learned A, B (B starts at zero, so
  a fresh LARR+ predicts what LARR would); with a user side also <C user_text, B poi_text> / sqrt(D).
  An explicit product, because a PLE fed the match as inputs did not learn it from clicks;
- with `ModelConfig.text_in_target`, in t: t = concat(user embedding + P_user(user text), POI
  embedding + P_poi(POI text)), so the alignment pulls the scene towards what the shop's and the
  user's texts say, and a shop with few impressions still has a meaningful t.
The frozen vectors of an encoder sit in a narrow cone (the demo's POI vectors: cosine 0.98 to their
mean), so each side's vectors and the scene vectors of the match are centred on their mean and
scaled to unit RMS per dimension: what differs between shops, at the scale of a fresh embedding.
Without a user side (only POI texts exported) the user parts are left out. The paper's LARR
(models/larr.py) is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.ctr.inputs import CtrInputs, CtrOutput, FeatureLayout, ModelConfig
from training.ctr.models.larr import LARR

USER, POI = "user", "poi"


def frozen_table(table: np.ndarray, name: str) -> torch.Tensor:
    matrix = np.asarray(table, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty (rows, dim) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} holds non-finite values")
    return torch.from_numpy(matrix.copy())


def centred(table: Tensor) -> Tensor:
    """The rows less their mean, scaled to unit root-mean-square per dimension (a table whose rows
    are all equal stays zero)."""
    spread = table - table.mean(dim=0)
    rms = spread.pow(2).mean().sqrt()
    return spread / rms if rms > 0 else spread


class LARRPlus(LARR):
    def __init__(
        self,
        layout: FeatureLayout,
        cfg: ModelConfig,
        scene_table: np.ndarray,
        text_table: np.ndarray,
        side_rows: tuple[int, ...],
    ) -> None:
        """`text_table` stacks the sides of `layout.text_sides` in order, `side_rows` rows each."""
        if POI not in layout.text_sides:
            raise ValueError(
                f"larr_plus needs the POI side of the text vectors (layout.text_sides={list(layout.text_sides)}): "
                "run `larr embed texts` with sides [poi, user]"
            )
        text = frozen_table(text_table, "text_table")
        if len(side_rows) != len(layout.text_sides) or sum(side_rows) != len(text) or min(side_rows) < 1:
            raise ValueError(
                f"side_rows {list(side_rows)} must give each of the sides {list(layout.text_sides)} "
                f"at least one of the text table's {len(text)} rows"
            )
        super().__init__(layout, cfg, scene_table)
        self.with_user = USER in layout.text_sides
        self.sides = tuple(layout.text_sides)
        starts = np.concatenate([[0], np.cumsum(side_rows)[:-1]])
        self.side_span = {
            side: (int(a), int(n)) for side, a, n in zip(self.sides, starts, side_rows, strict=True)
        }
        self.register_buffer(
            "text_table", torch.cat([centred(part) for part in torch.split(text, list(side_rows))])
        )
        self.register_buffer("match_scenes", centred(self.scene.scene_table))
        dim, width = cfg.embedding_dim, text.shape[1]
        self.match_scale = dim**-0.5
        self.scene_match = nn.Linear(self.match_scenes.shape[1], dim, bias=False)  # A
        self.poi_match = nn.Linear(width, dim, bias=False)  # B
        nn.init.zeros_(self.poi_match.weight)  # the match starts at zero: LARR's prediction
        self.user_match = nn.Linear(width, dim, bias=False) if self.with_user else None  # C
        # text -> the width of one field embedding, added to the user's / POI's ID embedding in t
        self.text_to_target = (
            nn.ModuleDict({side: nn.Linear(width, dim) for side in self.sides})
            if cfg.text_in_target
            else None
        )

    def forward(self, inputs: CtrInputs) -> CtrOutput:
        rows = inputs.text_rows
        if rows is None or rows.shape != (len(inputs), len(self.sides)):
            got = None if rows is None else tuple(rows.shape)
            raise ValueError(
                f"larr_plus needs text_rows of shape ({len(inputs)}, {len(self.sides)}), got {got}"
            )
        if rows.numel() and (rows.min() < 0 or rows.max() >= len(self.text_table)):
            raise ValueError(f"text_rows must be rows of the text table (0..{len(self.text_table) - 1})")
        parts = self.scene_parts(inputs)
        texts = {side: F.embedding(rows[:, k], self.text_table) for k, side in enumerate(self.sides)}
        target = parts.ordered[:, : self.target_dim]
        if self.text_to_target is not None:
            target = target + self.text_in_target(texts)
        output = self.predict(parts, target)
        match = self.match_logit(parts.rows, texts)
        return output._replace(ctr_logit=output.ctr_logit + match, ctcvr_logit=output.ctcvr_logit + match)

    def text_in_target(self, texts: dict[str, Tensor]) -> Tensor:
        """(B, 2D): each side's projected text in its half of t (zeros in the user half without user texts)."""
        poi = self.text_to_target[POI](texts[POI])
        user = self.text_to_target[USER](texts[USER]) if self.with_user else torch.zeros_like(poi)
        return torch.cat([user, poi], dim=1)

    def match_logit(self, scene_rows: Tensor, texts: dict[str, Tensor]) -> Tensor:
        """(B,): the scene x shop (and user x shop) bilinear matches, summed."""
        poi_side = self.poi_match(texts[POI])  # (B, D)
        # A is applied to each table row once, then the rows of a sample are gathered and summed
        scene_side = F.embedding(scene_rows, self.scene_match(self.match_scenes)).sum(dim=1)  # (B, D)
        if self.user_match is not None:
            scene_side = scene_side + self.user_match(texts[USER])
        return (scene_side * poi_side).sum(-1) * self.match_scale

    def sampled_targets(self, batch: int) -> Tensor | None:
        """LARR's random (user, POI) negatives, with the texts of random users and shops added when t
        holds texts."""
        sampled = super().sampled_targets(batch)
        if sampled is None or self.text_to_target is None:
            return sampled
        picks = {  # a random row of each side's own rows
            side: self.text_table[start + torch.randint(rows, (len(sampled),), device=sampled.device)]
            for side, (start, rows) in self.side_span.items()
        }
        return sampled + self.text_in_target(picks)
