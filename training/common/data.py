"""The one data-loading interface of the trainers: batches of a Delta table's current snapshot.

Every trainer reads its Delta table through this module and nothing else, so the backend can be
replaced without touching a trainer. Two steps:

1. `delta_snapshot(spark, catalog, table, columns, where)` (driver side, needs Spark): pins the
   table's latest version N, and lists the Parquet files of snapshot N with
   `spark.read.format("delta").option("versionAsOf", N).load(path).where(where).inputFiles()`.
   Delta's file list holds only the files live in that snapshot: files removed by later
   overwrites (still on disk until VACUUM) are not in it, so no stale row is ever read. The
   snapshot is a small frozen, picklable record (table, version, files, columns, row count) that
   the trainer logs to MLflow and can hand to every rank.
2. `DeltaBatches(snapshot, batch_size, ...)` (no Spark): reads the files with Petastorm's
   `make_batch_reader` (one thread, seeded row-group and row shuffles, so an epoch's order is a
   pure function of the seed and the epoch number: a resumed run skips the batches it already
   trained on and sees the same data as an uninterrupted run). Distributed runs pass
   `rank`/`world_size`, which become Petastorm's `cur_shard`/`shard_count` (sharding by Parquet
   row group: the table needs at least `world_size` row groups, in practice files). Batches are
   `dict[str, np.ndarray]`, re-cut to exactly `batch_size` rows across row groups through a
   seeded shuffle buffer; `to_torch` turns one into tensors.

Why Petastorm: it reads Parquet straight from the object store into numpy on each training
worker, shards by row group and streams (no copy of the table, no Spark on GPU workers). Its
limits, handled here: it needs pyarrow < 15 and numpy < 2 (the platform's pins); it wants file
URLs (`file:///...`, and `dbfs:/x` is read through the `/dbfs/x` mount); its batch reader refuses
list columns whose lengths differ within a row group, so variable-length arrays (token ids) are
padded per row group in the reader's transform and cut back to their true lengths here; it
returns partition columns as strings (read from the file paths); and it reads Parquet files
directly, so tables with deletion vectors or column mapping are refused (their files alone do not
give the snapshot's rows).

`where` selects Delta partitions (`pair_type = 'user_poi'`, `split = 'train'`): it may use only
partition columns, so the selected files hold exactly the selected rows.

Distributed runs must take the same number of steps on every rank; Petastorm's row-group shards
hold different numbers of rows, so with `world_size > 1` an epoch is exactly
`num_rows // (batch_size * world_size)` batches on every rank (a short shard starts over, a long
one stops early), unless `steps_per_epoch` or `balance_ranks=False` says otherwise.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# petastorm 0.12 calls pyarrow's legacy dataset API, which warns on every row group
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")

LENGTH_SUFFIX = "__len"  # the reader's transform adds `<column>__len` for every array column


class DataError(ValueError):
    pass


@dataclass(frozen=True)
class DeltaSnapshot:
    """Which rows a loader reads: the files of one Delta version, the columns, the partition filter."""

    table: str
    version: int
    location: str
    files: tuple[str, ...]  # Petastorm URLs of the snapshot's live Parquet files
    columns: tuple[str, ...]
    array_columns: tuple[str, ...]  # the subset of `columns` holding arrays (e.g. token ids)
    partition_columns: tuple[str, ...]
    num_rows: int
    where: str | None = None


def petastorm_url(path: str) -> str:
    """A path from Spark's `inputFiles()` as a URL Petastorm opens (`file:/x` -> `file:///x`)."""
    if path.startswith("dbfs:/"):
        return "file:///dbfs/" + path.removeprefix("dbfs:/").lstrip("/")
    if path.startswith("file:") and not path.startswith("file:///"):
        return "file:///" + path.removeprefix("file:").lstrip("/")
    if path.startswith("/"):
        return "file://" + path
    return path


