"""A tiny lakehouse for the notebooks, made by the real jobs at tiny sizes (in process, on the
session's Spark): the CTR test lakehouse (`ctr_world`: statistics, scene dictionary and samples
from the feature jobs) plus the test world's raw and truth tables, then the `larr` commands
`etl clean` (the rejects), `etl pairs`, `train contrastive` (a tiny Llama as the stage-1 model),
`embed texts` and `embed scenes`, `train ctr` for PLE and LARR over two seeds and a two-point
`sweep`. Stage 1 (`train cpt`) is left out on purpose: the notebooks must say it has not run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY_CTR = [
    "--set", "seeds=[1,2]", "--set", "batch_size=256", "--set", "max_steps=4", "--set", "progress=false", "--set", "log_model=false",
    "--set", "network.embedding_dim=4", "--set", "network.hidden=[16]", "--set", "network.expert_hidden=[16]",
    "--set", "network.tower_hidden=[8]", "--set", "network.scene_heads=2",
]  # fmt: skip


def larr(lakehouse: Path, *args: str) -> None:
    """One `larr` command on the tiny lakehouse, in this process (its exit status must be 0)."""
    from jobs.cli import main

    assert main([*args, "--lakehouse", str(lakehouse)]) == 0, args


def tiny_backbone(folder: Path, schema) -> Path:
    """A stage-1 stand-in: the tiny Llama with the dataset's slice tokens, as a Hugging Face folder."""
    from etl.text.slices import token_slices
    from training.lm.backbone import add_special_tokens, save_backbone
    from training.lm.tiny import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer)
    add_special_tokens(model, tokenizer, token_slices(schema))
    return save_backbone(model, tokenizer, folder)


@pytest.fixture(scope="session")
def notebook_lakehouse(spark, world_catalog, ctr_world, tiny_world_config, tmp_path_factory) -> Path:
    """The CTR test lakehouse (its statistics, scene dictionary and samples come from the real
    feature jobs) with the world's raw and truth tables, then the real `larr` commands; `etl
    clean` rewrites its clean.* tables from the raw ones (the rows of the stand-in cleaning the
    features were computed from, give or take a few dirty ones)."""
    from etl.synthetic.job import world_schema

    root = tmp_path_factory.mktemp("notebooks") / "lakehouse"
    # its tables only: no export of random scene vectors, nor anything another test left there
    leftovers = shutil.ignore_patterns("_exports", "_checkpoints", "_runs", "mlflow.db", "mlartifacts")
    shutil.copytree(ctr_world[0].root, root, ignore=leftovers)
    for table in ("raw/users", "raw/pois", "raw/impressions", "truth/users", "truth/pois"):
        shutil.copytree(Path(world_catalog.root) / table, root / table)
    backbone = tiny_backbone(root.parent / "backbone", world_schema(tiny_world_config))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        larr(root, "etl", "clean")
        larr(root, "etl", "pairs", "--set", "max_pairs_per_user=2", "--set", "max_pairs_per_poi=2")
        larr(
            root, "train", "contrastive", "--set", f"backbone={backbone}", "--set", "base_model=",
            "--set", "dim=16", "--set", "max_length=48", "--set", "batch_size=4", "--set", "max_steps=3",
            "--set", "warmup_steps=0", "--set", "probe_attribute=", "--set", "eval_max_pairs=8",
            "--set", "eval_batch_size=8", "--set", "device=cpu", "--set", "progress=false",
        )  # fmt: skip
        for side in ("texts", "scenes"):  # the POI vectors for recall, the scene vectors for LARR
            larr(root, "embed", side, "--set", "batch_size=64", "--set", "partitions=1",
                 *(["--set", "sides=[poi]"] if side == "texts" else []))  # fmt: skip
        for model in ("ple", "larr"):
            larr(root, "train", "ctr", "--model", model, *TINY_CTR)
        train = [
            part for a in TINY_CTR[1::2] if not a.startswith("seeds=") for part in ("--set", f"train.{a}")
        ]
        larr(
            root,
            "sweep",
            "--set",
            "seeds=[1]",
            "--set",
            "temperatures=[0.1,0.5]",
            "--set",
            "neg_ratios=[]",
            *train,
        )
    return root
