"""Every multi-table job killed with SIGKILL between its table commits, and after the last one
before its run manifest: a fresh reader still reads the set its last completed run published, and
a re-run rolls the killed commits back and converges to the uninterrupted result.

Each case publishes a first run, then changes its inputs or config (so a killed run's commits
differ from the published rows), kills the changed job between two of its commits and then after
its last one (whose tables hold what an uninterrupted run writes), and re-runs it. `etl clean`
and `features stats` have their own crash test (test_consistent_layers.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import manifest
from core.catalog import TableCatalog
from jobs.cli import main
from jobs.commands import COMMANDS
from tests.conftest import REPO_ROOT
from tests.core.crash import kill_at

SMALL_WORLD = [
    "--set", "world.users=60", "--set", "world.pois=120", "--set", "world.days=3",
    "--set", "world.impressions_per_day=300", "--set", "test_day=3",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    command: str
    prepare: Callable  # (spark, root, tmp_path) -> the first run's --set flags
    change: Callable  # (spark, root, tmp_path) -> the flags of the killed runs and the re-run
    kills: tuple[tuple[int, int], ...]  # (commits before the kill, tables that moved on)


def _generate_first(spark, root, tmp_path):
    return SMALL_WORLD


def _generate_change(spark, root, tmp_path):
    return [*SMALL_WORLD, "--set", "world.seed=8"]


def _ingest_first(spark, root, tmp_path):
    sources = tmp_path / "byo"
    shutil.copytree(REPO_ROOT / "tests" / "data" / "byo", sources)
    return ["--set", f"mapping={sources / 'mapping.yaml'}"]


def _ingest_change(spark, root, tmp_path):
    events = tmp_path / "byo" / "impressions.csv"
    events.write_text("".join(events.read_text().splitlines(keepends=True)[:-1]))  # a day's export shrank
    return ["--set", f"mapping={tmp_path / 'byo' / 'mapping.yaml'}"]


def _encoder(tmp_path: Path) -> Path:
    from tests.features.builders import tiny_encoder_model

    folder = tmp_path / "encoder"
    if not folder.exists():
        tiny_encoder_model(folder, max_length=64)
    return folder


SCENES = [("weather", "rainy"), ("weather", "sunny"), ("city", "Chengdu"), ("city", None)]


def _write_dictionary(spark, root, values) -> None:
    from tests.features.builders import write_scene_dictionary

    write_scene_dictionary(spark, TableCatalog.resolve(str(root)), [(f, v, 1) for f, v in values])


def _scene_flags(tmp_path):
    flags = ["encoder=" + str(_encoder(tmp_path)), "batch_size=2", "partitions=1"]
    return [x for flag in flags for x in ("--set", flag)]


def _scenes_first(spark, root, tmp_path):
    _write_dictionary(spark, root, SCENES)
    return _scene_flags(tmp_path)


def _scenes_change(spark, root, tmp_path):
    _write_dictionary(spark, root, [*SCENES, ("weather", "snowy"), ("city", "Harbin"), ("city", " ")])
    return _scene_flags(tmp_path)


def _texts_flags(tmp_path):
    flags = [
        "encoder=" + str(_encoder(tmp_path)),
        "history_end_date=2026-04-08",
        "batch_size=2",
        "partitions=1",
    ]
    return [x for flag in flags for x in ("--set", flag)]


def _texts_first(spark, root, tmp_path):
    from tests.etl.text_fixtures import write_clean

    write_clean(spark, TableCatalog.resolve(str(root)))
    return _texts_flags(tmp_path)


def _texts_change(spark, root, tmp_path):
    from tests.etl.text_fixtures import POIS, POIS_SCHEMA, USERS, USERS_SCHEMA

    catalog = TableCatalog.resolve(str(root))
    renamed = [(p[0], p[1] + " II", *p[2:]) if p[0] == 1 else p for p in POIS]
    catalog.write(spark.createDataFrame(renamed, POIS_SCHEMA), "clean.pois")
    older = [(*u[:3], "35-44", *u[4:]) if u[0] == 10 else u for u in USERS]
    catalog.write(spark.createDataFrame(older, USERS_SCHEMA), "clean.users")
    return _texts_flags(tmp_path)


CASES = [
    # generate: 7 tables, one commit each
    Case("generate", _generate_first, _generate_change, kills=((2, 2), (7, 7))),
    # ingest: the schema, users, POIs, impressions, then the mapping row
    Case("etl ingest", _ingest_first, _ingest_change, kills=((1, 1), (5, 5))),
    # embed scenes: the rejects (replaceWhere), then the MERGE of the new scenes
    Case("embed scenes", _scenes_first, _scenes_change, kills=((1, 1), (2, 2))),
    # embed texts: per side its rejects (none here: Delta commits no empty replaceWhere), then its MERGE
    Case("embed texts", _texts_first, _texts_change, kills=((2, 1), (4, 2))),
]


def _contents(spark, catalog: TableCatalog, tables, latest: bool = False) -> dict[str, list]:
    """Each table's rows as sorted tuples: as the catalog reads them (the published version), or at
    the latest version."""

    def rows(table):
        version = catalog.latest_version(spark, table) if latest else None
        return sorted(map(tuple, catalog.read(spark, table, version=version).collect()), key=repr)

    return {t: rows(t) for t in tables}


def _larr(command: str, root: Path, flags: list[str], *extra: str) -> None:
    assert main([*command.split(), "--lakehouse", str(root), *flags, *extra]) == 0, command


# `embed scenes` (the case that found the rollback bug) runs in CI; the others in `make test-extended`
PARAMS = [
    pytest.param(
        c, id=c.command.replace(" ", "_"), marks=() if c.command == "embed scenes" else pytest.mark.extended
    )
    for c in CASES
]


@pytest.mark.parametrize("case", PARAMS)
def test_a_killed_job_leaves_its_published_set_and_a_rerun_converges(
    spark, lakehouse, tmp_path, capsys, case
):
    tables = COMMANDS[case.command].writes
    _larr(case.command, lakehouse, case.prepare(spark, lakehouse, tmp_path))
    first = manifest.last_run(spark, TableCatalog.resolve(str(lakehouse)), case.command)
    published = first.outputs
    assert set(published) <= set(tables) and published
    expected = _contents(spark, TableCatalog.resolve(str(lakehouse)), published)

    flags = case.change(spark, lakehouse, tmp_path)
    for commits, moved_tables in case.kills:
        kill_at(lakehouse, commits, *case.command.split(), *flags)
        fresh = TableCatalog.resolve(str(lakehouse))  # a new reader: nothing cached
        moved = [t for t in published if fresh.latest_version(spark, t) != published[t]]
        assert len(moved) == moved_tables, (commits, moved)
        assert {t: fresh.version(spark, t) for t in published} == published
        assert _contents(spark, fresh, published) == expected
        assert manifest.last_run(spark, fresh, case.command).run_id == first.run_id
    # the last kill came after every table commit: its rows are the uninterrupted run's
    converged = _contents(spark, fresh, published, latest=True)
    assert converged != expected  # the change shows in the rows: a mixed read would have been seen

    capsys.readouterr()
    _larr(case.command, lakehouse, flags, "--force")
    said = capsys.readouterr()
    assert "which did not complete: restored version" in said.out + said.err
    fresh = TableCatalog.resolve(str(lakehouse))
    rerun = manifest.last_run(spark, fresh, case.command)
    assert rerun.run_id != first.run_id
    # the killed commits were rolled back first: nothing unpublished is left on top
    assert {t: fresh.latest_version(spark, t) for t in rerun.outputs} == rerun.outputs
    assert _contents(spark, fresh, published) == converged
