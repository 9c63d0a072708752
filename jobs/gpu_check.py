"""`make gpu-check`: the platform's GPU paths measured in one run of a few minutes, as ONE JSON object.

    python -m jobs.gpu_check [--device auto|cuda|cpu] [--tiny] [--budget SECONDS] [--parts embed,cpt,...]
    python -m jobs.gpu_check --pack-deps .whl    # the packages a bare CUDA image lacks, to carry there

stdout holds exactly one JSON object (progress goes to stderr); `failed` and `skipped` list the
parts (or pieces of one: `embed.udf`, `ctr.models.p5`) that did not run, `ok` is true when both are
empty, and the exit status is 1 when something failed. Each part runs in its own Python process (a crash, a hang or a CUDA error costs that part
only, and its peak memory is its own) under what is left of the time budget (`--budget`, 450 s):

- `embed`: the embedding UDF (`features/embeddings/udf.py`) on the GPU in bfloat16, against the
  same encoder called directly in one process (`ratio_to_direct`, as `larr bench embed`). The
  encoder is the check LLM below plus the seeded 128-d projection, saved as the MLflow model the
  UDF loads (`benchmarks/embed._bench_encoder`). `udf` is the real pandas UDF on a Spark session:
  on CUDA a one-worker `local-cluster` whose task is handed the GPU (plain local mode never hands
  a task a GPU, so the UDF would run on the CPU); `udf_in_process` is the UDF's body without Spark
  (`encoder_runtime.get_encoder` + `embed_series` over Arrow-sized batches): its Python cost alone.
  Without Java (or a pyspark with its jars) `udf` says so; without mlflow the direct figure comes
  from the training-side encoder (`training.embedding.encoder.encode_texts`, the same maths).
- `cpt`, `contrastive`: training steps of stage 1 / stage 2 as the trainers take them, measured by
  `benchmarks/llm.measure` (the trainers' model set-up, AdamW, schedule, `TorchEngine`, shared
  `train_loop` and loss functions; bf16 autocast with fp32 master weights on CUDA).
- `zero2`, `zero3`: stage-1 steps through the project's `DeepSpeedEngine` (`build_engine` with
  `jobs/deepspeed/zero2.json` / `zero3.json`, as `larr train cpt` with `deepspeed_config`) in a
  process group of one rank: NCCL on CUDA, gloo on the CPU (where DeepSpeed's shared-memory
  all-reduce, useless for one rank, is switched off: it is a JIT C++ build of minutes). ZeRO-3
  loads the weights partitioned.
- `ctr`: training steps of every stage-3 model (`training/ctr/models`: lr, wide_deep, deepfm,
  ple, larr, larr_plus, and p5 on the check LLM) through `training.ctr.train.build` and `batch_loss` (its bf16
  autocast on CUDA), on random batches shaped by the synthetic world's dataset schema, LARR on a
  random 128-d scene-vector export.

The check LLM (no download, nothing to carry): a randomly initialised Llama with SmolLM2-135M's
shape (30 blocks, hidden 576, 9 heads, 3 KV heads, MLP 1536, tied embeddings: ~106M parameters in
its blocks) on the tiny byte-level BPE of `training/lm/tiny.py` (vocabulary 420, so the LM head is
negligible), at max_length 512; `--tiny` uses `tiny_llama`'s 2-block, hidden-32 model instead.
The JSON's `model` names the config that ran.

MFU: model FLOPs per real (non-pad) token = `benchmarks/llm`'s 6N-style count (2N forward, 2N
activation gradients, 2N_trained weight gradients) + PaLM's attention term 12 x layers x hidden x s
(s the padded batch width; causal masking would halve it), times tokens/s, over the GPU's dense
bf16 peak (`bench_llm.GPU_BF16_PEAK_TFLOPS` by device name; an unknown GPU gives null and a note).
`mfu_6n` leaves the attention term out. CTR models: FLOPs of one step as torch's FlopCounterMode
counts them (embedding lookups count 0), per sample. Peak memory: `torch.cuda.max_memory_allocated`
(peak RSS on the CPU).

A part that fails reports {"error": "<one line>"}; one whose package (pyspark, mlflow, deepspeed)
or Java is missing reports {"skipped": "<why>"}; the others still run. `--device auto` runs on CUDA
when torch sees it, else the CPU path at `--tiny` sizes; `--device cpu --tiny` runs every part on
the CPU (fp32, gloo, Spark local mode; tests/gpu/test_gpu_paths.py): about a minute of CPU time,
mostly imports, the Python workers' start and Spark's (1.5-3 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTS = ("embed", "cpt", "contrastive", "zero2", "zero3", "ctr")
DEFAULT_BUDGET_S = 450.0  # `make gpu-check` must finish within 8 minutes
PART_CAP_S = {"embed": 150, "cpt": 75, "contrastive": 75, "zero2": 90, "zero3": 90, "ctr": 120}
ARROW_BATCH = 10_000  # spark.sql.execution.arrow.maxRecordsPerBatch's default: one UDF batch
SEED = 17
LLM_FILE = "check-llm.json"  # written next to the check LLM: its config and parameter count

# SmolLM2-135M's shape (the backbone the trainers default to), randomly initialised
SMOLLM2_SHAPE = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    rope_theta=100000.0,
)


@dataclass(frozen=True)
class Sizes:
    label: str
    llm: dict  # LlamaConfig overrides of training.lm.tiny.tiny_llama
    max_length: int  # tokens per stage-1 sample / stage-2 text
    llm_batch: int  # texts per step (stage 2: half as many pairs)
    warmup: int  # untimed steps
    steps: int  # timed steps
    embed_texts: int
    embed_batch: int
    embed_max_length: int
    ctr_batch: int
    ctr_steps: int
    ctr_id_buckets: int  # embedding rows of user_id and poi_id (EncodingConfig.id_buckets)
    p5_batch: int
    p5_max_length: int


FULL = Sizes(
    label="smollm2-135m-shape, random init",
    llm=SMOLLM2_SHAPE,
    max_length=512,
    llm_batch=64,  # bench llm's cuda_batch_size
    warmup=2,
    steps=5,
    embed_texts=8192,
    embed_batch=256,
    embed_max_length=128,
    ctr_batch=2400,  # the paper's batch
    ctr_steps=10,
    ctr_id_buckets=100_000,  # the trainer's default
    p5_batch=32,
    p5_max_length=96,
)
TINY = Sizes(
    label="tiny llama (training/lm/tiny.py), random init",
    llm={},
    max_length=64,
    llm_batch=4,
    warmup=1,
    steps=2,
    embed_texts=48,
    embed_batch=16,
    embed_max_length=32,
    ctr_batch=64,
    ctr_steps=2,
    ctr_id_buckets=1000,
    p5_batch=4,
    p5_max_length=48,
)


class Skip(Exception):
    """A part cannot run here (a package or Java is missing): reported as {"skipped": why}."""


def log(message: str) -> None:
    print(f"gpu-check: {message}", file=sys.stderr, flush=True)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:500] if text else type(err).__name__


def _sig(value: float) -> float:
    """4 significant digits (an MFU of a tiny model stays readable)."""
    return float(f"{value:.4g}")


def version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def need(module: str, why: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise Skip(f"{module} is not installed ({why})")


def need_project() -> None:
    need("pyspark", "the project's modules import it; carry it as docs/cluster.md's GPU check says")


def java_version() -> str | None:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else None
    java = java or shutil.which("java")
    if java is None:
        return None
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (done.stderr or done.stdout).strip().splitlines()
    return first[0] if done.returncode == 0 and first else None


def spark_jars_present() -> bool:
    try:
        spec = importlib.util.find_spec("pyspark")
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    return any((Path(spec.origin).parent / "jars").glob("spark-core_*.jar"))


# -- context of one part (child process) -----------------------------------------------------------
@dataclass
class Context:
    device_type: str  # cuda | cpu
    sizes: Sizes
    workdir: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def cuda(self) -> bool:
        return self.device_type == "cuda"

    def device(self):
        from training.common.device import pick_device

        return pick_device(self.device_type)

    def reset_peak(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self) -> dict:
        import torch

        if self.cuda:
            return {"peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return {"peak_rss_mb": round(rss, 1)}

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def timed(self, fn) -> float:
        self.sync()
        started = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - started

    def peak_tflops(self) -> tuple[float | None, str | None]:
        """(dense bf16 peak TFLOP/s, note) of this device; (None, why) on the CPU or an unknown GPU."""
        if not self.cuda:
            return None, "cpu: no bf16 tensor-core peak"
        import torch

        from benchmarks.llm import _gpu_peak_tflops

        name = torch.cuda.get_device_name()
        peak = _gpu_peak_tflops(name)
        return (
            peak,
            None if peak else f"no bf16 peak known for {name!r} (benchmarks/llm.GPU_BF16_PEAK_TFLOPS)",
        )

    def mfu(self, flops_per_s: float) -> dict:
        peak, note = self.peak_tflops()
        out = {"mfu": _sig(flops_per_s / (peak * 1e12)) if peak else None, "gpu_bf16_peak_tflops": peak}
        return out | ({"mfu_note": note} if note else {})


# -- the check LLM ---------------------------------------------------------------------------------
def check_tokenizer():
    """training/lm/tiny.py's byte-level BPE, also trained on P5's answer phrases (each answer word
    then starts with its own token, which the P5 model needs)."""
    from training.ctr.models.p5 import ANSWER_WORDS
    from training.lm.tiny import SAMPLE_TEXTS, tiny_tokenizer

    answers = tuple(f"; the user will{w}" for w in ANSWER_WORDS) * 20
    return tiny_tokenizer(SAMPLE_TEXTS + answers, vocab_size=420)


def check_llm(ctx: Context) -> str:
    """The check LLM's Hugging Face folder (built once per run, by the first part that needs it)."""
    folder = ctx.workdir / "llm"
    if (folder / LLM_FILE).is_file():
        return str(folder)
    from training.lm.backbone import save_backbone
    from training.lm.tiny import tiny_llama

    tokenizer = check_tokenizer()
    settings = dict(ctx.sizes.llm)
    settings.setdefault("max_position_embeddings", max(256, ctx.sizes.max_length))
    model = tiny_llama(tokenizer, seed=SEED, **settings)
    save_backbone(model, tokenizer, folder)
    config = model.config
    meta = {
        "name": ctx.sizes.label,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "layers": config.num_hidden_layers,
        "heads": config.num_attention_heads,
        "kv_heads": config.num_key_value_heads,
        "vocab": config.vocab_size,
        "tied_embeddings": bool(config.tie_word_embeddings),
        "params": sum(p.numel() for p in model.parameters()),
        "params_without_embeddings": sum(p.numel() for p in model.model.layers.parameters())
        + sum(p.numel() for p in model.model.norm.parameters()),
        "max_length": ctx.sizes.max_length,
        "tokenizer": "training/lm/tiny.py byte-level BPE",
    }
    (folder / LLM_FILE).write_text(json.dumps(meta))
    return str(folder)


