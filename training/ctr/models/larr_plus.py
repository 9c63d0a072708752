"""LARR+ (beyond the paper): LARR that also reads the frozen text vectors of the user and the POI.

Much of a scene's effect is the scene *times the shop's dishes* (cold dishes on hot days, the
visited province's speciality, breakfast food in the morning). LARR sees the scene through the
LLM but the shop only through its ID embedding, which long-tail shops barely train. LARR+ adds
the offline `larr embed texts` vectors of the same encoder (`CtrInputs.text_rows`, rows of a
frozen text table; no real-time LLM cost), in three places:
- in t: t = concat(user embedding + P_user(user text), POI embedding + P_poi(POI text)), so the
  alignment pulls the scene towards what the shop's and the user's texts say, and a shop with few
  impressions still has a meaningful t;
- as scene x shop matches: for each scene feature k, <A e_k, B poi_text> / sqrt(D) with learned
  A, B (a low-rank bilinear form over the frozen vectors, one column per scene feature); when the
  scene and text vectors come from one encoder (the same width), also the frozen cosine
  cos(e_k, poi_text) (what the encoder says before any training);
- the user x shop text match <C user_text, B poi_text> / sqrt(D) (with a user side).
The PLE reads concat(s, t, the other fields, numeric, the matches). Without a user side (only POI
texts exported) the user parts are left out. The paper's LARR (models/larr.py) is unchanged.
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
        scene_width = np.shape(scene_table)[1] if np.ndim(scene_table) == 2 else 0
        self.with_user = USER in layout.text_sides
        self.same_space = scene_width == text.shape[1]  # one encoder: the frozen cosine is meaningful
        scenes = len(layout.scene_features)
        extra = scenes * (2 if self.same_space else 1) + int(self.with_user)
        if len(side_rows) != len(layout.text_sides) or sum(side_rows) != len(text) or min(side_rows) < 1:
            raise ValueError(
                f"side_rows {list(side_rows)} must give each of the sides {list(layout.text_sides)} "
                f"at least one of the text table's {len(text)} rows"
            )
        super().__init__(layout, cfg, scene_table, extra_inputs=extra)
        self.register_buffer("text_table", text)
        self.sides = tuple(layout.text_sides)
        starts = np.concatenate([[0], np.cumsum(side_rows)[:-1]])
        self.side_span = {
            side: (int(a), int(n)) for side, a, n in zip(self.sides, starts, side_rows, strict=True)
        }
        dim, width = cfg.embedding_dim, text.shape[1]
        self.match_scale = dim**-0.5
        # text -> the width of one field embedding, added to the user's / POI's ID embedding in t
        self.text_to_target = nn.ModuleDict({side: nn.Linear(width, dim) for side in self.sides})
        self.scene_match = nn.Linear(scene_width, dim, bias=False)  # A
        self.poi_match = nn.Linear(width, dim, bias=False)  # B
        self.user_match = nn.Linear(width, dim, bias=False) if self.with_user else None  # C

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
        dim = self.target_dim // 2
        user, poi = parts.ordered[:, :dim], parts.ordered[:, dim : self.target_dim]
        if self.with_user:
            user = user + self.text_to_target[USER](texts[USER])
        target = torch.cat([user, poi + self.text_to_target[POI](texts[POI])], dim=1)  # (B, 2D)
        return self.predict(parts, target, self.matches(parts.rows, texts))

    def matches(self, scene_rows: Tensor, texts: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """The scene x shop (and user x shop) match columns, each (B, n) or (B, 1)."""
        table = self.scene.scene_table
        poi_side = self.poi_match(texts[POI])  # (B, D)
        # A is applied to each table row once, then gathered per sample
        scene_side = F.embedding(scene_rows, self.scene_match(table))  # (B, n, D)
        found = [(scene_side * poi_side.unsqueeze(1)).sum(-1) * self.match_scale]
        if self.same_space:
            unit_scenes = F.embedding(scene_rows, F.normalize(table, dim=-1))  # (B, n, w)
            found.append((unit_scenes * F.normalize(texts[POI], dim=-1).unsqueeze(1)).sum(-1))
        if self.user_match is not None:
            user_side = self.user_match(texts[USER])
            found.append((user_side * poi_side).sum(-1, keepdim=True) * self.match_scale)
        return tuple(found)

    def sampled_targets(self, batch: int) -> Tensor | None:
        """LARR's random (user, POI) negatives with the texts of random users and shops added, like t."""
        sampled = super().sampled_targets(batch)
        if sampled is None:
            return None
        dim = self.target_dim // 2
        picks = {  # a random row of each side's own rows
            side: start + torch.randint(rows, (len(sampled),), device=sampled.device)
            for side, (start, rows) in self.side_span.items()
        }
        user, poi = sampled[:, :dim], sampled[:, dim:]
        if self.with_user:
            user = user + self.text_to_target[USER](self.text_table[picks[USER]])
        return torch.cat([user, poi + self.text_to_target[POI](self.text_table[picks[POI]])], dim=1)
