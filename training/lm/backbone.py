"""The one place that loads, extends and saves an LLM backbone (model + tokenizer).

A source is a Hugging Face causal-LM folder or an MLflow URI (`runs:/<run_id>/backbone`,
`models:/<name>/<version>`, or any URI `mlflow.artifacts.download_artifacts` understands).

Artifact layout: a backbone is logged as a plain folder, the output of `save_backbone`
(`config.json`, `model.safetensors`, `generation_config.json`, `tokenizer.json`,
`tokenizer_config.json`), under the artifact path `backbone` of a run (`log_backbone`), so
`runs:/<run_id>/backbone` loads it back. A URI that points higher up (a whole run,
`runs:/<run_id>/`, or an MLflow model, e.g. a pyfunc encoder whose artifacts hold the folder) is
searched for the one sub-folder holding `config.json`. MLflow 3 registers only logged models, so
a `models:/` URI needs such an MLflow model; a plain `backbone` artifact folder cannot be
registered.

Padding: the tokenizer pads on the RIGHT. Real tokens then keep positions 0..n-1, exactly as in
the unpadded text, without passing `position_ids` (Llama-style models do not derive positions from
the attention mask in `forward`), so a padded batch gives the same logits as each text alone.
Code that reads the last token gathers it through the attention mask, which also works for a
left-padded batch; generation, which needs left padding, sets it per call. When the tokenizer has
no pad token the eos token pads: losses and pooling must therefore use the attention mask and
label -100, never `input_ids == pad_token_id`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from core.paths import repo_path
from etl.tokens import special_tokens
from training.common.engine import announce_zero3, full_weights

BACKBONE_ARTIFACT = "backbone"
PADDING_SIDE = "right"
MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "dbfs:/")


class BackboneError(ValueError):
    pass


def is_mlflow_uri(source: str) -> bool:
    return source.startswith(MLFLOW_SCHEMES)


def load_backbone(
    source: str | Path, dtype: torch.dtype | None = None, deepspeed_settings: dict | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a Hugging Face folder or an MLflow URI.

    `dtype=None` keeps the dtype the checkpoint was saved in. The tokenizer comes back with a pad
    token and right padding (see the module docstring). Special tokens are NOT added here: call
    `add_special_tokens` (a no-op on a backbone that already has them). With ZeRO-3
    `deepspeed_settings` the weights load straight into this rank's partitions.
    """
    folder = resolve_folder(str(source))
    announce_zero3(deepspeed_settings)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype if dtype is not None else "auto")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def resolve_folder(source: str) -> Path:
    """A local Hugging Face folder for `source` (MLflow URIs are downloaded first)."""
    if is_mlflow_uri(source):
        import mlflow

        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
        return _find_model_folder(root, source)
    folder = repo_path(source)  # .models/... from any working folder
    if not (folder / "config.json").is_file():
        raise BackboneError(
            f"backbone {source} is not a Hugging Face model folder (no config.json) nor an MLflow URI "
            f"({', '.join(MLFLOW_SCHEMES)}); for SmolLM2 run `python -m training.lm.convert_smollm2`"
        )
    return folder


def _find_model_folder(root: Path, source: str) -> Path:
    if (root / "config.json").is_file():
        return root
    found = sorted({p.parent for p in root.rglob("config.json")})
    if len(found) != 1:
        what = "no folder" if not found else f"{len(found)} folders ({', '.join(map(str, found))})"
        raise BackboneError(f"MLflow artifacts of {source} hold {what} with a config.json; expected one")
    return found[0]


def ensure_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token (eos when it has none) and right padding; tell the model."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BackboneError("the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = PADDING_SIDE
    model.config.pad_token_id = tokenizer.pad_token_id


def add_special_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, slices: Sequence[str]
) -> int:
    """Add a dataset's slice tokens (`etl.tokens.special_tokens` of `slices`, the dataset schema's
    `etl.text.slices.token_slices`) as extra special tokens.

    The embeddings grow to the tokenizer's size; each new row of the input embeddings (and of the
    output embeddings, when they are not tied to the input ones) is set to the mean of the rows
    that existed before. Returns how many tokens were added: 0 on a second call.
    """
    ensure_pad_token(model, tokenizer)
    vocab = tokenizer.get_vocab()
    missing = [t for t in special_tokens(slices) if t not in vocab]
    added = tokenizer.add_special_tokens(
        {"extra_special_tokens": missing}, replace_extra_special_tokens=False
    )
    input_embeddings = model.get_input_embeddings()
    old_rows = getattr(input_embeddings.weight, "ds_shape", input_embeddings.weight.shape)[0]  # ZeRO-3
    needed = len(tokenizer)
    fresh = set(tokenizer.convert_tokens_to_ids(missing)) | set(range(old_rows, needed))
    if not fresh:
        return added
    old = [i for i in range(old_rows) if i not in fresh]
    matrices = [input_embeddings.weight]
    output_embeddings = model.get_output_embeddings()
    if output_embeddings is not None and output_embeddings.weight is not input_embeddings.weight:
        matrices.append(output_embeddings.weight)
    with full_weights(matrices):  # ZeRO-3: the whole matrices, for the means
        means = [m.detach()[old].float().mean(dim=0) for m in matrices]
    if needed > old_rows:
        model.resize_token_embeddings(needed, mean_resizing=False)
    input_embeddings = model.get_input_embeddings()
    matrices = [input_embeddings.weight]
    output_embeddings = model.get_output_embeddings()
    if len(means) == 2:
        matrices.append(output_embeddings.weight)
    rows = torch.tensor(sorted(fresh), dtype=torch.long)
    with full_weights(matrices, modify=True), torch.no_grad():
        for matrix, mean in zip(matrices, means, strict=True):
            matrix[rows] = mean.to(matrix.dtype)
    return added


def save_backbone(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """Model and tokenizer into one Hugging Face folder (the tokenizer goes with every checkpoint)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def log_backbone(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, artifact_path: str = BACKBONE_ARTIFACT
) -> str:
    """Log the backbone folder to the active MLflow run; returns the URI `load_backbone` takes."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise BackboneError("log_backbone needs an active MLflow run")
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(save_backbone(model, tokenizer, tmp)), artifact_path=artifact_path)
    return f"runs:/{run.info.run_id}/{artifact_path}"
