"""`python -m jobs.gpu_check` (`make gpu-check`): every part runs and stdout is exactly one JSON object.

The CPU path (`--device cpu --tiny`: fp32, gloo, Spark local mode) runs here; the tests marked
`gpu` run the same parts at the same tiny size on CUDA (bf16, NCCL, the UDF's task handed the
GPU) and are skipped where torch sees no CUDA (tests/conftest.py)."""

import json
import subprocess
import sys

import pytest

from jobs.gpu_check import PARTS
from tests.conftest import REPO_ROOT
from training.ctr.names import CTR_MODELS

LLM_PARTS = ("cpt", "contrastive", "zero2", "zero3")


def _run_check(device: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "jobs.gpu_check", "--device", device, "--tiny"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    try:
        report = json.loads(done.stdout)  # fails on anything but one JSON value
    except json.JSONDecodeError:
        pytest.fail(
            f"stdout is not one JSON object (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    assert isinstance(report, dict)
    assert done.returncode == (1 if report["failed"] else 0)
    return report


@pytest.mark.slow
def test_the_cpu_path_runs_every_part_without_errors():
    report = _run_check("cpu")
    assert report["device"] == "cpu" and report["tiny"]
    problems = {p: report[p] for p in PARTS if "error" in report[p] or "skipped" in report[p]}
    assert not problems
    assert report["ok"] and report["failed"] == [] and report["skipped"] == []
    assert report["model"]["layers"] == 2 and report["model"]["params"] > 0
    for part in LLM_PARTS:
        figures = report[part]
        assert figures["tokens_per_s"] > 0 and figures["peak_rss_mb"] > 0
        assert figures["train_flops_per_token"] > figures["attention_flops_per_token"] > 0
        assert figures["mfu"] is None and figures["final_loss"] > 0  # no bf16 peak on a CPU
    assert (report["zero2"]["backend"], report["zero3"]["backend"]) == ("gloo", "gloo")
    assert report["zero3"]["zero_stage"] == 3 and report["zero3"]["partitioned"]
    embed = report["embed"]
    assert embed["precision"] == "float32" and embed["direct_texts_per_s"] > 0
    assert embed["udf"]["texts_per_s"] > 0 and embed["udf"]["task_gpus"] == []
    assert embed["udf"]["max_abs_diff_vs_direct"] < 1e-4  # the Spark UDF embeds what the encoder does
    assert embed["ratio_to_direct"] == embed["udf"]["ratio_to_direct"] > 0
    assert set(report["ctr"]["models"]) == set(CTR_MODELS)
    for name, figures in report["ctr"]["models"].items():
        assert figures["samples_per_s"] > 0 and figures["flops_per_sample"] > 0, name


@pytest.fixture(scope="module")
def cuda_report():
    return _run_check("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("part", PARTS)
def test_each_part_runs_on_cuda(cuda_report, part):
    result = cuda_report[part]
    if "skipped" in result:  # e.g. no Java for Spark, or deepspeed not installed
        pytest.skip(result["skipped"])
    assert "error" not in result, result["error"]


@pytest.mark.gpu
@pytest.mark.parametrize("part", LLM_PARTS)
def test_llm_steps_run_in_bf16_with_peak_memory_and_mfu(cuda_report, part):
    figures = cuda_report[part]
    if "skipped" in figures:
        pytest.skip(figures["skipped"])
    assert "bf16" in figures["precision"]
    assert figures["tokens_per_s"] > 0 and figures["peak_memory_mb"] > 0
    if cuda_report["gpu_bf16_peak_tflops"]:
        assert 0 < figures["mfu_6n"] < figures["mfu"] < 1  # attention adds FLOPs
    else:
        assert figures["mfu"] is None and figures["mfu_note"]


@pytest.mark.gpu
def test_deepspeed_zero_runs_on_nccl(cuda_report):
    for stage in (2, 3):
        figures = cuda_report[f"zero{stage}"]
        if "skipped" in figures:
            pytest.skip(figures["skipped"])
        assert (figures["zero_stage"], figures["backend"], figures["world_size"]) == (stage, "nccl", 1)
    assert cuda_report["zero3"]["partitioned"]


@pytest.mark.gpu
def test_embedding_udf_runs_on_the_gpu_in_bf16(cuda_report):
    embed = cuda_report["embed"]
    assert embed["device"].startswith("cuda") and embed["precision"] == "bfloat16"
    assert embed["direct_texts_per_s"] > 0
    if "skipped" in embed["udf"]:
        pytest.skip(embed["udf"]["skipped"])
    assert embed["udf"]["task_gpus"] and embed["udf"]["task_precision"] == "bfloat16"
    assert embed["udf"]["texts_per_s"] > 0 and embed["udf"]["max_abs_diff_vs_direct"] < 0.05


@pytest.mark.gpu
def test_ctr_models_train_under_bf16_autocast(cuda_report):
    ctr = cuda_report["ctr"]
    assert ctr["precision"] == "bf16 autocast"
    for name in CTR_MODELS:
        figures = ctr["models"][name]
        assert figures["samples_per_s"] > 0 and figures["peak_memory_mb"] > 0, name
