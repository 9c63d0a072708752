from dataclasses import dataclass, field

import pytest

from etl.synthetic.config import GenerateConfig
from jobs.config import ConfigError, default_config_path, load_config


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 3
    label: str | None = None


def write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_every_command_config_loads_strictly_from_its_yaml():
    from jobs.commands import COMMANDS

    required = {"etl ingest": ["mapping=tests/data/byo/mapping.yaml"], "recall": ["scene=a rainy evening"]}
    for command in COMMANDS.values():
        path = default_config_path(command.config_file) if command.config_file else None
        cfg = load_config(command.config_cls, path, required.get(command.name, []))
        assert isinstance(cfg, command.config_cls)


def test_generate_yaml_values():
    cfg = load_config(GenerateConfig, default_config_path("generate"))
    assert cfg == GenerateConfig(world=cfg.world, dirty=cfg.dirty, test_day=8)
    assert cfg.world.users == 3000 and cfg.dirty.fraction == 0.002


def test_loads_nested_values_and_defaults(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "version: 1\ninner:\n  rate: 2\nsteps: 5\n"))
    assert cfg == Outer(inner=Inner(rate=2.0, names=["a"]), steps=5, label=None)


def test_overrides_parse_values_and_reach_nested_keys(tmp_path):
    cfg = load_config(
        Outer, write(tmp_path, "version: 1\n"), ["inner.rate=0.25", "inner.names=[x, y]", "label=hello"]
    )
    assert cfg == Outer(inner=Inner(rate=0.25, names=["x", "y"]), steps=3, label="hello")


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("version: 1\nstepz: 4\n", [], "unknown config key stepz"),
        ("version: 1\ninner:\n  ratee: 1\n", [], "unknown config key inner.ratee"),
        ("version: 1\nsteps: four\n", [], "config key steps: expected int, got str 'four'"),
        ("version: 1\nsteps: true\n", [], "config key steps: expected int, got bool"),
        ("version: 1\ninner: 3\n", [], "config key inner: expected a mapping"),
        ("version: 1\ninner:\n  names: x\n", [], "config key inner.names: expected a list"),
        ("steps: 4\n", [], "key version must be 1"),
        ("version: 1\n", ["inner.bogus=1"], "unknown config key inner.bogus"),
        ("version: 1\n", ["steps=1.5"], "config key steps: expected int, got float"),
        ("version: 1\n", ["steps"], "--set expects section.key=value"),
        ("version: 1\n", ["inner.names=[1,"], "--set inner.names: '[1,' is not a valid value"),
        ("version: 1\n", ["label=2026-13-45"], "--set label: '2026-13-45' is not a valid value"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(Outer, write(tmp_path, text), overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_validation_in_the_dataclass_becomes_a_config_error():
    with pytest.raises(ConfigError, match="world.pois must be at least"):
        load_config(GenerateConfig, None, ["world.pois=10"])
    with pytest.raises(ConfigError, match="test_day must be within 1..world.days=8"):
        load_config(GenerateConfig, None, ["test_day=9"])
    with pytest.raises(ConfigError, match="world.start_date must be a date YYYY-MM-DD, got '2026-13-45'"):
        load_config(GenerateConfig, None, ['world.start_date="2026-13-45"'])  # quoted: a string to YAML


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_a_date_typed_into_set_stays_the_text_it_was_typed_as(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "version: 1\n"), ["label=2014-04-20"])
    assert cfg.label == "2014-04-20"
    cfg = load_config(GenerateConfig, None, ["world.start_date=2026-05-01"])
    assert cfg.world.start_date == "2026-05-01"
