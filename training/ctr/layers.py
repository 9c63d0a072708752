"""Shared building blocks of the ID-based CTR models (FuxiCTR style): field embeddings, MLPs,
first-order terms, the FM interaction, PLE's customised gate control and the task towers.

Each block is a small module from tensors to tensors; `training/ctr/models/` assembles them, so
LR, Wide&Deep, DeepFM, PLE and LARR differ only by the blocks they pick. Every model predicts the two
tasks of `TASKS`, in that order, as the two columns of a (B, 2) logit matrix (`task_output`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.ctr.inputs import CtrInputs, CtrOutput, FeatureLayout

TASKS = ("ctr", "ctcvr")


def task_output(logits: Tensor, align_loss: Tensor | None = None) -> CtrOutput:
    """(B, 2) logits in `TASKS` order -> the model contract's `CtrOutput`."""
    return CtrOutput(ctr_logit=logits[:, 0], ctcvr_logit=logits[:, 1], align_loss=align_loss)


class FieldEmbedding(nn.Module):
    """One embedding table per categorical field: (B, F) bucket indices -> (B, F, dim).

    With dim = 1 (or one column per task) it is the "linear" variant: a learned weight per bucket,
    i.e. a linear model over the one-hot encoding, without building the one-hot matrix.
    Tables start small (normal, std `init_std`; 0 = zeros) as in FuxiCTR / DeepCTR, so the
    interactions of a fresh model are near zero.
    """

    def __init__(self, field_buckets: Sequence[int], dim: int, init_std: float = 0.01) -> None:
        super().__init__()
        if not field_buckets:
            raise ValueError("FieldEmbedding needs at least one categorical field")
        for field, buckets in enumerate(field_buckets):
            if buckets < 1:
                raise ValueError(f"categorical field {field} needs >= 1 bucket, got {buckets}")
        self.tables = nn.ModuleList(nn.Embedding(buckets, dim) for buckets in field_buckets)
        for table in self.tables:
            nn.init.normal_(table.weight, std=init_std)

    def forward(self, categorical: Tensor) -> Tensor:
        if categorical.ndim != 2 or categorical.shape[1] != len(self.tables):
            raise ValueError(
                f"categorical must be (B, {len(self.tables)}) bucket indices, got {tuple(categorical.shape)}"
            )
        return torch.stack([table(categorical[:, f]) for f, table in enumerate(self.tables)], dim=1)


def check_numeric(numeric: Tensor, num_numeric: int, batch: int) -> None:
    """A clear error instead of a shape mismatch deep inside a Linear."""
    if numeric.ndim != 2 or numeric.shape != (batch, num_numeric):
        raise ValueError(f"numeric must be ({batch}, {num_numeric}), got {tuple(numeric.shape)}")


class EmbeddedInputs(nn.Module):
    """The dense input of the deep parts: concat(field embeddings flattened, numeric), (B, F*D + N).

    `forward` also returns the (B, F, D) field embeddings, for the parts that read fields one by
    one (the FM interaction, LARR's user and POI alignment target).
    """

    def __init__(self, layout: FeatureLayout, embedding_dim: int) -> None:
        super().__init__()
        self.fields = FieldEmbedding(layout.field_buckets, embedding_dim)
        self.num_numeric = layout.num_numeric
        self.output_dim = layout.num_fields * embedding_dim + layout.num_numeric

    def forward(self, inputs: CtrInputs) -> tuple[Tensor, Tensor]:
        fields = self.fields(inputs.categorical)  # (B, F, D)
        check_numeric(inputs.numeric, self.num_numeric, fields.shape[0])
        flat = torch.cat([fields.flatten(1), inputs.numeric.to(fields.dtype)], dim=1)  # (B, F*D + N)
        return flat, fields


