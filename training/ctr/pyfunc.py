"""The CTR model as an MLflow pyfunc: raw feature rows in, re-calibrated pCTR and pCTCVR out.

    model = mlflow.pyfunc.load_model("runs:/<seed run>/model")
    model.predict(frame)  # -> DataFrame p_ctr, p_ctcvr, unknown_scene_values

A request row holds what a serving system knows about a (user, POI, moment): `user_id`,
`poi_id`, the dataset schema's user / item / event fields, the 15 statistics and the scene values
as text (`encoding.raw_columns(layout)`, the model signature's inputs; a missing one is an error
naming it). A request-item feature (e.g. `distance_km`, `open_now`) is either a column of its own
or derived from its raw inputs as `etl samples` derives it (`request_item.py`): the events
columns by name, `ts` (naive = UTC) and the items columns as `poi_<column>`. The model
hashes the strings the way Spark did for the samples, looks every scene value up in the scene
vectors it carries (a value never embedded gets its feature's unknown vector and is counted, per
row in `unknown_scene_values` and in total in `unknown_scene_values_seen`), runs the network and
re-calibrates for the negative sampling of the training data (`metrics.recalibrate_ctr` /
`recalibrate_ctcvr` with the train split's rate r). No LLM is inside: LARR's scene knowledge is the
frozen table of vectors.

Artifact `ctr` (a folder): `model.pt` (state dict), `model.json` (model name, network and
encoding configs, feature layout, r) and, for LARR, `scene_vectors.npz` (the export it trained on; LARR+ also `text_vectors.npz`).
The training code travels with the model (`code_paths`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

ARTIFACT = "ctr"
MODEL_NAME = "model"
SETTINGS_FILE = "model.json"
WEIGHTS_FILE = "model.pt"
SCENE_MEMO = 65_536  # LARR: distinct scenes whose aggregated vector a scoring process remembers
SCENE_FILE = "scene_vectors.npz"
TEXT_FILE = "text_vectors.npz"  # larr_plus: the text export it trained on
REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("core", "training", "features", "etl")


def _tuple_fields(data: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


class CtrScoringModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.load_folder(context.artifacts[ARTIFACT])

    def load_folder(self, folder) -> None:
        from training.ctr.encoding import FrozenTables
        from training.ctr.inputs import FeatureLayout, ModelConfig
        from training.ctr.models import build_model
        from training.ctr.models.larr import SceneAggregator

        folder = Path(folder)
        self.settings = json.loads((folder / SETTINGS_FILE).read_text())
        self.layout = FeatureLayout(**_tuple_fields(self.settings["layout"]))
        network = ModelConfig(**_tuple_fields(self.settings["network"]))
        self.tables = FrozenTables.load(
            folder / SCENE_FILE if self.layout.scene_features else None,
            folder / TEXT_FILE if self.layout.text_sides else None,
            self.layout.scene_features,
        )
        self.model = build_model(self.settings["model"], self.layout, network, *self.tables.model_inputs())
        self.model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        self.model.eval()
        if isinstance(getattr(self.model, "scene", None), SceneAggregator):  # LARR, LARR+
            self.model.scene.memoize(SCENE_MEMO)  # frozen: a request's scene recurs across requests
        self.neg_rate = float(self.settings["neg_rate"])
        self.unknown_scene_values_seen = 0

    @torch.inference_mode()  # no autograd bookkeeping at all (cheaper than no_grad per op)
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from training.ctr.encoding import encode, with_hashed_ids, with_request_item
        from training.ctr.metrics import recalibrate_ctcvr, recalibrate_ctr

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        frame = with_request_item(frame, self.layout, source="scoring request")
        columns = with_hashed_ids(frame, self.layout, source="scoring request")
        inputs, _ = encode(
            columns, self.layout, self.tables.scene, source="scoring request", text_table=self.tables.text
        )
        out = self.model(inputs)
        p_ctr = torch.sigmoid(out.ctr_logit.float()).numpy().astype(np.float64)
        p_ctcvr = torch.sigmoid(out.ctcvr_logit.float()).numpy().astype(np.float64)
        unknown = np.zeros(len(frame), dtype=np.int64)
        if self.tables.scene is not None:
            unknown = (inputs.scene_rows.numpy() == self.tables.scene.unknown_rows[None, :]).sum(axis=1)
        self.unknown_scene_values_seen += int(unknown.sum())
        scored = pd.DataFrame(
            {
                "p_ctr": recalibrate_ctr(p_ctr, self.neg_rate),
                "p_ctcvr": recalibrate_ctcvr(p_ctcvr, p_ctr, self.neg_rate),
                "unknown_scene_values": unknown,
            }
        )
        scored.index = frame.index  # set, not passed: the constructor would align (union) indexes
        return scored


def save_folder(cfg, data, model: torch.nn.Module, layout, folder) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    settings = {
        "model": cfg.model,
        "ablation": cfg.ablation,
        "network": asdict(cfg.network_config()),
        "encoding": asdict(cfg.encoding),
        "layout": asdict(layout),
        "neg_rate": data.neg_rate,
        "encoder_uri": data.encoder_uri,
        "samples_version": data.train.version,
    }
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    if data.scene_vectors:
        (folder / SCENE_FILE).write_bytes(Path(data.scene_vectors).read_bytes())
    if data.text_vectors:
        (folder / TEXT_FILE).write_bytes(Path(data.text_vectors).read_bytes())
    return folder


def signature(layout):
    """The model's MLflow signature, from its layout (so from the dataset schema): ids and integer
    fields as long, the strings behind hashed ids and the scene values as string, numerics as double;
    then the raw inputs of the request-item features (coordinates double, `ts` datetime (naive UTC),
    opening hours string)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from training.ctr.encoding import COUNT_COLUMNS, raw_columns, request_item_inputs

    hours = {columns[-1] for _, derive, *columns in layout.request_item if derive == "open_now"}

    def kind(column: str) -> str:
        if column in ("user_id", "poi_id", *layout.small_int_fields, *COUNT_COLUMNS):
            return "long"
        return "double" if column in layout.numeric_names else "string"

    def input_kind(column: str) -> str:
        return "datetime" if column == "ts" else "string" if column in hours else "double"

    # not `required` for MLflow: a missing column is the model's own one-line error naming it
    inputs = Schema(
        [ColSpec(kind(c), c, required=False) for c in raw_columns(layout)]
        + [ColSpec(input_kind(c), c, required=False) for c in request_item_inputs(layout)]
    )
    outputs = Schema(
        [ColSpec("double", "p_ctr"), ColSpec("double", "p_ctcvr"), ColSpec("long", "unknown_scene_values")]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def _model_kwargs(folder: Path, layout) -> dict:
    return {
        "python_model": CtrScoringModel(),
        "signature": signature(layout),
        "artifacts": {ARTIFACT: str(folder)},
        "code_paths": [str(REPO_ROOT / p) for p in CODE_PACKAGES],
        "pip_requirements": ["torch", "numpy", "pandas", "pyarrow"],
    }


def log_scoring_model(cfg, data, model, layout) -> str:
    """Log the scoring model to the active run; returns its URI."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_folder(cfg, data, model, layout, Path(tmp) / ARTIFACT)
        info = mlflow.pyfunc.log_model(name=MODEL_NAME, **_model_kwargs(folder, layout))
    return info.model_uri


def save_scoring_model(cfg, data, model, layout, path) -> Path:
    """The same model as a local MLflow model folder (tests, benchmarks, offline hand-over)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_folder(cfg, data, model, layout, Path(tmp) / ARTIFACT)
        mlflow.pyfunc.save_model(path=str(path), **_model_kwargs(folder, layout))
    return Path(path)
