"""The stage-2 encoder as ONE MLflow model: `predict(DataFrame with a text column) -> (n, 128) vectors`.

Self-contained on purpose: this file imports only torch, transformers, numpy, pandas and mlflow
(nothing from `training`, `features` or `etl`), and it is logged as MLflow "model from code": the
file itself travels with the model, so any job loads the encoder by URI
(`mlflow.pyfunc.load_model(uri).predict(frame)`) without the training code on its path. It
repeats the few lines of the encoder's maths (middle truncation, position ids from the mask,
last-real-token pooling, projection, L2 norm); `tests/training/test_contrastive.py` checks that
the logged model returns exactly what `training.embedding.encoder.encode_texts` returns.

Artifact `encoder` (a folder): `backbone/` (a Hugging Face causal-LM folder with its tokenizer),
`projection.pt` (the `nn.Linear` state dict) and `encoder.json` (`dim`, `pooling`, `max_length`,
`normalize`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch

ARTIFACT = "encoder"
MODEL_NAME = "encoder"
SETTINGS_FILE = "encoder.json"
PROJECTION_FILE = "projection.pt"
BACKBONE_DIR = "backbone"


def _truncate_middle(ids: list[int], max_tokens: int) -> list[int]:
    if len(ids) <= max_tokens:
        return ids
    head = (max_tokens + 1) // 2
    tail = max_tokens - head
    return ids[:head] + (ids[len(ids) - tail :] if tail else [])


class EncoderModel(mlflow.pyfunc.PythonModel):
    """`predict(frame)` -> vectors. Batch jobs may also call `load_folder`, `place` and `embed`
    (device, dtype, padding side, which rows were truncated) on `unwrap_python_model()`."""

    def load_context(self, context) -> None:
        self.load_folder(context.artifacts[ARTIFACT])

    def load_folder(self, folder, device: str | None = None, dtype: torch.dtype | None = None) -> None:
        """Load the `encoder` artifact folder; default device: CUDA when available, in float32."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(folder)
        self.settings = json.loads((folder / SETTINGS_FILE).read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(folder / BACKBONE_DIR)
        model = AutoModelForCausalLM.from_pretrained(folder / BACKBONE_DIR, dtype=torch.float32)
        self.model = model.base_model.eval()
        projection = torch.load(folder / PROJECTION_FILE, map_location="cpu", weights_only=True)
        self.projection = torch.nn.Linear(projection["weight"].shape[1], projection["weight"].shape[0])
        self.projection.load_state_dict(projection)
        self.projection.eval()
        self.place(device or ("cuda" if torch.cuda.is_available() else "cpu"), dtype)

    def place(self, device: str | torch.device, dtype: torch.dtype | None = None) -> None:
        """Move the backbone to `device` (and `dtype`, e.g. bfloat16 on a GPU); the projection
        stays float32 (pooled states are cast up before it)."""
        self.device = torch.device(device)
        self.model.to(device=self.device, dtype=dtype)
        self.projection.to(self.device)

    @torch.no_grad()
    def predict(self, context, model_input, params=None) -> np.ndarray:
        texts = [str(t) for t in model_input["text"]]
        batch_size = int((params or {}).get("batch_size", 32))
        return self.embed(texts, batch_size)[0]

    @torch.no_grad()
    def embed(
        self, texts: list[str], batch_size: int = 32, padding_side: str = "right"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) float32 vectors in the order of `texts`, and (n,) bool: the text was longer
        than `max_length` and lost its middle (its head and closing token stay).

        Texts are sorted by token length and batched (little padding). Pooling reads the last
        real token of each row through the attention mask, so either padding side gives the same
        vectors; positions count real tokens only.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        dim = self.projection.out_features
        if not texts:
            return np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=bool)
        max_length = int(self.settings["max_length"])
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        if any(len(row) == 0 for row in ids):
            raise ValueError("empty text: nothing to embed")
        truncated = np.array([len(row) > max_length for row in ids], dtype=bool)
        ids = [_truncate_middle(list(row), max_length) for row in ids]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(ids), dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                span = slice(0, len(ids[i])) if padding_side == "right" else slice(width - len(ids[i]), width)
                input_ids[j, span] = torch.tensor(ids[i])
                mask[j, span] = 1
            input_ids, mask = input_ids.to(self.device), mask.to(self.device)
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            hidden = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions)
            index = torch.arange(width, device=self.device)
            last = torch.where(mask.bool(), index, -1).amax(dim=1)  # the last real token, any padding
            pooled = hidden.last_hidden_state[torch.arange(len(rows), device=self.device), last]
            vectors = self.projection(pooled.float())
            if self.settings.get("normalize", True):
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            out[rows] = vectors.cpu().numpy()
        return out, truncated


def save_encoder_folder(backbone, tokenizer, projection: torch.nn.Linear, max_length: int, folder) -> Path:
    """The `encoder` artifact folder (module docstring) from the parts of a trained encoder."""
    folder = Path(folder)
    (folder / BACKBONE_DIR).mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(folder / BACKBONE_DIR)
    tokenizer.save_pretrained(folder / BACKBONE_DIR)
    state = {k: v.detach().float().cpu() for k, v in projection.state_dict().items()}
    torch.save(state, folder / PROJECTION_FILE)
    settings = {
        "dim": projection.out_features,
        "pooling": "last_token",
        "max_length": int(max_length),
        "normalize": True,
    }
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    return folder


def log_encoder(
    backbone, tokenizer, projection: torch.nn.Linear, max_length: int, name: str = MODEL_NAME
) -> str:
    """Log the encoder as a pyfunc model to the active MLflow run; returns its model URI."""
    if mlflow.active_run() is None:
        raise RuntimeError("log_encoder needs an active MLflow run")
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_encoder_folder(backbone, tokenizer, projection, max_length, Path(tmp) / ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).resolve()),
            artifacts={ARTIFACT: str(folder)},
            pip_requirements=["torch", "transformers", "numpy", "pandas"],
        )
    return info.model_uri


def save_encoder_model(backbone, tokenizer, projection: torch.nn.Linear, max_length: int, path) -> Path:
    """The encoder as a local MLflow model folder (the same model `log_encoder` logs: `MLmodel`,
    this file as its code, `artifacts/encoder/`); `mlflow.pyfunc.load_model(path)` loads it with
    no tracking store. For tests, benchmarks and offline hand-over of an encoder."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_encoder_folder(backbone, tokenizer, projection, max_length, Path(tmp) / ARTIFACT)
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(Path(__file__).resolve()),
            artifacts={ARTIFACT: str(folder)},
            pip_requirements=["torch", "transformers", "numpy", "pandas"],
        )
    return path


if __name__.startswith("code_model_"):  # MLflow executing this file as the model's code
    mlflow.models.set_model(EncoderModel())