class LinearTerms(nn.Module):
    """First-order part of Wide&Deep's wide side and of DeepFM, and the whole of LR: per task, a
    weight per bucket of every field (linear over the one-hot encoding) + a linear map of the
    numeric features + a bias. Each task gets its own weights (one embedding column per task): (B, T)."""

    def __init__(self, layout: FeatureLayout, num_tasks: int = len(TASKS)) -> None:
        super().__init__()
        self.fields = FieldEmbedding(layout.field_buckets, num_tasks, init_std=0.0)
        self.numeric = nn.Linear(layout.num_numeric, num_tasks, bias=False) if layout.num_numeric else None
        self.bias = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, inputs: CtrInputs) -> Tensor:
        out = self.fields(inputs.categorical).sum(dim=1) + self.bias  # (B, F, T) -> (B, T)
        if self.numeric is not None:
            check_numeric(inputs.numeric, self.numeric.in_features, out.shape[0])
            out = out + self.numeric(inputs.numeric.to(out.dtype))
        return out


class MLP(nn.Sequential):
    """Linear + ReLU (+ dropout) per hidden width, then an optional plain Linear to `output_dim`.
    `self.output_dim` is the width of the result (the last hidden width without an output layer)."""

    def __init__(
        self, input_dim: int, hidden: Sequence[int], output_dim: int | None = None, dropout: float = 0.0
    ) -> None:
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        super().__init__(*layers)
        self.output_dim = width


class FMInteraction(nn.Module):
    """FM second order: sum over field pairs i < j of <v_i, v_j>, computed in O(F D) as
    0.5 * sum_d ((sum_f v_fd)^2 - sum_f v_fd^2). (B, F, D) -> (B,)."""

    def forward(self, fields: Tensor) -> Tensor:
        square_of_sum = fields.sum(dim=1).pow(2)  # (B, D)
        sum_of_squares = fields.pow(2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=-1)


def mix_experts(gate_logits: Tensor, experts: Sequence[Tensor]) -> Tensor:
    """Softmax-gated sum of expert outputs: (B, E) gate logits, E x (B, H) -> (B, H)."""
    return mix_stacked(gate_logits, torch.stack(list(experts)))


def mix_stacked(gate_logits: Tensor, experts: Tensor) -> Tensor:
    """`mix_experts` over stacked expert outputs: (B, E) gate logits, (E, B, H) -> (B, H)."""
    return torch.einsum("be,ebh->bh", F.softmax(gate_logits, dim=-1), experts)


