"""The registry of `larr` commands: name -> stage, config class, YAML file and job runner.

Targets are `module:attribute` strings imported on use, so `larr --help` and a command's
config checks do not pay for importing every job. Every runner has the signature
`run(spark, catalog, cfg, log) -> dict`.

`reads` / `writes` name the catalog tables (`layer.table`) a command needs from earlier stages and
the ones it overwrites or merges into; the Databricks bundle's test checks its task graph with them
(tests/jobs/test_databricks_bundle.py), and the same test checks them against each job's own
table constants. A table read only when present (ingest's stored schema, the contrastive probe's
truth.pois, train ctr's truth.impressions for the Bayes AUCs) is not listed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from core.catalog import TableCatalog


def _resolve(target: str) -> Any:
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass
class Context:
    """What a command runs with. The Spark session starts on first use, after all checks."""

    catalog: TableCatalog
    app_name: str = "larr"  # the Spark application's name: larr-<command>
    _spark: Any = field(default=None, repr=False)

    @property
    def spark(self):
        if self._spark is None:
            from core.spark import get_spark

            self._spark = get_spark(app_name=self.app_name)
        return self._spark

    @property
    def spark_if_started(self):
        return self._spark

    def log(self, message: str) -> None:
        print(message, flush=True)


@dataclass(frozen=True)
class Command:
    name: str
    stage: str  # the MLflow experiment is larr-<stage>
    config: str  # "module:ConfigClass"
    config_file: str | None  # jobs/<config_file>.yaml, or None for the dataclass defaults
    runner: str  # "module:run"
    help: str = ""
    needs_spark: bool = True  # False: the runner gets spark=None and no session starts
    flags: tuple[str, ...] = ()  # config keys also given as `--<key> VALUE` (e.g. --model larr)
    reads: tuple[str, ...] = ()  # tables that must exist: written by an earlier command
    writes: tuple[str, ...] = ()  # tables the command (over)writes
    # False where an input is not a table version (ingest's files, embed's `latest:` model): a
    # re-run with unchanged tables and config may still have new inputs, so it always recomputes
    skips_when_unchanged: bool = True

    @property
    def config_cls(self) -> type:
        return _resolve(self.config)

    def run(self, ctx: Context, cfg: Any) -> dict:
        return _resolve(self.runner)(ctx.spark if self.needs_spark else None, ctx.catalog, cfg, log=ctx.log)


_COMMANDS = (
    Command("generate", "generate", "etl.synthetic.config:GenerateConfig", "generate", "etl.synthetic.job:run",
            "synthesise the food-delivery world",
            writes=("raw.dataset_schema", "raw.users", "raw.pois", "raw.impressions",
                    "truth.users", "truth.pois", "truth.impressions")),
    Command("etl ingest", "etl", "etl.ingest.job:IngestConfig", "etl_ingest", "etl.ingest.job:run",
            "bring your own logs (CSV / Parquet) into the raw tables",
            writes=("raw.dataset_schema", "raw.users", "raw.pois", "raw.impressions", "raw.ingest_mapping"),
            skips_when_unchanged=False),
    Command("etl clean", "etl", "etl.clean.config:CleanConfig", "etl_clean", "etl.clean.job:run",
            "validated tables and a rejects table",
            reads=("raw.dataset_schema", "raw.users", "raw.pois", "raw.impressions"),
            writes=("clean.users", "clean.pois", "clean.impressions", "clean.rejects")),
    Command("etl corpus", "etl", "etl.text.corpus:CorpusConfig", "etl_corpus", "etl.text.corpus:run",
            "stage-1 special-token corpus",
            reads=("raw.dataset_schema", "clean.pois"), writes=("corpus.cpt",)),
    Command("etl pairs", "etl", "etl.text.pairs:PairsConfig", "etl_pairs", "etl.text.pairs:run",
            "stage-2 contrastive pairs",
            reads=("raw.dataset_schema", "clean.users", "clean.pois", "clean.impressions"),
            writes=("pairs.contrastive",)),
    Command("features scene", "features", "features.scene:SceneConfig", "features_scene", "features.scene:run",
            "the scene dictionary: distinct scene feature values and their texts",
            reads=("raw.dataset_schema", "clean.impressions", "clean.pois"),
            writes=("features.scene_dictionary",)),
    Command("features stats", "features", "features.stats:StatsConfig", "features_stats", "features.stats:run",
            "point-in-time user, POI and user x POI statistics",
            reads=("clean.impressions",),
            writes=("features.user_stats", "features.poi_stats", "features.user_poi_stats",
                    "features.global_stats")),
    Command("etl samples", "etl", "features.samples:SamplesConfig", "etl_samples", "features.samples:run",
            "negatively sampled CTR / CTCVR samples",
            reads=("raw.dataset_schema", "clean.users", "clean.pois", "clean.impressions",
                   "features.user_stats", "features.poi_stats", "features.user_poi_stats",
                   "features.global_stats"),
            writes=("samples.ctr",)),
    Command("etl vacuum", "etl", "etl.vacuum:VacuumConfig", "etl_vacuum", "etl.vacuum:run",
            "Delta VACUUM of every published table: removes files no version references (killed runs)"),
    Command("train cpt", "cpt", "training.lm.cpt:CptConfig", "train_cpt", "training.lm.cpt:run",
            "stage 1: continual pretraining with special tokens",
            reads=("raw.dataset_schema", "corpus.cpt")),
    Command("train contrastive", "contrastive", "training.embedding.contrastive:ContrastiveConfig",
            "train_contrastive", "training.embedding.contrastive:run",
            "stage 2: contrastive fine-tuning into a 128-d text encoder (MLflow pyfunc `encoder`)",
            reads=("raw.dataset_schema", "pairs.contrastive")),
    Command("bench generate", "bench", "benchmarks.etl:BenchGenerateConfig", None, "benchmarks.etl:bench_generate",
            "generation throughput against a plain Delta write"),
    Command("bench etl", "bench", "benchmarks.etl:BenchEtlConfig", None, "benchmarks.etl:bench_etl",
            "every ETL job at 1M, 4M, 16M impressions against a plain Delta copy"),
    Command("bench samples", "bench", "benchmarks.samples:BenchSamplesConfig", None,
            "benchmarks.samples:bench_samples",
            "positive_only's negative draw: 20,000 events, one group of 1,000 / 10,000 / 100,000 items"),
    Command("bench llm", "bench", "benchmarks.llm:BenchLlmConfig", None, "benchmarks.llm:run",
            "training tokens/s and peak memory of both LLM stages", needs_spark=False),
    Command("embed scenes", "embed", "features.embeddings.scenes:EmbedScenesConfig", "embed_scenes",
            "features.embeddings.scenes:run",
            "stage 3: embed each distinct scene value with the frozen encoder (Spark UDF) + the .npz export",
            reads=("features.scene_dictionary",),
            writes=("features.scene_embeddings", "features.embedding_rejects"), skips_when_unchanged=False),
    Command("embed texts", "embed", "features.embeddings.texts:EmbedTextsConfig", "embed_texts",
            "features.embeddings.texts:run", "embed POI and user comprehensive texts with the frozen encoder",
            reads=("raw.dataset_schema", "clean.users", "clean.pois", "clean.impressions"),
            writes=("features.poi_embeddings", "features.user_embeddings", "features.embedding_rejects"),
            skips_when_unchanged=False),
    Command("bench embed", "bench", "benchmarks.embed:BenchEmbedConfig", None, "benchmarks.embed:bench_embed",
            "embedding UDF throughput against the encoder called directly, and the dedup factor"),
    Command("train ctr", "ctr", "training.ctr.train:CtrConfig", "train_ctr", "training.ctr.train:run",
            "stage 3: a CTR / CTCVR model over seeds (--model, --ablation)", flags=("model", "ablation"),
            reads=("raw.dataset_schema", "samples.ctr")),
    Command("bench ctr", "bench", "benchmarks.ctr:BenchCtrConfig", None, "benchmarks.ctr:run",
            "training samples/s per CTR model, the loader's rows/s, pyfunc scoring latency",
            reads=("raw.dataset_schema", "samples.ctr")),
    Command("report", "report", "training.ctr.report:ReportConfig", "report", "training.ctr.report:run",
            "Tables 2 and 3 and the alignment sweeps (mean ± std over seeds) from the CTR runs in MLflow",
            needs_spark=False),
    Command("recall", "recall", "features.recall:RecallConfig", "recall", "features.recall:run",
            "the case study: a free-text scene -> the top-10 POIs by cosine, as 'city; main dish'",
            flags=("scene",), reads=("raw.dataset_schema", "features.poi_embeddings", "clean.pois")),
    Command("casestudy", "casestudy", "training.embedding.casestudy:CaseStudyConfig", "casestudy",
            "training.embedding.casestudy:run",
            "the case study scored: typed scenes, targets from the truth table, precision@10 per encoder",
            reads=("raw.dataset_schema", "clean.pois", "truth.pois"),
            writes=("features.poi_embeddings", "features.embedding_rejects"), skips_when_unchanged=False),
    Command("sweep", "ctr", "training.ctr.sweep:SweepConfig", "sweep", "training.ctr.sweep:run",
            "LARR's alignment temperature and negative-ratio sweeps, plotted",
            reads=("raw.dataset_schema", "samples.ctr")),
    Command("tune", "ctr", "training.ctr.tune:TuneConfig", "tune", "training.ctr.tune:run",
            "the same seeded random search for every CTR model, chosen on validation (--model)",
            flags=("model",), reads=("raw.dataset_schema", "samples.ctr")),
    Command("gap", "ctr", "training.ctr.gap:GapConfig", "gap", "training.ctr.gap:run",
            "where the gap to the Bayes AUC goes: oracle features from the truth table, semantic capture",
            flags=("model",), reads=("raw.dataset_schema", "samples.ctr", "truth.impressions"),
            writes=("samples.ctr_oracle",), skips_when_unchanged=False),
)  # fmt: skip

COMMANDS: dict[str, Command] = {c.name: c for c in _COMMANDS}
