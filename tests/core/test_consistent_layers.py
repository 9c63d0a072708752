"""A layer is read as one consistent set: killed runs, unfinished runs, re-runs, locks, VACUUM.

The crash test runs the real `larr etl clean` in a subprocess and kills it with SIGKILL at a
chosen table commit (core/faults.py); the tables it had committed stay on disk, and readers must
still see the set the last completed run published.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core import manifest
from core.catalog import CatalogError, TableCatalog
from jobs.cli import main
from tests.core.crash import REPO, kill_at

CLEAN_TABLES = ("clean.users", "clean.pois", "clean.impressions", "clean.rejects")
RAW_TABLES = ("raw.dataset_schema", "raw.users", "raw.pois", "raw.impressions")


def _contents(spark, catalog: TableCatalog) -> dict[str, list]:
    """Each clean table's rows as sorted tuples (tiny tables)."""
    return {name: sorted(map(tuple, catalog.read(spark, name).collect()), key=repr) for name in CLEAN_TABLES}


@pytest.fixture()
def raw_lakehouse(spark, world_catalog, lakehouse) -> Path:
    catalog = TableCatalog.resolve(str(lakehouse))
    for name in RAW_TABLES:
        catalog.write(world_catalog.read(spark, name), name)
    return lakehouse


def test_a_killed_clean_leaves_the_last_completed_set_and_a_rerun_converges(spark, raw_lakehouse, capsys):
    root = str(raw_lakehouse)
    assert main(["etl", "clean", "--lakehouse", root]) == 0
    catalog = TableCatalog.resolve(root)
    published = {name: catalog.version(spark, name) for name in CLEAN_TABLES}
    first = manifest.last_run(spark, catalog, "etl clean")
    assert first.outputs == published
    assert set(first.inputs) == set(RAW_TABLES)  # the exact input versions it read
    expected = _contents(spark, catalog)

    # unchanged inputs and config: nothing written, and it says so
    capsys.readouterr()
    assert main(["etl", "clean", "--lakehouse", root]) == 0
    assert "etl clean: up to date" in capsys.readouterr().out
    assert {name: catalog.latest_version(spark, name) for name in CLEAN_TABLES} == published

    # killed after two of four tables (before its first commit and before the manifest: extended)
    _killed_runs_leave_the_published_set(spark, raw_lakehouse, (2,), published, expected)

    # the next job reads the published set, and records it
    assert main(["features", "stats", "--lakehouse", root]) == 0
    stats_run = manifest.last_run(spark, catalog, "features stats")
    assert stats_run.inputs == {"clean.impressions": published["clean.impressions"]}
    # the same for another job: `features stats` killed after two of its four tables
    kill_at(raw_lakehouse, 2, "features", "stats")
    fresh = TableCatalog.resolve(root)
    moved = [t for t, v in stats_run.outputs.items() if fresh.latest_version(spark, t) != v]
    assert len(moved) == 2
    assert {t: fresh.version(spark, t) for t in stats_run.outputs} == stats_run.outputs

    # a re-run (its outputs were written since: not up to date) converges to the uninterrupted result
    assert main(["etl", "clean", "--lakehouse", root]) == 0
    rerun = manifest.last_run(spark, catalog, "etl clean")
    assert rerun.run_id != first.run_id
    fresh = TableCatalog.resolve(root)
    assert {name: fresh.version(spark, name) for name in CLEAN_TABLES} == rerun.outputs
    assert all(rerun.outputs[name] > published[name] for name in CLEAN_TABLES)
    assert _contents(spark, fresh) == expected

    # the files of killed runs are VACUUM's to remove, under Delta's retention rules
    table = Path(fresh.location("clean.users"))
    live = sorted(table.glob("*.parquet"))
    orphan = table / "part-99999-orphan-of-a-killed-run.snappy.parquet"
    orphan.write_bytes(live[0].read_bytes())
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(orphan, (week_ago, week_ago))
    assert main(["etl", "vacuum", "--lakehouse", root, "--set", "tables=[clean.users]"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not orphan.exists()
    assert summary["files_deleted_by_table"] == {"clean.users": 1}
    assert _contents(spark, TableCatalog.resolve(root)) == expected
    # VACUUM commits to the table's log, but its rows are the same: the job is still up to date
    assert main(["etl", "clean", "--lakehouse", root]) == 0
    assert "etl clean: up to date" in capsys.readouterr().out


def _killed_runs_leave_the_published_set(spark, raw_lakehouse, kill_points, published, expected) -> None:
    """`etl clean` SIGKILLed after each number of table commits: readers still see `published`."""
    for commits in kill_points:
        kill_at(raw_lakehouse, commits, "etl", "clean")
        fresh = TableCatalog.resolve(str(raw_lakehouse))  # a new reader: nothing cached
        latest = {name: fresh.latest_version(spark, name) for name in CLEAN_TABLES}
        moved = [name for name in CLEAN_TABLES if latest[name] != published[name]]
        assert len(moved) == commits, (commits, latest, published)
        assert {name: fresh.version(spark, name) for name in CLEAN_TABLES} == published
        assert _contents(spark, fresh) == expected


@pytest.mark.extended
def test_clean_killed_before_its_first_commit_or_its_manifest_leaves_the_last_completed_set(
    spark, raw_lakehouse
):
    assert main(["etl", "clean", "--lakehouse", str(raw_lakehouse)]) == 0
    catalog = TableCatalog.resolve(str(raw_lakehouse))
    published = {name: catalog.version(spark, name) for name in CLEAN_TABLES}
    _killed_runs_leave_the_published_set(spark, raw_lakehouse, (0, 4), published, _contents(spark, catalog))


def test_a_table_only_an_unfinished_run_wrote_is_refused_in_one_line(spark, catalog):
    frame = spark.range(3)
    manifest.set_tag(spark, manifest.RunTag("etl corpus", "dead-run"))
    try:
        catalog.write(frame, "corpus.cpt")
        assert catalog.version(spark, "corpus.cpt") == 0  # the writing run reads its own commit
    finally:
        manifest.set_tag(spark, None)
    with pytest.raises(CatalogError) as refused:
        TableCatalog.resolve(catalog.root).version(spark, "corpus.cpt")
    assert str(refused.value) == (
        "table corpus.cpt was last written by `larr etl corpus` run dead-run, which did not complete, "
        "and no completed run wrote it before: run `larr etl corpus` again"
    )
    # a commit made outside any `larr` run (a notebook, a test) is read as it is
    catalog.write(frame, "corpus.cpt")
    assert TableCatalog.resolve(catalog.root).version(spark, "corpus.cpt") == 1


def _wait_for(flag: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not flag.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{flag} did not appear within {seconds} s")
        time.sleep(0.05)


def test_a_real_commit_race_names_the_table_and_the_other_run(spark, catalog, tmp_path):
    """Two writers race for one table, as on an object store (no lock there): this run's write has
    started its Delta transaction when another run commits; Delta refuses this run's commit and the
    user gets one line naming the table and the winner, and the winner's rows are what is there."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    catalog.write(spark.range(2), "clean.users")  # version 0, written outside any run
    started, go = tmp_path / "started", tmp_path / "go"

    @F.udf(LongType())
    def held(value):  # runs on an executor after the transaction has read version 0
        started.touch()
        _wait_for(go)
        return value

    lost: list[BaseException] = []

    def slow_writer() -> None:
        try:
            catalog.write(spark.range(4).select(held("id").alias("id")).coalesce(1), "clean.users")
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            lost.append(err)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        _wait_for(started)
        winner = spark.newSession()  # its own SQL conf, so its own run tag on its commits
        manifest.set_tag(winner, manifest.RunTag("etl clean", "run-b"))
        assert catalog.write(winner.range(7, 8), "clean.users") == 1
    finally:
        go.touch()
        thread.join(timeout=120)
    assert len(lost) == 1 and isinstance(lost[0], CatalogError), lost
    assert str(lost[0]).startswith(
        "table clean.users: `larr etl clean` run run-b committed to it while this run was writing ("
    )
    assert str(lost[0]).endswith(
        "); nothing of this run was committed to clean.users: run the command again once the other "
        "run has finished"
    )
    assert catalog.latest_version(spark, "clean.users") == 1
    table = spark.read.format("delta").load(catalog.location("clean.users"))
    assert [row.id for row in table.collect()] == [7]


def test_a_second_writer_of_a_table_is_refused_up_front(lakehouse, capsys):
    """Another process holds clean.*'s locks: `larr etl clean` stops before any work, naming it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from core import locks\n"
            f"with locks.writing({str(lakehouse)!r}, 'etl clean', {list(CLEAN_TABLES)!r}) as held:\n"
            "    held.note_run('run-a'); print('held', flush=True); time.sleep(120)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["etl", "clean", "--lakehouse", str(lakehouse)]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's store set-up lines
        assert line.startswith(
            "larr etl clean: error: table clean.impressions is being written by `larr etl clean` (pid "
        )
        assert f"pid {holder.pid} on " in line and ", MLflow run run-a) in this lakehouse" in line
        assert line.endswith(
            "in this lakehouse: wait for it to finish (or stop it), then run `larr etl clean` again"
        )
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_commits_are_rolled_back_before_vacuum_and_a_table_only_it_wrote_is_emptied(
    spark, catalog
):
    from core.rollback import roll_back_unfinished
    from etl.vacuum import VacuumConfig
    from etl.vacuum import run as vacuum

    catalog.write(spark.range(3), "corpus.cpt")  # made outside larr: read as it is
    manifest.set_tag(spark, manifest.RunTag("etl corpus", "dead-run"))
    try:
        catalog.write(spark.range(5), "corpus.cpt")
        catalog.write(spark.range(7), "corpus.heldout")
    finally:
        manifest.set_tag(spark, None)
    said = []
    # VACUUM would count version 0's files as unreferenced by the latest version: it rolls back first
    vacuum(spark, catalog, VacuumConfig(tables=("corpus.cpt",)), log=said.append)
    assert said[0] == (
        "corpus.cpt: version 1 was written by `larr etl corpus` run dead-run, which did not complete: "
        "restored version 0"
    )
    history = catalog.delta(spark, "corpus.cpt").history().select("version", "operation").collect()
    operations = {r["version"]: r["operation"] for r in history}
    assert operations[2] == "RESTORE" and all(operations[v].startswith("VACUUM") for v in operations if v > 2)
    assert catalog.read(spark, "corpus.cpt", version=catalog.latest_version(spark, "corpus.cpt")).count() == 3

    assert roll_back_unfinished(spark, catalog, ["corpus.heldout", "corpus.cpt"], said.append) == {
        "corpus.heldout": None
    }
    assert said[-1] == (
        "corpus.heldout: version 0 was written by `larr etl corpus` run dead-run, which did not "
        "complete: emptied it (no completed run wrote it)"
    )
    assert catalog.read(spark, "corpus.heldout").count() == 0  # readable again, with no dead rows
