"""Wide&Deep (Cheng et al., 2016) for CTR and CTCVR: per task, a wide linear part plus a head on a
shared deep MLP.

wide_t = linear over the one-hot categorical fields + linear over the numeric features (each task
its own weights); deep = MLP(concat(field embeddings, numeric)), shared by both tasks, whose last
layer has one output per task; logit_t = wide_t + deep_t.
"""

from __future__ import annotations

from torch import nn

from training.ctr.inputs import CtrInputs, CtrOutput, FeatureLayout, ModelConfig
from training.ctr.layers import MLP, TASKS, EmbeddedInputs, LinearTerms, task_output


class WideDeep(nn.Module):
    def __init__(self, layout: FeatureLayout, cfg: ModelConfig) -> None:
        super().__init__()
        self.wide = LinearTerms(layout, len(TASKS))
        self.inputs = EmbeddedInputs(layout, cfg.embedding_dim)
        self.deep = MLP(self.inputs.output_dim, cfg.hidden, len(TASKS), cfg.dropout)

    def forward(self, inputs: CtrInputs) -> CtrOutput:
        dense, _ = self.inputs(inputs)  # (B, F*D + N)
        return task_output(self.wide(inputs) + self.deep(dense))  # (B, 2)
