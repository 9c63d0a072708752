"""The frozen stage-2 encoder at inference time: resolve it once on the driver, load it once per
Python worker, pick the device from the Spark task's resources, embed a pandas Series of texts.

Sources (`encoder`): an MLflow model URI (`runs:/<run_id>/encoder`, `models:/...`, what
`larr train contrastive` logs) or a local MLflow model folder (`MLmodel` + `artifacts/encoder/`,
e.g. `training/embedding/pyfunc.py save_encoder_model`); the bare `artifacts/encoder` folder
inside one is accepted too. Nothing here imports training code: the model is loaded with
`mlflow.pyfunc.load_model` and its own code file (the self-contained `EncoderModel`) does the maths
(middle truncation that keeps the closing token, pooling at the last real token = the closing
special token of the text's last slice, the 128-d projection, L2 norm).

Encoder version: `enc-` + the first 16 hex digits of a sha256 over the encoder's content
(`encoder.json`, `projection.pt`, the backbone's `config.json`, `tokenizer.json` and weight files,
each hashed, in a fixed order). Computed once on the driver, so the same weights reached by a
`runs:/` URI, a `models:/` URI or a downloaded folder have the same version, and re-logging an
identical model does not re-embed anything.

Where executors load it from: in local mode (and on Databricks, whose workers reach the
workspace's MLflow) from the MLflow URI itself. On a cluster whose lakehouse is a local or
shared-filesystem path the driver's tracking store may be a sqlite file no other host can open,
so the driver stages the model folder once per version under `<lakehouse>/_encoders/<version>/`
(the storage every executor already reads the tables from) and workers load that folder.

Device: a task that Spark gave a GPU (`TaskContext.get().resources()["gpu"]`) runs on that CUDA
device in bfloat16 (float16 where bf16 is unsupported); otherwise the CPU in float32 with
`spark.task.cpus` torch threads. The projection always runs in float32.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.tracking import LATEST, TrackingError, resolve_latest

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "dbfs:/")
SETTINGS_FILE = "encoder.json"  # the layout of training/embedding/pyfunc.py (not imported)
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_CONTENT_FILES = ("encoder.json", "projection.pt", "backbone/config.json", "backbone/tokenizer.json")
_WEIGHT_PATTERNS = ("backbone/*.safetensors", "backbone/*.bin")

_CACHE: dict[tuple, object] = {}  # one loaded encoder per (uri, version, device, dtype) per process
LOADS = {"count": 0}  # how many times this process loaded an encoder (tests read it)


class EmbedError(ValueError):
    pass


@dataclass(frozen=True)
class EncoderRef:
    """What a worker needs to load the encoder the driver checked (small, pickled into the UDF)."""

    uri: str  # as the user gave it
    load_uri: str  # what workers pass to mlflow.pyfunc.load_model: an MLflow URI or an absolute folder
    tracking_uri: str | None  # workers point MLflow here before loading an MLflow URI
    version: str
    dim: int
    max_length: int


def is_mlflow_uri(source: str) -> bool:
    return source.startswith(MLFLOW_SCHEMES)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_version(encoder_folder: Path) -> str:
    """`enc-<16 hex>`: a sha256 over the content files of an `encoder` artifact folder."""
    files = [encoder_folder / name for name in _CONTENT_FILES if (encoder_folder / name).is_file()]
    for pattern in _WEIGHT_PATTERNS:
        files += sorted(encoder_folder.glob(pattern))
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(encoder_folder).as_posix()}:{_file_sha256(path)}\n".encode())
    return "enc-" + digest.hexdigest()[:16]


def _model_folder(folder: Path, uri: str) -> Path:
    """The MLflow model folder (with `MLmodel`) for a model folder or its `artifacts/encoder`."""
    if (folder / "MLmodel").is_file():
        return folder
    if (folder / SETTINGS_FILE).is_file() and (folder.parent.parent / "MLmodel").is_file():
        return folder.parent.parent
    raise EmbedError(
        f"encoder {uri} is not an MLflow model folder (no MLmodel file): pass the stage-2 model URI "
        "(runs:/<run_id>/encoder) or a folder written by save_encoder_model / mlflow.pyfunc.save_model"
    )


def _encoder_folder(model_folder: Path, uri: str) -> Path:
    found = sorted(model_folder.rglob(SETTINGS_FILE))
    if not found:
        raise EmbedError(f"encoder {uri} has no {SETTINGS_FILE}: it is not a stage-2 encoder model")
    return found[0].parent


def _load_python_model(load_uri: str):
    import mlflow

    model = mlflow.pyfunc.load_model(load_uri)
    return model.unwrap_python_model()


def executor_stage_dir(master: str, lakehouse_root: str) -> Path | None:
    """Where the driver stages the encoder for executors: `<lakehouse>/_encoders` on a cluster
    with a filesystem lakehouse; None (workers load the MLflow URI) locally or on object storage."""
    from core.catalog import is_remote

    if master.startswith("local") or is_remote(lakehouse_root):
        return None
    return Path(lakehouse_root).resolve() / "_encoders"


def stage_model(model_folder: Path, stage_dir: Path, version: str) -> Path:
    """Copy the model folder to `stage_dir/version` once (a crash mid-copy leaves no partial
    folder under that name); returns the staged folder."""
    target = stage_dir / version
    if (target / "MLmodel").is_file():
        return target
    stage_dir.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=stage_dir))
    shutil.copytree(model_folder, partial, dirs_exist_ok=True)
    try:
        partial.rename(target)
    except OSError:  # another job staged the same version meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve_encoder(
    uri: str, tracking_uri: str | None = None, stage_dir: Path | None = None
) -> tuple[EncoderRef, object]:
    """Driver side, before any Spark work: load the encoder once (a clear EmbedError naming the URI
    when it does not load) and compute its version. Returns the ref and the loaded model. With
    `stage_dir` (`executor_stage_dir`) workers load a copy staged there instead of the URI."""
    if not uri or not uri.strip():
        raise EmbedError(
            "no encoder: set encoder=latest:contrastive, models:/<id> (the stage-2 model) or a local MLflow model folder"
        )
    uri = uri.strip()
    if uri.startswith(LATEST):
        import mlflow

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        try:
            uri = resolve_latest(uri)  # the newest finished stage-2 run's model in this store
        except TrackingError as err:
            raise EmbedError(str(err)) from None
    try:
        with tempfile.TemporaryDirectory(prefix="larr-encoder-") as tmp:
            if is_mlflow_uri(uri):
                import mlflow

                if tracking_uri:
                    mlflow.set_tracking_uri(tracking_uri)
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
                load_uri = uri
            else:
                local = Path(uri).expanduser().resolve()
                if not local.is_dir():
                    raise EmbedError(f"encoder {uri} does not exist (neither a folder nor an MLflow URI)")
            model_folder = _model_folder(local, uri)
            if not is_mlflow_uri(uri):
                load_uri = str(model_folder)
            version = content_version(_encoder_folder(model_folder, uri))
            model = _load_python_model(str(model_folder))
            if stage_dir is not None:
                load_uri = str(stage_model(model_folder, Path(stage_dir), version))
    except EmbedError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to fetch or load is the same user error
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EmbedError(f"encoder {uri} does not load: {first}") from None
    if not all(hasattr(model, name) for name in ("embed", "place", "settings")):
        raise EmbedError(
            f"encoder {uri} was logged by an older EncoderModel without embed(); re-log it "
            "(training/embedding/pyfunc.py log_encoder)"
        )
    ref = EncoderRef(
        uri=uri,
        load_uri=load_uri,
        tracking_uri=tracking_uri if is_mlflow_uri(load_uri) else None,
        version=version,
        dim=int(model.projection.out_features),
        max_length=int(model.settings["max_length"]),
    )
    return ref, model


# -- device ------------------------------------------------------------------------------------
def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def choose_device(
    gpu_addresses: list[str],
    cuda_available: bool,
    bf16_supported: bool,
    precision: str = "auto",
    visible_devices: str | None = None,
) -> tuple[str, str]:
    """(device, dtype name) for a task. A GPU address Spark assigned becomes the CUDA ordinal (its
    index in CUDA_VISIBLE_DEVICES when that variable lists it); `auto` precision is bfloat16 on a
    GPU (float16 without bf16 support) and float32 on the CPU."""
    check_precision(precision)
    if gpu_addresses and cuda_available:
        address = str(gpu_addresses[0]).strip()
        visible = [v.strip() for v in (visible_devices or "").split(",") if v.strip()]
        if address in visible:
            ordinal = visible.index(address)
        elif address.isdigit() and not visible:
            ordinal = int(address)
        else:
            ordinal = 0
        dtype = ("bfloat16" if bf16_supported else "float16") if precision == "auto" else precision
        return f"cuda:{ordinal}", dtype
    return "cpu", "float32" if precision == "auto" else precision


def task_device(precision: str = "auto") -> tuple[str, str]:
    """The device of the running Spark task (CPU outside a task)."""
    import torch
    from pyspark import TaskContext

    context = TaskContext.get()
    resources = context.resources() if context is not None else {}
    addresses = list(resources["gpu"].addresses) if "gpu" in resources else []
    cuda = torch.cuda.is_available()
    if addresses and not cuda:
        print(
            f"larr embed: task was given GPU {addresses} but torch sees no CUDA; using the CPU",
            file=sys.stderr,
        )
    bf16 = cuda and torch.cuda.is_bf16_supported()
    device, dtype = choose_device(addresses, cuda, bf16, precision, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if device == "cpu" and context is not None:
        torch.set_num_threads(max(1, int(context.cpus())))
    return device, dtype


# -- worker side -------------------------------------------------------------------------------
def get_encoder(ref: EncoderRef, device: str = "cpu", dtype: str = "float32"):
    """The encoder of `ref` on `device`, loaded at most once per process (module-level cache)."""
    key = (ref.load_uri, ref.version, device, dtype)
    if key not in _CACHE:
        import torch

        if ref.tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(ref.tracking_uri)
        model = _load_python_model(ref.load_uri)
        model.place(device, getattr(torch, dtype))
        LOADS["count"] += 1
        _CACHE[key] = model
        # one line per load in the executor's stderr: how a cluster run shows where it loaded
        print(
            f"larr embed: encoder {ref.version} loaded from {ref.load_uri} on {device} ({dtype}) "
            f"by pid {os.getpid()}",
            file=sys.stderr,
            flush=True,
        )
    return _CACHE[key]


def embed_series(model, texts: pd.Series, batch_size: int) -> pd.DataFrame:
    """`vector` (a float32 array per row) and `truncated` per text, in order. A null or blank text
    gets a null vector (the jobs route such rows to their rejects table before embedding)."""
    valid = texts.notna() & (texts.astype("string").str.strip().str.len() > 0)
    vectors = pd.Series([None] * len(texts), dtype=object)
    truncated = np.zeros(len(texts), dtype=bool)
    if valid.any():
        values, cut = model.embed([str(t) for t in texts[valid]], batch_size)
        positions = np.flatnonzero(valid.to_numpy())
        vectors.iloc[positions] = list(values)
        truncated[positions] = cut
    return pd.DataFrame({"vector": vectors, "truncated": truncated})
