"""Undo the table commits of `larr` runs that did not complete (killed, failed), before a run
that holds the tables' locks writes them or VACUUM cleans them.

Readers already skip such commits (core/catalog.py `TableCatalog.version`), but the latest
version still holds them: a MERGE or an append would build on a killed run's rows, a tool reading
the latest version would see them, and VACUUM would treat the published version's files as
unreferenced. Delta's RESTORE makes the published version the latest again.
"""

from __future__ import annotations

from core.catalog import TableCatalog


def roll_back_unfinished(spark, catalog: TableCatalog, tables, log) -> dict[str, int | None]:
    """Undo what runs that did not complete committed to `tables` (see TableCatalog.roll_back_unfinished),
    so this run builds on the published set: a MERGE or an append must not build on a killed run's
    rows. Returns table -> the version restored (None: emptied, no completed run had written it)."""
    undone = {}
    for table in tables:
        rolled = catalog.roll_back_unfinished(spark, table)
        if rolled is None:
            continue
        head, target = rolled
        undone[table] = target
        back_to = (
            f"restored version {target}" if target is not None else "emptied it (no completed run wrote it)"
        )
        log(
            f"{table}: version {head.version} was written by `larr {head.writer.job}` run "
            f"{head.writer.run_id}, which did not complete: {back_to}"
        )
    return undone
