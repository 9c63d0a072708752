"""The trainers' shared scaffolding (training/common/trainer.py) and stage 3's names
(training/ctr/names.py): no Spark, no model training."""

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

import pytest
import torch

from core.tracking import FULL_METHOD, VARIANTS
from training.common import trainer
from training.common.engine import TorchEngine
from training.common.launch import LaunchConfig
from training.common.loop import LoopSettings
from training.ctr import names

CPU = torch.device("cpu")
LAUNCHED = LaunchConfig(launcher="torch_distributor", num_processes=2)


@dataclass(frozen=True)
class Toy:
    lr: float = 1e-3
    layers: tuple[int, ...] = (2, 3)
    checkpoint_dir: str = ""
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    resume: bool = True
    progress: bool = True
    output_dir: str = ""
    launch: LaunchConfig = field(default_factory=LaunchConfig)


def _reference_key(data: dict) -> str:
    """The key as every trainer wrote it before the shared module: sha256 of the sorted JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# -- config key --------------------------------------------------------------------------------------
def test_config_key_is_the_hash_of_the_weight_shaping_fields_and_ignores_bookkeeping():
    key = trainer.config_key(Toy(), skip=("output_dir",))
    assert key == _reference_key({"lr": 1e-3, "layers": [2, 3]})
    bookkeeping = Toy(
        checkpoint_dir="/x", checkpoint_every=1, keep_checkpoints=5, resume=False, progress=False
    )
    assert (
        trainer.config_key(replace(bookkeeping, output_dir="/y", launch=LAUNCHED), skip=("output_dir",))
        == key
    )
    assert trainer.config_key(replace(Toy(), lr=2e-3), skip=("output_dir",)) != key
    assert trainer.config_key(replace(Toy(), layers=(3, 2)), skip=("output_dir",)) != key
    assert trainer.config_key(Toy()) != key  # output_dir counts unless skipped


def test_config_key_adds_extra_fields():
    plain = trainer.config_key(Toy(), skip=("output_dir",))
    with_data = trainer.config_key(Toy(), skip=("output_dir",), extra={"data": "samples@3"})
    assert with_data == _reference_key({"lr": 1e-3, "layers": [2, 3], "data": "samples@3"}) != plain
    assert trainer.config_key(Toy(), skip=("output_dir",), extra={"data": "samples@4"}) != with_data


def test_the_trainers_keys_are_the_ones_they_wrote_before():
    """Checkpoint folders are named by these keys: an unchanged config must resume its checkpoints."""
    from training.embedding.contrastive import ContrastiveConfig
    from training.lm.cpt import CptConfig

    cpt = CptConfig(lr=1e-3)
    skip = {
        "checkpoint_dir",
        "checkpoint_every",
        "keep_checkpoints",
        "resume",
        "progress",
        "output_dir",
        "launch",
    }
    assert cpt.key() == _reference_key({k: v for k, v in asdict(cpt).items() if k not in skip})
    assert replace(cpt, output_dir="/elsewhere", checkpoint_every=3).key() == cpt.key()
    contrastive = ContrastiveConfig(ablation="no_cpt", backbone="/base")
    skip = {"checkpoint_dir", "checkpoint_every", "keep_checkpoints", "resume", "progress", "launch"}
    skip |= {
        "eval_batch_size",
        "eval_max_pairs",
        "probe_attribute",
        "probe_max_pois",
        "probe_text",
        "base_model",
        "weight_scene_poi",  # added later: at 0 (the paper's three types) keys stay as they were
    }
    assert contrastive.key() == _reference_key(
        {k: v for k, v in asdict(contrastive).items() if k not in skip}
    )
    assert replace(contrastive, eval_max_pairs=9, base_model="").key() == contrastive.key()
    assert replace(contrastive, weight_scene_poi=1.0).key() != contrastive.key()


# -- checkpoint folder ---------------------------------------------------------------------------------
def test_checkpoint_folder_defaults_to_the_lakehouse_and_honours_checkpoint_dir(tmp_path):
    root = str(tmp_path / "lake")
    assert trainer.checkpoint_folder(root, "cpt", "abc123") == str(
        tmp_path / "lake" / "_checkpoints" / "cpt" / "abc123"
    )
    assert trainer.checkpoint_folder(root, "ctr", "k", under="seed-2") == str(
        tmp_path / "lake" / "_checkpoints" / "ctr" / "k" / "seed-2"
    )
    assert trainer.checkpoint_folder(root, "cpt", "abc123", "my/ckpt/") == "my/ckpt/"  # as configured
    assert trainer.checkpoint_folder(root, "ctr", "k", "/ckpt", under="seed-2") == "/ckpt/seed-2"


def test_checkpoint_folder_of_a_remote_lakehouse_needs_checkpoint_dir():
    class StageError(ValueError):
        pass

    with pytest.raises(StageError, match="lakehouse s3://bucket/lake is remote: set checkpoint_dir"):
        trainer.checkpoint_folder("s3://bucket/lake", "contrastive", "k", error=StageError)
    assert trainer.checkpoint_folder("s3://bucket/lake", "contrastive", "k", "/dbfs/ckpt") == "/dbfs/ckpt"


def test_each_trainer_names_its_checkpoint_folder_by_stage_and_key(tmp_path):
    from core.catalog import TableCatalog
    from training.embedding import contrastive
    from training.lm import cpt

    catalog = TableCatalog(root=str(tmp_path))
    cfg = cpt.CptConfig()
    assert cpt.default_checkpoint_dir(catalog, cfg) == str(tmp_path / "_checkpoints" / "cpt" / cfg.key())
    con = contrastive.ContrastiveConfig(backbone="/stage1")
    assert contrastive.default_checkpoint_dir(catalog, con) == str(
        tmp_path / "_checkpoints" / "contrastive" / con.key()
    )
    with pytest.raises(cpt.CptError, match="remote"):
        cpt.default_checkpoint_dir(TableCatalog(root="dbfs:/lake"), cfg)


# -- DeepSpeed settings ----------------------------------------------------------------------------------
def test_deepspeed_setup_reads_the_checkouts_json_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # jobs/deepspeed/zero2.json does not exist here
    settings = trainer.deepspeed_setup(
        "jobs/deepspeed/zero2.json",
        micro_batch_size=4,
        grad_accum=3,
        clip_norm=0.5,
        device=CPU,
        train_layers=2,
    )
    assert settings["zero_optimization"]["stage"] == 2
    assert settings["train_micro_batch_size_per_gpu"] == 4 and settings["gradient_accumulation_steps"] == 3
    assert settings["gradient_clipping"] == 0.5 and settings["bf16"] == {"enabled": False}
    assert "train_batch_size" not in settings
    assert trainer.deepspeed_setup("", micro_batch_size=4, grad_accum=1, clip_norm=1.0, device=CPU) is None
    with pytest.raises(ValueError, match="deepspeed_config jobs/deepspeed/zero9.json"):
        trainer.deepspeed_setup(
            "jobs/deepspeed/zero9.json", micro_batch_size=4, grad_accum=1, clip_norm=1.0, device=CPU
        )


def test_zero3_refuses_training_the_last_layers_only():
    class StageError(ValueError):
        pass

    ds = dict(micro_batch_size=2, grad_accum=1, clip_norm=1.0, device=CPU)
    with pytest.raises(StageError, match="train_layers > 0 .* ZeRO-3: set train_layers: 0"):
        trainer.deepspeed_setup("jobs/deepspeed/zero3.json", **ds, train_layers=1, error=StageError)
    assert (
        trainer.deepspeed_setup("jobs/deepspeed/zero3.json", **ds, train_layers=0)["zero_optimization"][
            "stage"
        ]
        == 3
    )
    assert trainer.deepspeed_setup("jobs/deepspeed/zero2.json", **ds, train_layers=1) is not None


# -- loop settings, engine ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "module", ["training.lm.cpt", "training.embedding.contrastive", "training.ctr.train"]
)
def test_loop_settings_map_every_trainers_config(module):
    import importlib

    configs = {
        "training.lm.cpt": "CptConfig",
        "training.embedding.contrastive": "ContrastiveConfig",
        "training.ctr.train": "CtrConfig",
    }
    cfg_cls = getattr(importlib.import_module(module), configs[module])
    cfg = cfg_cls(checkpoint_every=7, keep_checkpoints=4, resume=False, progress=False)
    settings = trainer.loop_settings(cfg, "/ckpt", 30, grad_accum=2)
    expected = LoopSettings(
        max_steps=30,
        grad_accum=2,
        checkpoint_every=7,
        keep_checkpoints=4,
        checkpoint_dir="/ckpt",
        resume=False,
        progress=False,
    )
    assert {f.name: getattr(settings, f.name) for f in fields(expected)} == asdict(expected)
    assert trainer.loop_settings(cfg, "", 5).grad_accum == 1


def test_trainer_engine_warms_up_and_decays_the_configs_learning_rate():
    from training.lm.cpt import CptConfig

    cfg = CptConfig(lr=0.1, weight_decay=0.5, warmup_steps=2, max_steps=4, min_lr_ratio=0.1, clip_norm=0.0)
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 1))
    engine = trainer.trainer_engine(model, cfg, CPU, None, no_decay=("0.",), grad_accum=2)
    assert isinstance(engine, TorchEngine) and engine.grad_accum == 2 and engine.clip_norm == 0.0
    decay = {id(p): group["weight_decay"] for group in engine.optimizer.param_groups for p in group["params"]}
    assert decay[id(model[0].weight)] == 0.0  # the embedding (name part "0.") is kept out of weight decay
    assert decay[id(model[1].weight)] == 0.5
    rates = []
    for _ in range(5):
        rates.append(engine.lr)
        engine.step()
    assert rates[0] == pytest.approx(0.05) and rates[1] == pytest.approx(0.1)  # warmup: 1/2, then 2/2
    assert rates[4] == pytest.approx(0.01)  # lr * min_lr_ratio at max_steps


def test_trainable_params_counts_only_what_trains():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    assert trainer.trainable_params(model) == 2 + 1


# -- where it runs ----------------------------------------------------------------------------------------
def test_one_process_prepares_once_and_trains_here(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    calls = []
    assert trainer.prepare_on_rank0(lambda: calls.append(1) or "data", "cpu", LaunchConfig()) == "data"
    assert calls == [1]
    lines = []

    def train(cfg, data, folder, log=print):
        log(f"{cfg} {data} {folder}")
        return {"steps": 3}

    out = trainer.run_ranks(
        train, LaunchConfig(), "cfg", "data", "/ckpt", announce="not launched", log=lines.append
    )
    assert out == {"steps": 3} and lines == ["cfg data /ckpt"]


def test_a_launching_driver_prepares_here_and_hands_the_data_to_the_ranks(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    started = []
    monkeypatch.setattr(
        trainer,
        "run_distributed",
        lambda fn, launch, *args, deepspeed_config="": (
            started.append((fn, launch, args, deepspeed_config)) or "rank 0's"
        ),
    )
    assert trainer.prepare_on_rank0(lambda: "data", "cpu", LAUNCHED) == "data"
    lines = []
    out = trainer.run_ranks(
        print, LAUNCHED, "cfg", "data", deepspeed_config="z.json", announce="2 processes", log=lines.append
    )
    assert out == "rank 0's" and lines == ["2 processes"]
    assert started == [(print, LAUNCHED, ("cfg", "data"), "z.json")]


def test_trained_is_what_every_trainer_returns():
    from training.ctr import train as ctr_train
    from training.embedding import contrastive
    from training.lm import cpt

    assert trainer.Trained._fields == ("summary", "losses", "model", "preprocessor", "resumed_from")
    for module in (cpt, contrastive):
        assert module.train.__annotations__["return"] == "Trained" and module.Trained is trainer.Trained
    assert (
        ctr_train.train_seed.__annotations__["return"] == "Trained" and ctr_train.Trained is trainer.Trained
    )


# -- names ---------------------------------------------------------------------------------------------------
def test_the_ctr_trainer_accepts_exactly_the_named_models_and_ablations():
    from training.ctr.train import CtrConfig
    from training.embedding.contrastive import ContrastiveConfig

    for model in names.CTR_MODELS:
        assert CtrConfig(model=model).model == model
    for ablation in names.CTR_ABLATIONS:
        assert CtrConfig(model=names.LARR, ablation=ablation).ablation == ablation
    with pytest.raises(
        ValueError, match="model must be one of lr, wide_deep, deepfm, ple, larr, larr_plus, p5"
    ):
        CtrConfig(model="dcn")
    with pytest.raises(ValueError, match="ablation must be one of none, no_cpt, no_ft, no_al"):
        CtrConfig(model=names.LARR, ablation="no_x")
    assert names.CTR_ABLATIONS[: len(VARIANTS)] == VARIANTS and FULL_METHOD == "none"
    for ablation in VARIANTS:  # stage 2's ablations are the encoders LARR's ablations read
        assert ContrastiveConfig(ablation=ablation).ablation == ablation
    with pytest.raises(ValueError, match="ablation must be one of"):
        ContrastiveConfig(ablation=names.NO_AL)


def test_build_model_builds_every_id_model_and_p5_has_its_own_constructor():
    from tests.training.ctr.test_models import model
    from training.ctr.models import MODEL_REVISIONS, build_model

    for name in names.ID_MODELS:
        assert isinstance(model(name), torch.nn.Module)
    with pytest.raises(ValueError, match="unknown CTR model 'p5'"):
        build_model(names.P5, None, None)
    assert set(MODEL_REVISIONS) <= set(names.CTR_MODELS)


def test_the_cli_the_report_and_the_benchmark_use_the_same_names():
    from benchmarks.ctr import BenchCtrConfig
    from jobs.cli import build_parser
    from jobs.commands import COMMANDS
    from training.ctr import report
    from training.ctr.train import CtrConfig

    assert COMMANDS["train ctr"].flags == ("model", "ablation")
    for model in names.CTR_MODELS:
        args = build_parser().parse_args(["train", "ctr", "--model", model])
        assert args.flag_model == model and args._command is COMMANDS["train ctr"]
    assert {key for key, _ in report.MODELS} == set(names.CTR_MODELS)
    for _, _, model, ablation in report.ABLATIONS:
        CtrConfig(model=model, ablation=ablation)  # every Table 3 row is a run the trainer accepts
    assert {ablation for *_, ablation in report.ABLATIONS} == set(names.CTR_ABLATIONS)
    assert set(report.SWEEPS) == {names.TEMPERATURE_SWEEP, names.NEG_RATIO_SWEEP}
    assert report.SWEEP_MODEL == names.LARR
    assert BenchCtrConfig().models == names.CTR_MODELS
    tags = (names.MODEL_TAG, names.ABLATION_TAG, names.SEED_TAG, names.SWEEP_TAG, names.SAMPLES_TAG)
    assert tags == ("larr.ctr_model", "larr.ablation", "larr.seed", "larr.sweep", "larr.samples_version")
