"""P5-style baseline: a causal LM reads the sample's prompt (`training/ctr/prompts.py`) and its
next-word distribution over three answers, " no", " click" and " order", gives both CTR logits.

With l_no, l_click, l_order the LM's logits of the three answer tokens at the last prompt position,
a softmax over the three is a distribution over the sample's outcome (order implies click):

    P(click) = p_click + p_order   ->  ctr_logit   = logsumexp(l_click, l_order) - l_no
    P(order) = p_order             ->  ctcvr_logit = l_order - logsumexp(l_no, l_click)

so binary cross-entropy on the two logits is a proper likelihood of the same three-way model.

Prompts are left-padded (the last position is every prompt's last token) with position ids
counted from each prompt's first real token, so a prompt scores the same alone or in a padded
batch. A prompt longer than `max_length` tokens keeps its END, where the question is.

`train_layers` = k > 0 trains only the last k transformer blocks and the final norm; everything
else (embeddings, and with them a tied output head, and the earlier blocks) is frozen, so
backpropagation stops at the first trainable block: what makes fine-tuning SmolLM2 on a CPU
feasible. 0 trains every weight. The trainer decides which samples (a subsample of the training
days) the model is fine-tuned on; this module only scores prompts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.ctr.inputs import CtrInputs, CtrOutput
from training.lm.backbone import ensure_pad_token, load_backbone, save_backbone

ANSWER_WORDS = (" no", " click", " order")  # outcome: no click, click without order, click and order


class P5Error(ValueError):
    pass


def answer_token_ids(tokenizer: PreTrainedTokenizerBase, words: tuple[str, ...] = ANSWER_WORDS) -> list[int]:
    """The token of each answer word: its only token, or its first when the tokenizer splits it.

    The first tokens must differ, or the answers could not be told apart.
    """
    ids = []
    for word in words:
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if not tokens:
            raise P5Error(f"answer word {word!r} encodes to no token")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        names = tokenizer.convert_ids_to_tokens(ids)
        raise P5Error(f"answer words {words} share a first token ({names}); pick words that differ")
    return ids


class P5Model(nn.Module):
    """Scores `CtrInputs.texts` with a causal LM; see the module docstring."""

    def __init__(
        self,
        lm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 96,
        train_layers: int = 0,
    ) -> None:
        super().__init__()
        if max_length < 1:
            raise P5Error(f"max_length must be >= 1, got {max_length}")
        ensure_pad_token(lm, tokenizer)
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.train_layers = train_layers
        self.register_buffer("answer_ids", torch.tensor(answer_token_ids(tokenizer)), persistent=False)
        freeze_below(lm, train_layers)

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Left-padded `input_ids`, `attention_mask` and `position_ids`; a prompt keeps its last
        `max_length` tokens (left padding puts every prompt's end in the last columns)."""
        batch = self.tokenizer(list(texts), padding=True, padding_side="left", return_tensors="pt")
        input_ids = batch["input_ids"][:, -self.max_length :]
        attention_mask = batch["attention_mask"][:, -self.max_length :]
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}

    def answer_logits(self, texts: list[str]) -> torch.Tensor:
        """(B, 3) float32 next-token logits of " no", " click", " order" after each prompt."""
        device = self.answer_ids.device
        encoded = {k: v.to(device) for k, v in self.encode(texts).items()}
        out = self.lm(**encoded, logits_to_keep=1, use_cache=False)
        return out.logits[:, -1, self.answer_ids].float()

    def forward(self, inputs: CtrInputs) -> CtrOutput:
        texts = inputs.texts
        if texts is None:
            raise P5Error("P5Model needs CtrInputs.texts (the prompts of training.ctr.prompts.build_prompts)")
        if inputs.categorical is not None and len(texts) != inputs.categorical.shape[0]:
            raise P5Error(
                f"CtrInputs.texts has {len(texts)} prompts for {inputs.categorical.shape[0]} samples"
            )
        l_no, l_click, l_order = self.answer_logits(texts).unbind(dim=1)
        ctr_logit = torch.logaddexp(l_click, l_order) - l_no
        ctcvr_logit = l_order - torch.logaddexp(l_no, l_click)
        return CtrOutput(ctr_logit=ctr_logit, ctcvr_logit=ctcvr_logit, align_loss=None)

    def save(self, folder: str | Path) -> Path:
        """The fine-tuned LM and its tokenizer as a Hugging Face folder (`build_p5` loads it back)."""
        return save_backbone(self.lm, self.tokenizer, folder)


def freeze_below(lm: PreTrainedModel, train_layers: int) -> None:
    """Leave only the last `train_layers` decoder blocks and the final norm trainable (0 = all)."""
    if train_layers < 0:
        raise P5Error(f"train_layers must be >= 0 (0 = train all), got {train_layers}")
    lm.requires_grad_(True)
    if train_layers == 0:
        return
    decoder = lm.get_decoder()
    blocks, norm = getattr(decoder, "layers", None), getattr(decoder, "norm", None)
    if blocks is None or norm is None:
        raise P5Error(f"{type(lm).__name__} has no decoder .layers / .norm; use train_layers=0")
    if train_layers > len(blocks):
        raise P5Error(f"train_layers={train_layers} but the LM has {len(blocks)} blocks")
    lm.requires_grad_(False)
    for block in blocks[len(blocks) - train_layers :]:
        block.requires_grad_(True)
    norm.requires_grad_(True)


def build_p5(
    source: str | Path, max_length: int = 96, train_layers: int = 0, dtype: torch.dtype | None = None
) -> P5Model:
    """A P5 model on the backbone at `source` (folder or MLflow URI; SmolLM2 in production)."""
    lm, tokenizer = load_backbone(source, dtype=dtype)
    return P5Model(lm, tokenizer, max_length=max_length, train_layers=train_layers)