class CGCLayer(nn.Module):
    """One PLE extraction level: customised gate control (Tang et al., RecSys 2020).

    Task t has `task_experts` experts of its own, and all tasks share `shared_experts` experts.
    Task t's output is a softmax-gated mix (gate computed from task t's input) of its own and the
    shared experts. Below the last level, a shared gate over ALL experts (computed from the shared
    input) also gives the next level's shared input; the last level returns None for it.
    """

    def __init__(
        self,
        input_dim: int,
        num_tasks: int,
        task_experts: int,
        shared_experts: int,
        expert_hidden: Sequence[int],
        dropout: float = 0.0,
        last: bool = False,
    ) -> None:
        super().__init__()
        if not expert_hidden:
            raise ValueError("expert_hidden needs at least one width")
        if task_experts < 1 or shared_experts < 0:
            raise ValueError(
                f"need task_experts >= 1 and shared_experts >= 0, got {task_experts}, {shared_experts}"
            )

        def expert() -> MLP:
            return MLP(input_dim, expert_hidden, dropout=dropout)

        self.task_experts = nn.ModuleList(
            nn.ModuleList(expert() for _ in range(task_experts)) for _ in range(num_tasks)
        )
        self.shared_experts = nn.ModuleList(expert() for _ in range(shared_experts))
        self.task_gates = nn.ModuleList(
            nn.Linear(input_dim, task_experts + shared_experts) for _ in range(num_tasks)
        )
        self.shared_gate = None if last else nn.Linear(input_dim, num_tasks * task_experts + shared_experts)
        self.output_dim = expert_hidden[-1]

    def forward(
        self, task_inputs: Sequence[Tensor], shared_input: Tensor
    ) -> tuple[list[Tensor], Tensor | None]:
        if self.training or torch.is_grad_enabled():
            return self.forward_each(task_inputs, shared_input)
        return self.forward_stacked(task_inputs, shared_input)

    def forward_each(
        self, task_inputs: Sequence[Tensor], shared_input: Tensor
    ) -> tuple[list[Tensor], Tensor | None]:
        """Every expert on its own (training, and whenever gradients are recorded)."""
        shared = [expert(shared_input) for expert in self.shared_experts]
        task_outputs, every_task_expert = [], []
        for x, experts, gate in zip(task_inputs, self.task_experts, self.task_gates, strict=True):
            own = [expert(x) for expert in experts]
            every_task_expert += own
            task_outputs.append(mix_experts(gate(x), own + shared))
        if self.shared_gate is None:
            return task_outputs, None
        return task_outputs, mix_experts(self.shared_gate(shared_input), every_task_expert + shared)

    def forward_stacked(
        self, task_inputs: Sequence[Tensor], shared_input: Tensor
    ) -> tuple[list[Tensor], Tensor | None]:
        """The same outputs with every expert of the level in one batched matmul per layer
        (inference: scoring 100 candidates is dominated by per-operation overhead, not arithmetic).
        Experts in `every` order: task 1's, task 2's, ..., then the shared ones."""
        per_task = len(self.task_experts[0])
        inputs = [x for x in task_inputs for _ in range(per_task)] + [shared_input] * len(self.shared_experts)
        if all(x is inputs[0] for x in inputs):  # level 1: every expert reads the same vector
            hidden = inputs[0].unsqueeze(0).expand(len(inputs), -1, -1)
        else:
            hidden = torch.stack(inputs)  # (K, B, input_dim)
        for weight, bias in self.stacked_weights():
            hidden = torch.relu(torch.baddbmm(bias, hidden, weight))  # (K, B, width)
        shared = hidden[len(task_inputs) * per_task :]
        task_outputs = [
            mix_stacked(gate(x), torch.cat([hidden[t * per_task : (t + 1) * per_task], shared]))
            for t, (x, gate) in enumerate(zip(task_inputs, self.task_gates, strict=True))
        ]
        if self.shared_gate is None:
            return task_outputs, None
        return task_outputs, mix_stacked(self.shared_gate(shared_input), hidden)

    def stacked_weights(self) -> list[tuple[Tensor, Tensor]]:
        """Per expert layer: the experts' weights (K, in, out) and biases (K, 1, out), rebuilt when a
        weight changes (its version counter), moves, or the inference mode changes."""
        experts = [*[e for task in self.task_experts for e in task], *self.shared_experts]
        linears = [[m for m in expert if isinstance(m, nn.Linear)] for expert in experts]
        key = (
            torch.is_inference_mode_enabled(),
            *[(p._version, p.data_ptr()) for layers in linears for m in layers for p in (m.weight, m.bias)],
        )
        cached = getattr(self, "_stacked", None)
        if cached is None or cached[0] != key:
            stacked = [
                (
                    torch.stack([layers[depth].weight.t() for layers in linears]),
                    torch.stack([layers[depth].bias for layers in linears]).unsqueeze(1),
                )
                for depth in range(len(linears[0]))
            ]
            cached = self._stacked = (key, stacked)
        return cached[1]


class TaskTowers(nn.Module):
    """One MLP tower per task, each ending in one logit: T x (B, input_dim) -> (B, T)."""

    def __init__(self, input_dim: int, hidden: Sequence[int], num_tasks: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.towers = nn.ModuleList(MLP(input_dim, hidden, 1, dropout) for _ in range(num_tasks))

    def forward(self, task_inputs: Sequence[Tensor]) -> Tensor:
        return torch.cat([tower(x) for tower, x in zip(self.towers, task_inputs, strict=True)], dim=1)
