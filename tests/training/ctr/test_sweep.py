"""`larr sweep` on the tiny CTR world: each point carries its validation and test AUCs, and the
chosen value is the best on the validation split, never on the test split."""

from training.ctr.inputs import ModelConfig
from training.ctr.sweep import SweepConfig, run
from training.ctr.train import CtrConfig

QUIET = lambda _: None  # noqa: E731


def test_the_sweep_chooses_on_the_validation_split(spark, ctr_world, tmp_path):
    catalog, export = ctr_world
    train = CtrConfig(
        model="larr", scene_vectors=export, batch_size=256, max_steps=4, progress=False, log_model=False,
        network=ModelConfig(embedding_dim=4, hidden=(16,), expert_hidden=(16,), tower_hidden=(8,), scene_heads=2),
        checkpoint_dir=str(tmp_path / "ckpt"),
    )  # fmt: skip
    said = []
    cfg = SweepConfig(
        temperatures=(0.05, 1.0), neg_ratios=(), seeds=(1,), train=train, plot_dir=str(tmp_path)
    )
    figures = run(spark, catalog, cfg, log=said.append)
    points = figures["temperature"]
    assert [p["align_temperature"] for p in points] == [0.05, 1.0]
    assert all(0.0 < p["val_ctr_auc"] < 1.0 and 0.0 < p["ctr_auc"] < 1.0 for p in points)
    best = max(points, key=lambda p: p["val_ctr_auc"])
    assert figures["best_temperature"] == best["align_temperature"]
    assert f"sweep temperature: {best['align_temperature']} has the best validation CTR AUC" in said
    assert any(m.startswith("sweep temperature 0.05: validation CTR AUC ") for m in said)
    assert (tmp_path / "sweep_temperature.png").is_file()
    # each point trained from scratch in its own checkpoint folder (none resumed another's weights)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["temperature-0.05", "temperature-1.0"]


def test_without_a_validation_split_nothing_is_chosen():
    from training.ctr.sweep import _choose

    said = []
    assert _choose("temperature", [0.1, 0.5], [{"ctr_auc": 0.7}, {"ctr_auc": 0.8}], said.append) is None
    assert said == [
        "sweep temperature: no validation split in the samples, so no value is chosen (never on the test day)"
    ]