def delta_snapshot(spark, catalog, table: str, columns: list[str], where: str | None = None) -> DeltaSnapshot:
    """Pin `table`'s latest Delta version and list the files a loader reads (driver side).

    Args:
        spark: the SparkSession.
        catalog: the `core.catalog.TableCatalog` that resolves `table`.
        table: logical name, e.g. `pairs.contrastive`.
        columns: the columns to read.
        where: an optional Spark SQL predicate over partition columns only.
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql.types import ArrayType, NumericType

    version = catalog.version(spark, table)
    if version is None:
        raise DataError(
            f"table {table} does not exist at {catalog.unity_name(table) or catalog.location(table)}"
        )
    detail = catalog.delta(spark, table).detail().select("location", "partitionColumns", "properties").first()
    properties = detail["properties"] or {}
    if properties.get("delta.enableDeletionVectors", "false").lower() == "true":
        raise DataError(
            f"table {table} has deletion vectors enabled: its Parquet files alone do not give its rows; "
            "rewrite it without them (ALTER TABLE ... SET TBLPROPERTIES delta.enableDeletionVectors = false, "
            "then REORG TABLE ... APPLY (PURGE))"
        )
    if properties.get("delta.columnMapping.mode", "none").lower() != "none":
        raise DataError(f"table {table} uses Delta column mapping: its Parquet column names are not its own")

    df = catalog.read(spark, table, version=version)
    missing = [c for c in columns if c not in df.columns]
    if missing or not columns:
        raise DataError(f"table {table} has no columns {missing or columns}; it has {df.columns}")
    partitions = tuple(detail["partitionColumns"])
    types = {f.name: f.dataType for f in df.schema.fields}
    array_columns = []
    for c in columns:
        if isinstance(types[c], ArrayType):
            if not isinstance(types[c].elementType, NumericType):
                raise DataError(
                    f"column {c} of {table} is {types[c].simpleString()}: only numeric arrays load"
                )
            array_columns.append(c)
    if where is not None:
        # analysing the predicate over an empty frame of the partition columns alone proves it uses
        # nothing else (a projection of `df` would not: Spark resolves a filter's missing columns)
        only_partitions = spark.createDataFrame([], df.select(*partitions).schema)
        try:
            only_partitions.where(where).schema  # noqa: B018 - analysis only, runs no job
        except AnalysisException:
            raise DataError(
                f"where {where!r} on {table} may use only its partition columns {list(partitions)}"
            ) from None
        df = df.where(where)
    files = tuple(sorted(petastorm_url(f) for f in df.inputFiles()))
    return DeltaSnapshot(
        table=table,
        version=version,
        location=detail["location"],
        files=files,
        columns=tuple(columns),
        array_columns=tuple(array_columns),
        partition_columns=partitions,
        num_rows=df.count() if files else 0,
        where=where,
    )


def _pad_arrays(array_columns: tuple[str, ...]):
    """Petastorm transform (one row group as pandas): pad array columns to one length, keep the lengths."""

    def transform(frame):
        for c in array_columns:
            values = frame[c]
            if values.isna().any():
                raise DataError(f"column {c} has null arrays")
            lengths = values.map(len).to_numpy(dtype=np.int32)
            width = int(lengths.max()) if len(lengths) else 0
            frame[c] = [np.pad(np.asarray(v), (0, width - len(v))) for v in values]
            frame[c + LENGTH_SUFFIX] = lengths
        return frame

    return transform


class DeltaBatches:
    """Batches of `batch_size` rows of a Delta snapshot, as `dict[str, np.ndarray]`, for one rank.

    Scalar columns are 1-D arrays; string columns hold `str`; an array column is an object array
    holding one 1-D numeric array per row, each of its own length. `epoch(e)` is the same sequence
    every time it is called with the same arguments; iterating the object runs `num_epochs`
    epochs (forever when None).

    Args:
        snapshot: what to read (`delta_snapshot`).
        batch_size: rows per batch.
        shuffle_seed: seeds the row-group order, the row order inside row groups and the buffer.
        num_epochs: epochs of `__iter__`; None = endless.
        rank, world_size: this rank's shard of the row groups.
        shuffle: False reads in file order (evaluation).
        shuffle_buffer: rows mixed across row groups before cutting batches.
        drop_last: drop a final batch smaller than `batch_size`.
        steps_per_epoch: exact batches per epoch, all full (a short shard starts over, a long one
            stops).
        balance_ranks: with several ranks and no `steps_per_epoch`, use the balanced
            `num_rows // (batch_size * world_size)`; False reads each shard exactly once
            (distributed evaluation: every row once, ranks may take different numbers of batches).
    """

    def __init__(
        self,
        snapshot: DeltaSnapshot,
        batch_size: int,
        *,
        shuffle_seed: int = 0,
        num_epochs: int | None = 1,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 4096,
        drop_last: bool = False,
        steps_per_epoch: int | None = None,
        balance_ranks: bool = True,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must be in [0, {world_size}), got {rank}")
        if snapshot.num_rows == 0:
            raise DataError(
                f"table {snapshot.table} version {snapshot.version} has no rows"
                + (f" where {snapshot.where}" if snapshot.where else "")
            )
        self.snapshot = snapshot
        self.batch_size = batch_size
        self.shuffle_seed = shuffle_seed
        self.num_epochs = num_epochs
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.drop_last = drop_last
        if steps_per_epoch is None and world_size > 1 and balance_ranks:
            steps_per_epoch = snapshot.num_rows // (batch_size * world_size)
            if steps_per_epoch == 0:
                raise DataError(
                    f"{snapshot.num_rows} rows of {snapshot.table} are fewer than one batch of "
                    f"{batch_size} on each of {world_size} ranks"
                )
        self.steps_per_epoch = steps_per_epoch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        epoch = 0
        while self.num_epochs is None or epoch < self.num_epochs:
            yield from self.epoch(epoch)
            epoch += 1

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches of one epoch, after skipping the first `skip` (resuming mid-epoch)."""
        batches = self._batches(epoch)
        if self.steps_per_epoch is not None:
            batches = self._exactly(epoch, self.steps_per_epoch)
        for step, batch in enumerate(batches):
            if step >= skip:
                yield batch

    # -- internals --------------------------------------------------------------------------------
    def _exactly(self, epoch: int, steps: int) -> Iterator[dict[str, np.ndarray]]:
        made, rounds = 0, 0
        while made < steps:
            produced = 0
            for batch in self._batches(epoch, rounds, drop_last=True):
                produced += 1
                yield batch
                made += 1
                if made == steps:
                    return
            if produced == 0:
                raise DataError(
                    f"shard {self.rank} of {self.world_size} of {self.snapshot.table} holds no full batch"
                )
            rounds += 1  # a short shard starts over (with its own order) to keep the ranks in step

    def _seed(self, epoch: int, rounds: int = 0) -> int:
        """Petastorm's seed: the same on every rank (so ranks agree on the row groups' order)."""
        return int(np.random.SeedSequence([self.shuffle_seed, epoch, rounds]).generate_state(1)[0])

    def _row_groups(self, seed: int) -> Iterator[dict[str, np.ndarray]]:
        from petastorm import make_batch_reader
        from petastorm.errors import NoDataAvailableError
        from petastorm.transform import TransformSpec

        s = self.snapshot
        transform = None
        if s.array_columns:
            transform = TransformSpec(
                _pad_arrays(s.array_columns),
                edit_fields=[(c + LENGTH_SUFFIX, np.int32, (), False) for c in s.array_columns],
            )
        sharded = self.world_size > 1
        try:
            reader = make_batch_reader(
                list(s.files),
                schema_fields=[re.escape(c) for c in s.columns],
                reader_pool_type="thread",
                workers_count=1,  # one worker: a deterministic order
                seed=seed,
                shuffle_rows=self.shuffle,
                shuffle_row_groups=self.shuffle,
                num_epochs=1,
                cur_shard=self.rank if sharded else None,
                shard_count=self.world_size if sharded else None,
                transform_spec=transform,
            )
        except NoDataAvailableError:
            raise DataError(
                f"{s.table} version {s.version} has fewer Parquet row groups than the {self.world_size} "
                "ranks: write it with more files (repartition) or train on fewer ranks"
            ) from None
        with reader:
            for group in reader:
                columns = group._asdict()
                for c in s.array_columns:
                    padded, lengths = columns.pop(c), columns.pop(c + LENGTH_SUFFIX)
                    ragged = np.empty(len(lengths), dtype=object)
                    ragged[:] = [row[:n] for row, n in zip(padded, lengths, strict=True)]
                    columns[c] = ragged
                yield {c: columns[c] for c in s.columns}

    def _batches(
        self, epoch: int, rounds: int = 0, drop_last: bool | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        drop_last = self.drop_last if drop_last is None else drop_last
        seed = self._seed(epoch, rounds)
        rng = np.random.default_rng([seed, self.rank])
        buffer: dict[str, np.ndarray] | None = None
        for group in self._row_groups(seed):
            buffer = group if buffer is None else {c: _concat(buffer[c], group[c]) for c in buffer}
            if _rows(buffer) < self.shuffle_buffer:
                continue
            if self.shuffle:
                buffer = _take(buffer, rng.permutation(_rows(buffer)))
            full = _rows(buffer) // self.batch_size * self.batch_size
            for start in range(0, full, self.batch_size):
                yield _take(buffer, np.arange(start, start + self.batch_size))
            buffer = _take(buffer, np.arange(full, _rows(buffer)))
        if buffer is None or _rows(buffer) == 0:
            return
        if self.shuffle:
            buffer = _take(buffer, rng.permutation(_rows(buffer)))
        for start in range(0, _rows(buffer), self.batch_size):
            batch = _take(buffer, np.arange(start, min(start + self.batch_size, _rows(buffer))))
            if _rows(batch) == self.batch_size or not drop_last:
                yield batch


def _rows(columns: dict[str, np.ndarray]) -> int:
    return len(next(iter(columns.values())))


def _take(columns: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {c: v[index] for c, v in columns.items()}


def _concat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype == object or b.dtype == object:
        out = np.empty(len(a) + len(b), dtype=object)
        out[: len(a)], out[len(a) :] = list(a), list(b)
        return out
    return np.concatenate([a, b])


def delta_loader(
    spark,
    catalog,
    table: str,
    columns: list[str],
    batch_size: int,
    shuffle_seed: int = 0,
    num_epochs: int | None = 1,
    where: str | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> DeltaBatches:
    """`delta_snapshot` then `DeltaBatches`: one call for a single-process trainer or a test."""
    snapshot = delta_snapshot(spark, catalog, table, columns, where)
    return DeltaBatches(
        snapshot,
        batch_size,
        shuffle_seed=shuffle_seed,
        num_epochs=num_epochs,
        rank=rank,
        world_size=world_size,
    )


def to_torch(batch: dict[str, np.ndarray]) -> dict:
    """A batch as torch: numeric columns -> tensors, array columns -> lists of 1-D tensors,
    string columns -> lists of str (padding ragged arrays is the trainer's choice: side, pad id)."""
    import torch

    out = {}
    for name, values in batch.items():
        if values.dtype == object and len(values) and isinstance(values[0], np.ndarray):
            out[name] = [torch.from_numpy(np.ascontiguousarray(v)) for v in values]
        elif values.dtype.kind in "biuf":
            out[name] = torch.from_numpy(np.ascontiguousarray(values))
        else:
            out[name] = [str(v) for v in values]
    return out
