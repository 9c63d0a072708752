"""`larr gap` on the tiny CTR world: the truth table's oracle columns joined to the samples, every
variant trained on the same seeds as a child MLflow run kept out of the report, the table, the
plot and the semantic capture recomputed from the seed runs MLflow holds."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from core import tracking
from training.ctr import names
from training.ctr.gap import GapConfig, GapError, oracle_samples, run, unchanged_oracles
from training.ctr.inputs import ModelConfig
from training.ctr.report import load_runs, table2
from training.ctr.train import CtrConfig

QUIET = lambda _: None  # noqa: E731
SMALL = ModelConfig(embedding_dim=4, hidden=(16,), expert_hidden=(16,), tower_hidden=(8,), scene_heads=2)


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="model 'p5' is not an ID model"):
        GapConfig(compare=(names.P5,))
    assert GapConfig().compared == (names.LR, names.WIDE_DEEP, names.DEEPFM, names.LARR, names.LARR_PLUS)
    assert GapConfig(model=names.LR).compared == (
        names.WIDE_DEEP,
        names.DEEPFM,
        names.PLE,
        names.LARR,
        names.LARR_PLUS,
    )
    with pytest.raises(ValueError, match="oracles names a column twice"):
        GapConfig(oracles=("semantic_logit", "semantic_logit"))
    with pytest.raises(ValueError, match="extra_numeric names a column twice"):
        from training.ctr.encoding import EncodingConfig

        EncodingConfig(extra_numeric=("a", "a"))


def test_oracle_columns_are_joined_to_every_sample_or_refused_in_one_line(spark, ctr_world):
    from pyspark.sql import functions as F

    catalog, _ = ctr_world
    cfg = GapConfig(oracle_table="samples.ctr_oracle_check")
    oracle_samples(spark, catalog, cfg, log=QUIET)
    samples, oracle = catalog.read(spark, "samples.ctr"), catalog.read(spark, cfg.oracle_table)
    assert oracle.count() == samples.count() and set(samples.columns) < set(oracle.columns)
    truth = catalog.read(spark, "truth.impressions").select(
        F.col("event_id").alias("sample_id"), F.col("semantic_logit").alias("truth_semantic")
    )
    joined = oracle.join(truth, "sample_id")
    assert joined.count() == samples.count()
    assert joined.where(F.col("semantic_logit") != F.col("truth_semantic")).count() == 0
    assert oracle.where(F.col("collaborative_score").isNull()).count() == 0

    with pytest.raises(GapError) as missing:
        oracle_samples(spark, catalog, GapConfig(oracles=("nope",)), log=QUIET)
    assert str(missing.value).startswith("truth.impressions has no column 'nope' (it has event_id, ")
    # a sample that is no logged impression (a drawn negative of positive_only samples)
    extra = samples.limit(3).union(samples.limit(1).withColumn("sample_id", F.lit(-1).cast("long")))
    catalog.write(extra, "samples.drawn")
    with pytest.raises(GapError) as drawn:
        oracle_samples(spark, catalog, GapConfig(samples_table="samples.drawn"), log=QUIET)
    assert str(drawn.value) == (
        "1 samples of samples.drawn have no row in truth.impressions: oracles need samples of logged "
        "impressions (`larr etl samples --set mode=impressions`)"
    )


def test_gap_trains_every_variant_on_the_same_seeds_and_reports_the_semantic_capture(
    spark, ctr_world, tmp_path
):
    catalog, _ = ctr_world
    train = CtrConfig(
        batch_size=256, epochs=8, patience=0, learning_rate=0.03, progress=False, network=SMALL,
        checkpoint_dir=str(tmp_path / "ckpt"),
    )  # fmt: skip
    cfg = GapConfig(
        model=names.LR, compare=(names.WIDE_DEEP,), seeds=(1, 2), train=train, plot_dir=str(tmp_path)
    )
    said: list[str] = []
    with tracking.stage_run("ctr", catalog.root, cfg) as parent:
        figures = run(spark, catalog, cfg, log=said.append)
    labels = [v["label"] for v in figures["variants"]]
    assert labels == [
        "lr",
        "lr + semantic_logit",
        "lr + collaborative_score",
        "lr + all oracles",
        "lr without request-item",
        "wide_deep",
    ]
    by_label = {v["label"]: v for v in figures["variants"]}
    # each hidden ingredient is worth something to a linear model on every seed (measured: +0.05
    # for the semantic logit, +0.04 for the collaborative score, +0.09 both; -0.03 without distance
    # and open-now), and the oracles close part of the gap to Bayes
    lr = by_label["lr"]["per_seed"]
    for seed in (1, 2):
        assert by_label["lr + semantic_logit"]["per_seed"][seed] > lr[seed] + 0.02
        assert by_label["lr + collaborative_score"]["per_seed"][seed] > lr[seed] + 0.02
        assert (
            by_label["lr + all oracles"]["per_seed"][seed] > by_label["lr + semantic_logit"]["per_seed"][seed]
        )
        assert by_label["lr without request-item"]["per_seed"][seed] < lr[seed]
    bayes = figures["bayes_auc_ctr"]
    assert 0.5 < by_label["lr"]["ctr_auc"] < bayes < 1.0

    client = mlflow.MlflowClient()
    experiment = parent.info.experiment_id
    variant_runs = client.search_runs([experiment], f"tags.`{names.GAP_TAG}` != ''")
    variant_runs = [r for r in variant_runs if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
    assert sorted(r.data.tags[names.GAP_TAG] for r in variant_runs) == sorted(labels)
    # the seed runs are the MLflow record the capture is recomputed from
    per_seed: dict[str, dict[int, float]] = {}
    for variant in variant_runs:
        seeds = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{variant.info.run_id}'")
        assert {r.data.tags[names.SWEEP_TAG] for r in seeds} == {names.GAP_SWEEP}
        per_seed[variant.data.tags[names.GAP_TAG]] = {
            int(r.data.tags[names.SEED_TAG]): r.data.metrics["ctr_auc"] for r in seeds
        }
    assert {k: v["per_seed"] for k, v in by_label.items()} == per_seed
    base, oracle, model = per_seed["lr"], per_seed["lr + semantic_logit"], per_seed["wide_deep"]
    captures = [(model[s] - base[s]) / (oracle[s] - base[s]) for s in (1, 2)]
    capture = figures["semantic_capture"][names.WIDE_DEEP]
    assert capture["mean"] == pytest.approx(sum(captures) / 2, abs=1e-4)
    assert capture["std"] == pytest.approx(abs(captures[0] - captures[1]) / 2**0.5, abs=1e-4)
    assert f"gap: semantic capture of wide_deep: {capture['mean']:.3f} ± {capture['std']:.3f}" in " ".join(
        said
    )
    share = by_label["lr + semantic_logit"]["share_of_gap_closed"]
    semantic_mean = by_label["lr + semantic_logit"]["ctr_auc"]
    assert share == pytest.approx(
        (semantic_mean - by_label["lr"]["ctr_auc"]) / (bayes - by_label["lr"]["ctr_auc"]), abs=1e-3
    )

    # against each oracle the same ratio: the semantic one is the semantic capture itself
    by_oracle = figures["oracle_captures"][names.WIDE_DEEP]
    assert list(by_oracle) == ["semantic_logit", "collaborative_score"]
    assert by_oracle["semantic_logit"] == capture
    collaborative = per_seed["lr + collaborative_score"]
    shares = [(model[s] - base[s]) / (collaborative[s] - base[s]) for s in (1, 2)]
    assert by_oracle["collaborative_score"]["mean"] == pytest.approx(sum(shares) / 2, abs=1e-4)

    table = (tmp_path / "gap.md").read_text()
    assert f"| Bayes (true p_click) | {bayes:.4f} | 0 | |" in table
    assert "| lr + semantic_logit | " in table and "Semantic capture of wide_deep: " in table
    assert "| model | semantic_logit | collaborative_score |" in table
    cell = lambda c: f"{c['mean']:.3f} ± {c['std']:.3f}"  # noqa: E731
    assert f"| wide_deep | {cell(capture)} | {cell(by_oracle['collaborative_score'])} |" in table
    assert (tmp_path / "gap.png").stat().st_size > 0
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"gap.md", "gap.png"} <= artifacts
    # a folder per variant: none resumes another's weights
    assert len(list((tmp_path / "ckpt").iterdir())) == len(labels)
    # the report's tables leave the variants' seed runs out
    gap_runs = load_runs()
    gap_runs = gap_runs[gap_runs["sweep"] == names.GAP_SWEEP]
    assert len(gap_runs) == len(labels) * 2
    numbers, _ = table2(gap_runs, min_seeds=1)
    assert all(numbers[model] is None for model in names.ID_MODELS) and numbers["bayes"]["runs"] == 0


def test_each_data_size_is_a_column_of_the_size_table_read_back_from_mlflow(spark, ctr_world, tmp_path):
    """Two `larr gap` runs on samples of two sizes: the second tabulates and plots both."""
    from pyspark.sql import functions as F

    catalog, _ = ctr_world
    samples = catalog.read(spark, "samples.ctr")
    catalog.write(
        samples.where(F.col("sample_id") % 2 == 0), "samples.ctr_half", partition_by=["split", "dt"]
    )
    train = CtrConfig(batch_size=256, epochs=1, progress=False, network=SMALL)
    sizes = {}
    for table in ("samples.ctr_half", "samples.ctr"):
        cfg = GapConfig(
            model=names.LR, compare=(), oracles=("semantic_logit",), request_item=False, seeds=(1,),
            samples_table=table, oracle_table=f"{table}_oracle", train=train, plot_dir=str(tmp_path / table),
        )  # fmt: skip
        with tracking.stage_run("ctr", catalog.root, cfg):
            sizes[table] = run(spark, catalog, cfg, log=QUIET)
    half, full = sizes["samples.ctr_half"], sizes["samples.ctr"]
    assert half["train_rows"] < full["train_rows"]
    assert [s["train_rows"] for s in full["sizes"]][-2:] == [half["train_rows"], full["train_rows"]]
    table = Path(full["size_table"]).read_text().splitlines()
    assert table[0].endswith(f"| {half['train_rows']:,} train rows | {full['train_rows']:,} train rows |")
    lr_row = next(line for line in table if line.startswith("| lr | "))
    for figures in (half, full):  # each size's numbers, the earlier one read back from MLflow
        lr = figures["variants"][0]
        assert f"{lr['ctr_auc']:.4f} ± {lr['ctr_auc_std']:.4f}" in lr_row
    assert Path(full["size_plot"]).stat().st_size > 0


def test_a_gap_rerun_on_unchanged_samples_reuses_the_oracle_table_and_reads_back_its_variants(
    spark, ctr_world, capsys
):
    """`larr gap` twice: the second writes no new oracle table, so every variant keeps its data key
    and is read back from its finished checkpoint with the same figures; a write to the oracle
    table by anyone else (or other oracle columns) makes the next run rebuild it."""
    from jobs.cli import main

    catalog, _ = ctr_world
    args = [
        "gap", "--lakehouse", catalog.root, "--model", names.LR, "--set", "compare=[]",
        "--set", "oracles=[semantic_logit]", "--set", "request_item=false", "--set", "seeds=[1]",
        "--set", "train.epochs=1", "--set", "train.batch_size=256", "--set", "train.progress=false",
    ]  # fmt: skip

    def gap() -> tuple[int, str]:
        capsys.readouterr()
        assert main(args) == 0
        return catalog.latest_version(spark, "samples.ctr_oracle"), capsys.readouterr().out

    def figures(said: str) -> list[str]:
        return [line.split(" seed 1: ")[1] for line in said.splitlines() if "train ctr: lr/" in line]

    first_version, first = gap()
    assert "is up to date" not in first and "resuming from" not in first and len(figures(first)) == 2
    second_version, second = gap()
    assert second_version == first_version
    assert f"gap: samples.ctr_oracle version {first_version} is up to date" in second
    assert second.count("resuming from") == 2 and figures(second) == figures(first)

    samples = catalog.read(spark, "samples.ctr").columns
    semantic = GapConfig(oracles=("semantic_logit",))
    assert unchanged_oracles(spark, catalog, semantic, samples) == first_version
    assert unchanged_oracles(spark, catalog, GapConfig(), samples) is None  # other oracle columns
    oracle = catalog.read(spark, "samples.ctr_oracle")
    catalog.write(oracle, "samples.ctr_oracle", partition_by=["split", "dt"])  # a write by someone else
    assert unchanged_oracles(spark, catalog, semantic, samples) is None
