"""`larr bench llm` on the tiny Llama: both stages, each case in its own process."""

import math

import pytest

from benchmarks.llm import BenchLlmConfig, cpt_texts, pair_texts, run
from training.embedding.contrastive import PAIR_TYPES


@pytest.mark.slow  # trains both LLM stages of a tiny model
def test_both_stages_of_the_tiny_model_report_throughput_memory_and_a_plot(catalog):
    cfg = BenchLlmConfig(models="tiny", device="cpu", max_length=64, warmup_steps=1, steps=2)
    lines = []
    out = run(None, catalog, cfg, log=lines.append)

    assert [(c["stage"], c["model"], c["train_layers"], c["device"]) for c in out["cases"]] == [
        ("cpt", "tiny", 0, "cpu"),
        ("contrastive", "tiny", 0, "cpu"),
    ]
    assert len(lines) == 2 and all(line.startswith("bench llm: ") for line in lines)
    for case in out["cases"]:
        for name in (
            "tokens_per_s",
            "forward_tokens_per_s",
            "samples_per_s",
            "seconds_per_step",
            "train_tflops",
        ):
            assert math.isfinite(case[name]) and case[name] > 0, (case["key"], name)
        assert case["texts"] == 2 * 8  # the timed steps' texts: 8 samples, or 4 pairs of 2 texts
        assert 0 < case["tokens"] <= case["texts"] * 64
        assert case["tokens"] == pytest.approx(case["tokens_per_s"] * case["seconds_per_step"] * 2, rel=0.01)
        assert case["train_vs_forward"] == pytest.approx(
            case["tokens_per_s"] / case["forward_tokens_per_s"], rel=0.01
        )
        assert case["params"] == case["trainable_params"] > 0  # train_layers 0 trains everything
        assert case["peak_mb"] == case["peak_rss_mb"] > 50  # the child's own peak (torch alone > 50 MB)
        assert case["peak_mb"] >= case["rss_before_model_mb"]
        assert math.isfinite(case["final_loss"])
        assert out[f"{case['key']}_tokens_per_s"] == case["tokens_per_s"]
        assert out[f"{case['key']}_peak_mb"] == case["peak_mb"]
    cpt, contrastive = out["cases"]
    assert cpt["train_flops_per_token"] == 6 * cpt["matmul_params"]
    # stage 2 pools hidden states: the tied LM head takes no matmul there, the projection does
    assert contrastive["matmul_params"] < cpt["matmul_params"]
    assert out["device"] == "cpu" and out["threads"] >= 1
    assert out["plot"].startswith(str(catalog.root)) and "/_bench/llm/" in out["plot"]
    with open(out["plot"], "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_texts_are_seeded_and_wrapped_in_the_registry_tokens():
    inputs, targets = cpt_texts(3, seed=1)
    assert (inputs, targets) == cpt_texts(3, seed=1) and inputs != cpt_texts(3, seed=2)[0]
    assert all(t.startswith("<POI_name>") and "</POI_loc>" in t for t in inputs)
    assert all(t.startswith("<POI_intro>") and t.endswith("</POI_stats>") for t in targets)
    for pair_type in PAIR_TYPES:
        a, b = pair_texts(pair_type, 2, seed=1)
        assert len(a) == len(b) == 2 and all(t.endswith(">") for t in a + b)


@pytest.mark.parametrize(
    "bad", [dict(models=""), dict(stages="cpt,dpo"), dict(batch_size=7), dict(steps=0), dict(train_layers=[])]
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        BenchLlmConfig(**bad)