def llm_meta(folder: str) -> dict:
    return json.loads((Path(folder) / LLM_FILE).read_text())


def attention_flops_per_token(meta: dict, width: float) -> float:
    """PaLM's attention FLOPs per token of a training step: 12 x layers x hidden x sequence width."""
    return 12.0 * meta["layers"] * meta["hidden_size"] * width


# -- parts -----------------------------------------------------------------------------------------
def embed_texts(n: int) -> list[str]:
    """User and POI texts shaped like the synthetic world's (the three pair types' sides), n of them."""
    from benchmarks.llm import PAIR_TYPES, pair_texts

    texts: list[str] = []
    per = max(1, n // (2 * len(PAIR_TYPES)) + 1)
    for pair_type in PAIR_TYPES:
        a, b = pair_texts(pair_type, per, SEED)
        texts += a + b
    return texts[:n]


def _task_gpus(_rows):
    """Spark task: the GPU addresses Spark handed it and the CUDA it sees (probe before the UDF)."""
    import torch
    from pyspark import TaskContext

    resources = TaskContext.get().resources()
    yield (list(resources["gpu"].addresses) if "gpu" in resources else [], torch.cuda.is_available())


def spark_udf(ctx: Context, ref, texts: list[str], batch_size: int, direct_vectors, precision: str) -> dict:
    """The real pandas UDF on a Spark session: cold (worker start, encoder load) and warm runs."""
    import numpy as np

    java = java_version()
    if java is None:
        raise Skip("no Java on this machine: Spark (the UDF's engine) needs Java 17")
    if not spark_jars_present():
        raise Skip("this pyspark has no jars (a pure-Python copy): Spark cannot start here")
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from features.embeddings.udf import embedding_udf, length_sorted

    cores = os.cpu_count() or 1
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_WORKER_DIR"] = str(ctx.workdir / "spark-work")  # executors' logs, not in SPARK_HOME
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    builder = (
        SparkSession.builder.appName("larr-gpu-check")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.task.cpus", str(cores))
        .config("spark.executorEnv.PYTHONPATH", python_path)
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
    )
    if ctx.cuda:
        import torch

        index = torch.cuda.current_device()
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        address = visible[index] if index < len(visible) else str(index)
        script = ctx.workdir / "gpus.sh"
        script.write_text(f'#!/bin/sh\necho \'{{"name": "gpu", "addresses": ["{address}"]}}\'\n')
        script.chmod(0o755)
        # local mode never hands a task a GPU: a one-worker local cluster, whose worker owns the GPU
        builder = (
            builder.master(f"local-cluster[1,{cores},4096]")
            .config("spark.executor.memory", "2g")
            .config("spark.worker.resource.gpu.amount", "1")
            .config("spark.worker.resource.gpu.discoveryScript", str(script))
            .config("spark.executor.resource.gpu.amount", "1")
            .config("spark.task.resource.gpu.amount", "1")
        )
    else:
        builder = builder.master(f"local[{cores}]")
    started = time.perf_counter()
    spark = builder.getOrCreate()
    try:
        start_s = time.perf_counter() - started
        master = spark.sparkContext.master
        (gpus, task_cuda), *_ = spark.sparkContext.parallelize([0], 1).mapPartitions(_task_gpus).collect()
        if ctx.cuda and not (gpus and task_cuda):
            raise RuntimeError(
                f"the Spark task got GPUs {gpus} and sees CUDA={task_cuda}: it would run on the CPU"
            )
        udf = embedding_udf(ref, batch_size, precision="auto")  # auto: bf16 on the task's GPU
        rows = [(i, t) for i, t in enumerate(texts)]
        frame = length_sorted(spark.createDataFrame(rows, "id long, text string"), "text", 1)
        embedded = frame.select("id", udf(F.col("text")).alias("e"))

        def job() -> None:
            embedded.write.format("noop").mode("overwrite").save()

        cold = ctx.timed(job)
        warm = ctx.timed(job)
        sample = embedded.where(F.col("id") < 8).collect()
        got = np.array([r["e"]["vector"] for r in sorted(sample, key=lambda r: r["id"])], dtype=np.float32)
        diff = float(np.abs(got - direct_vectors[: len(got)]).max())
    finally:
        spark.stop()
    return {
        "texts_per_s": round(len(texts) / warm, 2),
        "cold_texts_per_s": round(len(texts) / cold, 2),
        "task_gpus": gpus,
        "task_precision": precision if gpus else "float32",
        "max_abs_diff_vs_direct": round(diff, 5),
        "session_start_s": round(start_s, 1),
        "master": master,
        "java": java,
    }


def part_embed(ctx: Context) -> dict:
    import numpy as np
    import torch

    need_project()
    sizes = ctx.sizes
    folder = check_llm(ctx)
    texts = embed_texts(sizes.embed_texts)
    device = ctx.device()
    precision = "bfloat16" if ctx.cuda else "float32"
    out: dict = {
        "encoder": f"{llm_meta(folder)['name']} + seeded 128-d projection",
        "device": str(device),
        "precision": precision,
        "texts": len(texts),
        "batch_size": sizes.embed_batch,
        "max_length": sizes.embed_max_length,
    }
    try:
        need("mlflow", "the UDF loads the encoder as an MLflow model")
        from benchmarks.embed import BenchEmbedConfig, _bench_encoder
        from features.embeddings import encoder_runtime

        cfg = BenchEmbedConfig(backbone=folder, max_length=sizes.embed_max_length)
        ref, model = encoder_runtime.resolve_encoder(_bench_encoder(cfg, ctx.workdir / "encoder"))
    except Exception as err:  # noqa: BLE001 - without the MLflow model: the training-side encoder only
        reason = str(err) if isinstance(err, Skip) else f"the MLflow encoder model: {one_line(err)}"
        out.update(_embed_direct_only(ctx, folder, texts, device))
        out["udf"] = out["udf_in_process"] = {"skipped" if isinstance(err, Skip) else "error": reason}
        return out | {"udf_texts_per_s": None, "ratio_to_direct": None} | ctx.peak_memory()

    ctx.reset_peak()
    dtype = getattr(torch, precision)
    model.place(device, dtype)
    model.embed(texts[: sizes.embed_batch], sizes.embed_batch)  # warm-up
    direct_s = ctx.timed(lambda: model.embed(texts, sizes.embed_batch))
    direct_vectors, _ = model.embed(texts[:8], sizes.embed_batch)
    direct = len(texts) / direct_s
    out["direct_texts_per_s"] = round(direct, 2)
    out["direct_path"] = "EncoderModel.embed (the logged MLflow encoder), one process"

    # the UDF's body without Spark: the cached encoder and embed_series on Arrow-sized batches
    import pandas as pd

    worker_model = encoder_runtime.get_encoder(ref, str(device), precision)
    series = pd.Series(texts, dtype=object)
    encoder_runtime.embed_series(worker_model, series.iloc[: sizes.embed_batch], sizes.embed_batch)  # warm-up

    def body() -> None:
        for start in range(0, len(series), ARROW_BATCH):
            encoder_runtime.embed_series(
                worker_model, series.iloc[start : start + ARROW_BATCH], sizes.embed_batch
            )

    body_s = ctx.timed(body)
    out["udf_in_process"] = {
        "texts_per_s": round(len(texts) / body_s, 2),
        "ratio_to_direct": round(direct_s / body_s, 3),
    }
    out |= ctx.peak_memory()
    try:
        udf = spark_udf(ctx, ref, texts, sizes.embed_batch, np.asarray(direct_vectors), precision)
        udf["ratio_to_direct"] = round(udf["texts_per_s"] / direct, 3)
        out["udf"] = udf
    except Skip as why:
        out["udf"] = {"skipped": str(why)}
    except Exception as err:  # noqa: BLE001 - the other figures stand
        out["udf"] = {"error": one_line(err)}
    out["udf_texts_per_s"] = out["udf"].get("texts_per_s")
    out["ratio_to_direct"] = out["udf"].get("ratio_to_direct")
    return out


def _embed_direct_only(ctx: Context, folder: str, texts: list[str], device) -> dict:
    """The direct figure without mlflow: stage 2's TextEncoder and encode_texts (the same maths)."""
    import torch

    from etl.synthetic.job import declared_schema
    from etl.text.slices import token_slices
    from training.embedding.encoder import EMBEDDING_DIM, TextEncoder, encode_texts
    from training.lm.backbone import add_special_tokens, load_backbone

    sizes = ctx.sizes
    model, tokenizer = load_backbone(folder, dtype=torch.float32)
    add_special_tokens(model, tokenizer, token_slices(declared_schema()))
    encoder = TextEncoder(model, dim=EMBEDDING_DIM, seed=0).to(device)
    if ctx.cuda:
        encoder.backbone.to(torch.bfloat16)
    ctx.reset_peak()

    def run(part):
        return encode_texts(encoder, tokenizer, part, sizes.embed_batch, sizes.embed_max_length, device)

    run(texts[: sizes.embed_batch])
    seconds = ctx.timed(lambda: run(texts))
    return {
        "direct_texts_per_s": round(len(texts) / seconds, 2),
        "direct_path": "training.embedding.encoder.encode_texts (no MLflow encoder model here)",
    }


def _llm_case(ctx: Context, stage: str):
    from benchmarks.llm import Case

    sizes = ctx.sizes
    return Case(
        model=sizes.label,
        path=check_llm(ctx),
        stage=stage,
        train_layers=0,
        device=ctx.device_type,
        batch_size=sizes.llm_batch,
        max_length=sizes.max_length,
        warmup_steps=sizes.warmup,
        steps=sizes.steps,
        seed=SEED,
    )


def _llm_figures(
    ctx: Context, meta: dict, tokens: int, texts: int, padded: int, seconds: float, flops_6n: float
):
    """tokens/s, samples/s, FLOPs per token (6N-style + attention) and MFU of timed train steps."""
    tokens_per_s = tokens / seconds
    width = padded / texts
    attention = attention_flops_per_token(meta, width)
    out = {
        "tokens_per_s": round(tokens_per_s, 1),
        "samples_per_s": round(texts / seconds, 2),
        "mean_padded_width": round(width, 1),
        "train_flops_per_token": int(flops_6n + attention),
        "attention_flops_per_token": int(attention),
        "train_tflops": round((flops_6n + attention) * tokens_per_s / 1e12, 3),
    }
    out |= ctx.mfu((flops_6n + attention) * tokens_per_s)
    peak, _ = ctx.peak_tflops()
    out["mfu_6n"] = _sig(flops_6n * tokens_per_s / (peak * 1e12)) if peak else None
    return out


def part_llm(ctx: Context, stage: str) -> dict:
    need_project()
    from benchmarks.llm import measure

    case = _llm_case(ctx, stage)
    meta = llm_meta(case.path)
    m = measure(case)
    padded = round(m["tokens"] / (1 - m["padding_share"])) if m["padding_share"] < 1 else m["tokens"]
    seconds = m["tokens"] / m["tokens_per_s"]
    out = {
        "precision": "bf16 autocast, fp32 master weights" if ctx.cuda else "float32",
        "batch_texts": case.batch_size if stage == "cpt" else f"{case.batch_size // 2} pairs",
        "max_length": case.max_length,
        "steps_timed": case.steps,
        "seconds_per_step": m["seconds_per_step"],
        "tokens_per_text": m["tokens_per_text"],
        "padding_share": m["padding_share"],
        **_llm_figures(ctx, meta, m["tokens"], m["texts"], padded, seconds, m["train_flops_per_token"]),
        "forward_tokens_per_s": m["forward_tokens_per_s"],
        "train_vs_forward": m["train_vs_forward"],
        "final_loss": m["final_loss"],
        "params": m["params"],
        "trainable_params": m["trainable_params"],
    }
    if ctx.cuda:
        out["peak_memory_mb"] = m["gpu_peak_mb"]
    else:
        out["peak_rss_mb"] = m["peak_rss_mb"]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part_zero(ctx: Context, stage_number: int) -> dict:
    """Stage-1 steps through DeepSpeedEngine under ZeRO-`stage_number`, a process group of one rank."""
    need_project()
    need("deepspeed", "the ZeRO engine")
    for name, value in (
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
    ):
        os.environ[name] = value
    os.environ["MASTER_PORT"] = str(_free_port())
    import deepspeed
    import torch
    import torch.distributed as dist

    from benchmarks.llm import _build
    from training.common.engine import (
        DeepSpeedEngine,
        announce_zero3,
        build_engine,
        deepspeed_settings,
        zero_stage,
    )
    from training.common.loop import LoopSettings, train_loop
    from training.common.schedule import build_optimizer, build_scheduler
    from training.common.seed import seed_everything

    case = _llm_case(ctx, "cpt")
    meta = llm_meta(case.path)
    device = ctx.device()
    settings = deepspeed_settings(
        str(REPO_ROOT / "jobs" / "deepspeed" / f"zero{stage_number}.json"),
        micro_batch_size=case.batch_size,
        grad_accum=1,
        clip_norm=1.0,
        device=device,
    )
    if not ctx.cuda:  # one rank needs no shared-memory all-reduce: skip its JIT C++ build (minutes)
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if ctx.cuda else "gloo")  # what DeepSpeedEngine does
    ctx.reset_peak()
    seed_everything(case.seed)
    announce_zero3(settings)  # ZeRO-3: the backbone loads straight into its partitions (as cpt.train)
    module, _, _, no_decay, cfg, loss_fn, batches = _build(case)  # the trainer's model, loss and batches
    if zero_stage(settings) != 3:
        module.to(device)
    params = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())
    optimizer = build_optimizer(module, cfg.lr, cfg.weight_decay, no_decay=no_decay)
    scheduler = build_scheduler(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    engine = build_engine(
        module, optimizer, scheduler, grad_accum=1, clip_norm=cfg.clip_norm, device=device, settings=settings
    )
    if not isinstance(engine, DeepSpeedEngine):
        raise RuntimeError(f"build_engine returned {type(engine).__name__}, not DeepSpeedEngine")

    def train(part) -> tuple[int, float]:
        result = train_loop(
            engine,
            lambda epoch, skip: part[skip:],
            loss_fn,
            LoopSettings(max_steps=len(part), progress=False),
            config=cfg,
            log=lambda _: None,
            step_metrics=False,  # timed: no per-step MLflow calls
        )
        return result.tokens, result.losses[-1]

    warm, timed = batches[: case.warmup_steps], batches[case.warmup_steps :]
    if warm:
        train(warm)
    box = {}
    seconds = ctx.timed(lambda: box.update(zip(("tokens", "loss"), train(timed), strict=True)))
    texts = sum(int(b["attention_mask"].shape[0]) for b in timed)
    padded = sum(int(b["attention_mask"].numel()) for b in timed)
    # every weight trains; the tied LM head is the embedding matrix, a matmul counted once (6N)
    embedding = module.get_input_embeddings().weight
    head = module.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    n_matmul = params - (0 if tied else getattr(embedding, "ds_numel", embedding.numel()))
    out = {
        "zero_stage": zero_stage(settings),
        "backend": dist.get_backend(),
        "world_size": dist.get_world_size(),
        "precision": "bf16 (DeepSpeed), fp32 master weights" if settings["bf16"]["enabled"] else "float32",
        "batch_texts": case.batch_size,
        "max_length": case.max_length,
        "steps_timed": len(timed),
        "seconds_per_step": float(f"{seconds / len(timed):.4g}"),
        **_llm_figures(ctx, meta, box["tokens"], texts, padded, seconds, 6.0 * n_matmul),
        "final_loss": round(box["loss"], 4),
        "params": params,
        "partitioned": any(hasattr(p, "ds_id") for p in module.parameters()),
        "deepspeed": deepspeed.__version__,
    }
    out |= ctx.peak_memory()
    if not torch.isfinite(torch.tensor(box["loss"])):
        raise RuntimeError(f"non-finite loss {box['loss']} under ZeRO-{stage_number}")
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
    return out


def _ctr_batch(layout, n: int, tables, rng, with_texts: bool) -> dict:
    """A random batch of samples.ctr columns for `layout` (ids, counts, rates, labels, prompt values);
    scene ids drawn from the export (1 in 10 unknown), as the trainer reads them; user and POI ids
    among 0..399 (the text export holds some of them)."""
    import numpy as np

    from training.ctr.encoding import LABEL_COLUMNS, id_column, training_columns

    batch: dict = {}
    scene_ids = {}
    if tables.scene is not None:
        for feature in layout.scene_features:
            known = tables.scene.vectors[feature].ids
            picked = known[rng.integers(0, len(known), n)]
            scene_ids[id_column(feature)] = np.where(rng.random(n) < 0.1, -1, picked)
    for column in training_columns(layout, with_texts=with_texts):
        if column in scene_ids:
            batch[column] = scene_ids[column]
        elif column in ("user_id", "poi_id"):
            batch[column] = rng.integers(0, 400, n)
        elif column in layout.field_names:
            batch[column] = rng.integers(0, 1 << 40, n)
        elif column in layout.numeric_names:
            batch[column] = rng.exponential(3.0, n)
        elif column not in LABEL_COLUMNS:  # prompt words (P5)
            batch[column] = np.array(
                [f"{column.split('_')[-1]}{k}" for k in rng.integers(0, 5, n)], dtype=object
            )
    click = (rng.random(n) < 0.3).astype(np.int32)
    batch["click"] = click
    batch["ctcvr"] = click * (rng.random(n) < 0.3).astype(np.int32)
    batch["neg_rate"] = np.full(n, 0.3)
    if with_texts:  # integer prompt columns must hold integers
        for column in ("position", *layout.small_int_fields):
            if column in batch:
                batch[column] = rng.integers(1, 30, n)
    return batch


def _scene_export(path: Path, scene_features: tuple[str, ...], rng) -> str:
    """A scene-vector export of random unit 128-d vectors, 50 ids per feature."""
    import numpy as np

    from features.embeddings.vectors import save_scene_vectors
    from training.embedding.encoder import EMBEDDING_DIM

    per_feature = {}
    for feature in scene_features:
        vectors = rng.normal(size=(50, EMBEDDING_DIM))
        ids = rng.choice(1 << 40, size=50, replace=False)
        per_feature[feature] = (ids, vectors / np.linalg.norm(vectors, axis=1)[:, None])
    save_scene_vectors(
        str(path), per_feature, {"encoder_uri": "gpu-check", "encoder_version": "enc-gpu-check"}
    )
    return str(path)


def _text_export(path: Path, rng) -> str:
    """Random unit text vectors of 200 user and 100 POI ids (LARR+; other ids read the mean row)."""
    import numpy as np

    from features.embeddings.vectors import save_scene_vectors
    from training.embedding.encoder import EMBEDDING_DIM

    per_side = {}
    for side, count in (("user", 200), ("poi", 100)):
        vectors = rng.normal(size=(count, EMBEDDING_DIM))
        per_side[side] = (np.arange(count), vectors / np.linalg.norm(vectors, axis=1)[:, None])
    save_scene_vectors(str(path), per_side, {"encoder_uri": "gpu-check", "encoder_version": "enc-gpu-check"})
    return str(path)


def part_ctr(ctx: Context) -> dict:
    need_project()
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from core.dataset_schema import sample_fields
    from etl.synthetic.job import declared_schema
    from training.common.engine import TorchEngine
    from training.common.loop import LoopSettings, StepOutput, train_loop
    from training.common.schedule import build_optimizer, build_scheduler
    from training.common.seed import seed_everything
    from training.ctr import train as ctr_train
    from training.ctr.encoding import EncodingConfig
    from training.ctr.names import CTR_MODELS, LARR_PLUS, P5, SCENE_MODELS

    sizes = ctx.sizes
    device = ctx.device()
    schema = declared_schema()
    rng = np.random.default_rng(SEED)
    export = _scene_export(ctx.workdir / "scene-vectors.npz", schema.scene_names, rng)
    texts = _text_export(ctx.workdir / "text-vectors.npz", rng)
    data = ctr_train.CtrData(
        train=None,
        test=None,
        neg_rate=0.3,
        bayes={},
        scene_vectors=None,
        encoder_uri=None,
        fields=sample_fields(schema),
        scene_features=schema.scene_names,
    )
    peak, note = ctx.peak_tflops()
    out: dict = {"precision": "bf16 autocast" if ctx.cuda else "float32", "models": {}}
    if note:
        out["mfu_note"] = note
    for name in CTR_MODELS:
        started = time.perf_counter()
        try:
            is_p5 = name == P5
            p5 = ctr_train.P5Config()
            if is_p5:  # P5 on the check LLM (SmolLM2 in production)
                p5 = replace(
                    p5, source=check_llm(ctx), batch_size=sizes.p5_batch, max_length=sizes.p5_max_length
                )
            cfg = ctr_train.CtrConfig(
                model=name,
                batch_size=sizes.ctr_batch,
                device=ctx.device_type,
                progress=False,
                p5=p5,
                encoding=EncodingConfig(id_buckets=sizes.ctr_id_buckets),
            )
            model_data = (
                replace(data, scene_vectors=export, encoder_uri="gpu-check") if name in SCENE_MODELS else data
            )
            if name == LARR_PLUS:
                model_data = replace(model_data, text_vectors=texts)
            ctx.reset_peak()
            seed_everything(SEED)
            model, layout, tables = ctr_train.build(cfg, model_data)
            model.to(device)
            batch_size = sizes.p5_batch if is_p5 else sizes.ctr_batch
            steps = max(1, sizes.steps if is_p5 else sizes.ctr_steps)
            batches = [
                _ctr_batch(layout, batch_size, tables, rng, is_p5) for _ in range(sizes.warmup + steps)
            ]
            optimizer = build_optimizer(model, 1e-4, 0.0, betas=(0.9, 0.999))
            scheduler = build_scheduler(optimizer, warmup_steps=0, max_steps=len(batches), min_ratio=1.0)
            engine = TorchEngine(model, optimizer, scheduler, grad_accum=1, clip_norm=0.0, device=device)

            def loss_fn(module, batch, layout=layout, tables=tables, cfg=cfg) -> StepOutput:
                loss, _ = ctr_train.batch_loss(module, batch, layout, tables, cfg, device)
                return StepOutput(loss, len(batch["click"]))

            def train(part, engine=engine, loss_fn=loss_fn, cfg=cfg):
                settings = LoopSettings(max_steps=len(part), progress=False)
                return train_loop(  # timed: no per-step MLflow calls
                    engine,
                    lambda e, s: part[s:],
                    loss_fn,
                    settings,
                    config=cfg,
                    log=lambda _: None,
                    step_metrics=False,
                )

            train(batches[: sizes.warmup] or batches[:1])
            timed = batches[sizes.warmup :]
            box = {}
            seconds = ctx.timed(lambda train=train, timed=timed, box=box: box.update(result=train(timed)))
            counter = FlopCounterMode(display=False)
            with counter:
                loss_fn(model, batches[0]).loss.backward()
            model.zero_grad(set_to_none=True)
            samples_per_s = len(timed) * batch_size / seconds
            flops_per_sample = counter.get_total_flops() / batch_size
            entry = {
                "batch_size": batch_size,
                "steps_timed": len(timed),
                "samples_per_s": round(samples_per_s, 1),
                "seconds_per_step": float(f"{seconds / len(timed):.4g}"),
                "final_loss": round(box["result"].losses[-1], 4),
                "params": sum(p.numel() for p in model.parameters()),
                "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "flops_per_sample": int(flops_per_sample),
                "mfu": _sig(flops_per_sample * samples_per_s / (peak * 1e12)) if peak else None,
            }
            if not np.isfinite(entry["final_loss"]):
                raise RuntimeError(f"non-finite loss {entry['final_loss']}")
            entry |= ctx.peak_memory()
            del model, engine, optimizer
            if ctx.cuda:
                torch.cuda.empty_cache()
        except Exception as err:  # noqa: BLE001 - one model's failure leaves the others' figures
            entry = {"error": one_line(err)}
        entry["seconds"] = round(time.perf_counter() - started, 1)
        out["models"][name] = entry
        log(f"ctr {name}: {entry}")
    failed = [n for n, e in out["models"].items() if "error" in e]
    if failed:
        out["error"] = f"CTR models failed: {', '.join(failed)}"
    return out


PART_FUNCTIONS = {
    "embed": part_embed,
    "cpt": lambda ctx: part_llm(ctx, "cpt"),
    "contrastive": lambda ctx: part_llm(ctx, "contrastive"),
    "zero2": lambda ctx: part_zero(ctx, 2),
    "zero3": lambda ctx: part_zero(ctx, 3),
    "ctr": part_ctr,
}


def run_part(name: str, ctx: Context) -> dict:
    """One part in this process: its figures, or {"skipped"|"error": one line}."""
    try:
        result = PART_FUNCTIONS[name](ctx)
    except Skip as why:
        result = {"skipped": str(why)}
    except ModuleNotFoundError as err:
        result = {"skipped": f"{err.name or err} is not installed ({one_line(err)})"}
    except Exception as err:  # noqa: BLE001 - the check reports, the other parts run
        import traceback

        traceback.print_exc(file=sys.stderr)
        result = {"error": one_line(err)}
    result["seconds"] = round(time.perf_counter() - ctx.started, 1)
    return result


# -- the check (parent process) --------------------------------------------------------------------
def _forward(stream, prefix: str, tail: collections.deque) -> None:
    for line in iter(stream.readline, ""):
        tail.append(line.rstrip())
        sys.stderr.write(f"[{prefix}] {line}")
        sys.stderr.flush()


def _end_session(session: int) -> None:
    """SIGKILL every process of `session` (the part's: it started one). Ninja puts the compilers
    of a JIT build in process groups of their own, so killing the part's group would miss them."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:  # state, ppid, pgrp, session
                pids.add(int(stat.parent.name))
    if not Path("/proc").is_dir():
        pids.add(-session)  # no /proc: the part's process group
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def spawn_part(name: str, args, workdir: Path, timeout: float) -> dict:
    """`name` in a fresh process (its own session: a timeout ends it and what it started, e.g. Spark)."""
    out = workdir / f"{name}.json"
    command = [sys.executable, "-m", "jobs.gpu_check", "--part", name, "--device", args.device]
    command += ["--workdir", str(workdir)] + (["--tiny"] if args.tiny else [])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    tail: collections.deque = collections.deque(maxlen=30)
    proc = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    reader = threading.Thread(target=_forward, args=(proc.stdout, name, tail), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        _end_session(proc.pid)
        proc.wait()
        reader.join(timeout=5)
        return {"error": f"timed out after {timeout:.0f} s (the check's time budget)"}
    reader.join(timeout=5)
    _end_session(proc.pid)  # a Spark JVM or Python worker the part left behind
    if out.is_file():
        return json.loads(out.read_text())
    last = next((line for line in reversed(tail) if line.strip()), "(no output)")
    return {"error": f"exit {code}: {last.strip()[:400]}"}


def environment(device_type: str) -> dict:
    import torch

    info = {
        "device": device_type,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "packages": {
            name: version_of(name)
            for name in ("transformers", "deepspeed", "pyspark", "mlflow", "pandas", "pyarrow", "numpy")
        },
        "java": java_version(),
        "cpu_cores": os.cpu_count(),
    }
    if device_type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 1e9, 1)
        info["capability"] = f"{props.major}.{props.minor}"
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def _marked(path: str, result: dict, key: str):
    """Dotted paths of `result` and its nested dicts that hold `key` (`embed.udf`, `ctr.models.p5`)."""
    if key in result:
        yield path
    for name, value in result.items():
        if isinstance(value, dict):
            yield from _marked(f"{path}.{name}", value, key)


def check(args) -> dict:
    import torch

    started = time.perf_counter()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.device == "cpu" and not args.tiny:
            args.tiny = True
            log("no CUDA here: running the CPU path at --tiny sizes")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu-check: --device cuda but torch sees no CUDA device")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"gpu-check: unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    sizes = TINY if args.tiny else FULL
    report: dict = {"check": "larr gpu-check", "ok": False, "tiny": args.tiny, "budget_s": args.budget}
    report |= environment(args.device)
    report["sizes"] = asdict(sizes)
    with tempfile.TemporaryDirectory(prefix="larr-gpu-check-") as scratch:
        workdir = Path(scratch)
        for name in parts:
            left = args.budget - (time.perf_counter() - started)
            if left < 10:
                report[name] = {"error": f"not run: the time budget of {args.budget:.0f} s was spent"}
                continue
            log(f"{name} (at most {min(PART_CAP_S[name], left):.0f} s)")
            report[name] = spawn_part(name, args, workdir, min(PART_CAP_S[name], left - 2))
            log(f"{name}: {json.dumps(report[name])[:300]}")
        if (workdir / "llm" / LLM_FILE).is_file():
            report["model"] = llm_meta(str(workdir / "llm"))
    if args.device == "cuda":  # as the parts looked it up (benchmarks/llm.GPU_BF16_PEAK_TFLOPS)
        peaks = [report[n]["gpu_bf16_peak_tflops"] for n in parts if "gpu_bf16_peak_tflops" in report[n]]
        report["gpu_bf16_peak_tflops"] = peaks[0] if peaks else None
    report["failed"] = [path for n in parts for path in _marked(n, report[n], "error")]
    report["skipped"] = [path for n in parts for path in _marked(n, report[n], "skipped")]
    report["ok"] = not report["failed"] and not report["skipped"]
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


# -- carrying the packages a bare CUDA image lacks -------------------------------------------------
# Pure-Python distributions the project imports (pyspark: the modules import it; deepspeed: ZeRO;
# mlflow: the encoder model) and theirs, that the device image (KINDS.md's package list) lacks.
CARRY = (
    "pyspark",
    "py4j",
    "delta-spark",
    "deepspeed",
    "hjson",
    "pydantic",
    "annotated-types",
    "typing-inspection",
    "mlflow",
    "mlflow-skinny",
    "mlflow-tracing",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-semantic-conventions",
    "opentelemetry-proto",
    "sqlparse",
    "cachetools",
    "fastapi",
    "starlette",
    "importlib-metadata",
)
BINARY = ("pydantic-core",)  # fetched as a CPython 3.12 manylinux wheel (the image's Python)
LEFT_OUT = ("pyspark/jars/", "pyspark/examples/", "pyspark/tests/", "mlflow/server/js/", "__pycache__/")


def pack_deps(target: Path) -> dict:
    """`target`/larr-gpu-deps.tar.gz (the CARRY distributions as installed here, pure Python, with
    their dist-info) and `target`/<BINARY>-cp312 wheels; what to run there is in docs/cluster.md (the GPU check)."""
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "larr-gpu-deps.tar.gz"
    packed, missing = [], []
    with tarfile.open(archive, "w:gz") as tar:
        for name in CARRY:
            try:
                dist = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(name)
                continue
            for file in dist.files or []:
                path = str(file)
                if path.startswith("..") or any(part in path for part in LEFT_OUT) or path.endswith(".pyc"):
                    continue
                if path.endswith((".so", ".pyd")):
                    raise SystemExit(f"gpu-check: {name} holds compiled code ({path}): fetch it as a wheel")
                local = Path(dist.locate_file(file))
                if local.is_file():
                    tar.add(local, arcname=path)
            packed.append(f"{name}=={dist.version}")
    wheels = []
    for name in BINARY:
        version = version_of(name)
        if version is None:
            missing.append(name)
            continue
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(target)]
        for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
            command += ["--platform", tag]
        subprocess.run([*command, f"{name}=={version}"], check=True)
        wheels.append(f"{name}=={version}")
    return {
        "archive": str(archive),
        "archive_mb": round(archive.stat().st_size / 2**20, 1),
        "packed": packed,
        "wheels": wheels,
        "not_installed_here": missing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the platform's GPU paths, measured, as one JSON object")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny model and batches (the CPU path, tests)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all parts")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    parser.add_argument(
        "--pack-deps", metavar="DIR", help="pack the packages a bare CUDA image lacks into DIR"
    )
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one part (child process)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pack_deps:
        print(json.dumps(pack_deps(Path(args.pack_deps)), indent=1))
        return 0
    if args.part:
        ctx = Context(args.device, TINY if args.tiny else FULL, Path(args.workdir))
        result = run_part(args.part, ctx)
        (ctx.workdir / f"{args.part}.json").write_text(json.dumps(result))
        return 0
    report = check(args)
    print(json.dumps(report, indent=1), flush=True)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
