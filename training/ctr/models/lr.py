"""LR: plain logistic regression for CTR and CTCVR, the baseline every deep model must beat.

logit_t = linear over the one-hot categorical fields (user and POI ids, scene values, ...) +
linear over the numeric features (the statistics) + bias, with each task its own weights: the
wide part of Wide&Deep alone (`LinearTerms`), no embeddings shared between fields, no hidden layer.
It reads the same encoded features as the other ID models, so a deep model that does not beat it
has learnt nothing the one-hot features and the statistics did not already give (on a real
positive-only log, a plain LR beat every deep model at 110 steps).
"""

from __future__ import annotations

from torch import nn

from training.ctr.inputs import CtrInputs, CtrOutput, FeatureLayout
from training.ctr.layers import TASKS, LinearTerms, task_output


class LogisticRegression(nn.Module):
    def __init__(self, layout: FeatureLayout) -> None:
        super().__init__()
        self.linear = LinearTerms(layout, len(TASKS))

    def forward(self, inputs: CtrInputs) -> CtrOutput:
        return task_output(self.linear(inputs))  # (B, 2)
