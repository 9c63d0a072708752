"""PLE, progressive layered extraction (Tang et al., RecSys 2020), for CTR and CTCVR.

`PleNetwork` is the part that reads a feature vector: `ple_levels` CGC extraction levels (task
experts + shared experts, gated per task) and one tower per task, (B, input_dim) -> (B, 2). `PLE`
feeds it concat(field embeddings flattened, numeric). LARR reuses `PleNetwork` on a wider vector
(its scene and alignment vectors in front of the same features).
"""

from __future__ import annotations

from torch import Tensor, nn

from training.ctr.inputs import CtrInputs, CtrOutput, FeatureLayout, ModelConfig
from training.ctr.layers import TASKS, CGCLayer, EmbeddedInputs, TaskTowers, task_output


class PleNetwork(nn.Module):
    """CGC levels + task towers over a (B, input_dim) feature vector -> (B, num_tasks) logits."""

    def __init__(self, input_dim: int, cfg: ModelConfig, num_tasks: int = len(TASKS)) -> None:
        super().__init__()
        levels, width = [], input_dim
        for level in range(cfg.ple_levels):
            cgc = CGCLayer(
                width,
                num_tasks,
                cfg.task_experts,
                cfg.shared_experts,
                cfg.expert_hidden,
                cfg.dropout,
                last=level == cfg.ple_levels - 1,
            )
            levels.append(cgc)
            width = cgc.output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = TaskTowers(width, cfg.tower_hidden, num_tasks, cfg.dropout)
        self.num_tasks = num_tasks

    def forward(self, x: Tensor) -> Tensor:
        task_inputs, shared = [x] * self.num_tasks, x  # level 1: every gate and expert reads x
        for level in self.levels:
            task_inputs, shared = level(task_inputs, shared)
        return self.towers(task_inputs)


class PLE(nn.Module):
    def __init__(self, layout: FeatureLayout, cfg: ModelConfig) -> None:
        super().__init__()
        self.inputs = EmbeddedInputs(layout, cfg.embedding_dim)
        self.network = PleNetwork(self.inputs.output_dim, cfg)

    def forward(self, inputs: CtrInputs) -> CtrOutput:
        dense, _ = self.inputs(inputs)  # (B, F*D + N)
        return task_output(self.network(dense))
