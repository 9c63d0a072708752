"""DeepFM (Guo et al., 2017) for CTR and CTCVR: Wide&Deep with the wide part replaced by a
factorisation machine on the SAME embeddings the deep MLP reads.

logit_t = first-order_t + scale_t * FM second order + deep_t. First order and the deep head are
per task (as in Wide&Deep); the second-order term sum_{i<j} <v_i, v_j> is one number per sample,
weighted per task by a learned scale (starting at 1), since the two tasks share the embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from training.ctr.inputs import CtrInputs, CtrOutput, FeatureLayout, ModelConfig
from training.ctr.layers import MLP, TASKS, EmbeddedInputs, FMInteraction, LinearTerms, task_output


class DeepFM(nn.Module):
    def __init__(self, layout: FeatureLayout, cfg: ModelConfig) -> None:
        super().__init__()
        self.first_order = LinearTerms(layout, len(TASKS))
        self.inputs = EmbeddedInputs(layout, cfg.embedding_dim)
        self.second_order = FMInteraction()
        self.fm_scale = nn.Parameter(torch.ones(len(TASKS)))
        self.deep = MLP(self.inputs.output_dim, cfg.hidden, len(TASKS), cfg.dropout)

    def forward(self, inputs: CtrInputs) -> CtrOutput:
        dense, fields = self.inputs(inputs)  # (B, F*D + N), (B, F, D)
        fm = self.second_order(fields).unsqueeze(1) * self.fm_scale  # (B, 1) * (2,) -> (B, 2)
        return task_output(self.first_order(inputs) + fm + self.deep(dense))
