"""A table-writing command's run, published as one consistent set, or skipped when up to date.

The command's table commits carry its run tag (core/manifest.py); its run manifest row set is
committed after the last of them, with the input versions it read and its config hash. A re-run
whose config, code (core/manifest.py `code_revision`: the package version and a digest of its
sources) and recorded input versions are unchanged, and whose outputs nobody has written since,
writes nothing and says "up to date" (`--force` re-computes).
"""

from __future__ import annotations

from typing import Any

from core import manifest
from core.catalog import TableCatalog
from core.rollback import roll_back_unfinished
from jobs.commands import Command, Context


def unchanged_since(spark, catalog: TableCatalog, command: Command, digest: str) -> manifest.RunRecord | None:
    """The last completed run of `command` if re-running it now would reproduce its outputs."""
    last = manifest.last_run(spark, catalog, command.name)
    if last is None or last.config_hash != digest:
        return None
    return last if manifest.still_current(spark, catalog, last) else None


def _published_by(spark, catalog: TableCatalog, table: str, tag: manifest.RunTag) -> int | None:
    """The version this run publishes: its own commit, else (a table it did not write this time)
    the version readers read already, never another run's unfinished commit."""
    head = catalog.head(spark, table)
    if head is None:
        return None
    return head.version if head.writer == tag else catalog.version(spark, table)


def run_published(
    command: Command, ctx: Context, cfg: Any, run_id: str, force: bool, holds_locks: bool = False
) -> dict:
    """Run a table-writing command and commit its run manifest last; other commands just run.

    With `holds_locks` (this process holds the locks of every table the command writes, so no
    other run is writing them), first roll back what runs that did not complete left on them."""
    if not command.writes:
        return command.run(ctx, cfg)
    spark, catalog = ctx.spark, ctx.catalog
    digest = manifest.config_hash(cfg)
    if command.skips_when_unchanged and not force:
        last = unchanged_since(spark, catalog, command, digest)
        if last is not None:
            ctx.log(
                f"{command.name}: up to date: config, code and input versions unchanged since run {last.run_id} "
                f"({last.committed_at:%Y-%m-%d %H:%M:%S} UTC); nothing written (--force re-computes)"
            )
            return {
                "up_to_date": True,
                "since_run": last.run_id,
                "input_versions": last.inputs,
                "output_versions": last.outputs,
            }
    tag = manifest.RunTag(job=command.name, run_id=run_id)
    catalog.reads.clear()
    manifest.set_tag(spark, tag)
    try:
        if holds_locks:
            roll_back_unfinished(spark, catalog, command.writes, ctx.log)
        figures = command.run(ctx, cfg)
        outputs = {t: v for t in command.writes if (v := _published_by(spark, catalog, t, tag)) is not None}
        inputs = {t: v for t, v in catalog.reads.items() if t not in command.writes}
        manifest.commit(spark, catalog, tag, outputs, inputs, digest)
    finally:
        manifest.set_tag(spark, None)
    figures.setdefault("input_versions", inputs)
    figures.setdefault("output_versions", outputs)
    return figures
