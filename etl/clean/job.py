"""clean: raw.users, raw.pois, raw.impressions, raw.dataset_schema -> clean.users, clean.pois, clean.impressions, clean.rejects.

Grain: the clean tables keep the raw grain (one row per user, per POI, per impression event) and
schema; clean.impressions is partitioned by `dt`. clean.rejects has one row per rejected input
row: `source_table`, `reason` (the first failed rule, see rules.py), `raw_payload` (the whole raw
row as JSON), `dt` (impressions only) and `input_version` (the Delta version of the source read).
Impressions must reference a *valid* user and POI, so users and POIs are cleaned first. The
columns, types and rules come from the lakehouse's dataset schema (rules.py).
Nothing is dropped silently: the job checks input rows = valid rows + rejected rows per table.
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from core.catalog import TableCatalog
from core.dataset_schema import DatasetSchema
from core.raw_schema import KEYS, PARTITIONS, TABLES, raw_struct
from core.schema_table import SCHEMA_TABLE, read_schema
from etl.clean import rules
from etl.clean.config import CleanConfig

REASON = "_reason"
KEY_HASH, CONTESTED = "_key_hash", "_contested"  # a row's key hash; its key is held by other rows
RAW_PREFIX = "_raw_"  # source values carried for the payload of rejects
REJECTS = "clean.rejects"
REJECT_COLUMNS = ("source_table", "reason", "raw_payload", "dt", "input_version")


class CleanInputError(ValueError):
    """A raw table that cannot be validated at all (a column is missing)."""


class ReconciliationError(RuntimeError):
    """Input rows != valid rows + rejected rows: a row was lost or duplicated."""


def check_columns(raw: DataFrame, table: str, schema: DatasetSchema) -> StructType:
    """The table's declared columns in the raw table's order; a one-line error for a missing one."""
    struct = raw_struct(schema, table, raw.columns)
    missing = [f.name for f in struct.fields if f.name not in raw.columns]
    if missing:
        raise CleanInputError(
            f"raw.{table} has no column {missing[0]}, which dataset schema {schema.name!r} declares"
            f" (columns: {', '.join(raw.columns)})"
        )
    return struct


def annotate(raw: DataFrame, table: str, cfg: CleanConfig, schema: DatasetSchema) -> DataFrame:
    """Raw rows -> the raw columns cast to the raw schema and `_reason`, the first failed
    single-row rule (null when the row passes).

    Source values that the cast may change (a column of another type) and columns outside the
    schema are carried as `_raw_<name>` so that a reject's payload is the row as read.
    """
    struct = check_columns(raw, table, schema)
    types = {f.name: f.dataType for f in raw.schema.fields}
    carried = [c for c in raw.columns if c not in struct.names or types[c] != struct[c].dataType]
    typed = raw.select(
        *[F.col(f.name).try_cast(f.dataType).alias(f.name) for f in struct.fields],
        *[F.col(c).alias(RAW_PREFIX + c) for c in carried],
        rules.first_failure(rules.type_rules(raw.schema, struct)).alias(REASON),
    )
    return typed.withColumn(
        REASON, F.coalesce(F.col(REASON), rules.first_failure(rules.row_rules(table, struct, schema, cfg)))
    )


def _columns(annotated: DataFrame) -> list[str]:
    """The table's columns of an annotated frame (not the carried source values or the reason)."""
    return [c for c in annotated.columns if not c.startswith(RAW_PREFIX) and c != REASON]


def payload(annotated: DataFrame) -> Column:
    """JSON of the row as read (nulls included): table columns, then any extra source columns."""
    names = _columns(annotated)
    columns = [
        F.col(RAW_PREFIX + name if RAW_PREFIX + name in annotated.columns else name).alias(name)
        for name in names
    ]
    extra = [c for c in annotated.columns if c.startswith(RAW_PREFIX) and c[len(RAW_PREFIX) :] not in names]
    columns += [F.col(c).alias(c[len(RAW_PREFIX) :]) for c in extra]
    return F.to_json(F.struct(*columns), {"ignoreNullFields": "false"})


def with_references(impressions: DataFrame, users: DataFrame, pois: DataFrame) -> DataFrame:
    """Reject impressions whose user or POI is not among the given (valid) users and POIs."""
    known_users = users.select("user_id", F.lit(True).alias("_user_known")).dropDuplicates(["user_id"])
    known_pois = pois.select("poi_id", F.lit(True).alias("_poi_known")).dropDuplicates(["poi_id"])
    columns = impressions.columns
    joined = impressions.join(known_users, "user_id", "left").join(known_pois, "poi_id", "left")
    reason = F.coalesce(
        F.col(REASON),
        F.when(F.col("_user_known").isNull(), F.lit("unknown_user")),
        F.when(F.col("_poi_known").isNull(), F.lit("unknown_poi")),
    )
    return joined.withColumn(REASON, reason).select(*columns)


def contested_keys(annotated: DataFrame, table: str) -> DataFrame:
    """The hashes of the keys that more than one row holds. Only the key column is read and one
    long per row shuffled, not the rows. It is a superset of the keys that need a ranking (a key
    whose second row fails a rule is in it, and so is a hash collision): more rows are ranked,
    never fewer."""
    return (
        annotated.groupBy(F.xxhash64(KEYS[table]).alias(KEY_HASH))
        .count()
        .where(F.col("count") > 1)
        .select(KEY_HASH, F.lit(True).alias(CONTESTED))
    )


def split_contested(annotated: DataFrame, table: str, contested: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(the valid rows whose key no other row holds; every other row, ranked): the second part is
    the rows already rejected and the rows of contested keys, few on a real log.

    A contested key keeps one valid row, the first by content hash (then content); the others get
    `duplicate_<key>`. Rows already rejected sort last and keep their reason; rows without a key
    are spread by their content hash instead of piling into one partition. When `contested` is
    broadcast, only the second part is shuffled.
    """
    key, content = KEYS[table], [F.col(c) for c in _columns(annotated)]
    flagged = annotated.withColumn(KEY_HASH, F.xxhash64(key)).join(contested, KEY_HASH, "left")
    plain = F.col(CONTESTED).isNull() & F.col(REASON).isNull()
    order = Window.partitionBy(F.coalesce(F.col(key), F.xxhash64(*content))).orderBy(
        F.col(REASON).isNotNull(), F.xxhash64(*content), *content
    )
    duplicate = F.when(F.row_number().over(order) > 1, F.lit(f"duplicate_{key}"))
    ranked = flagged.where(~plain).withColumn(REASON, F.coalesce(F.col(REASON), duplicate))
    return flagged.where(plain).drop(KEY_HASH, CONTESTED), ranked.drop(KEY_HASH, CONTESTED)


def with_duplicates(annotated: DataFrame, table: str, contested: DataFrame | None = None) -> DataFrame:
    """The annotated rows with `duplicate_<key>` on every valid row of a key but the first (see
    `split_contested`); `contested` = `contested_keys(annotated, table)` when not given."""
    if contested is None:
        contested = contested_keys(annotated, table)
    plain, ranked = split_contested(annotated, table, contested)
    return plain.unionByName(ranked)


def transform_entities(
    raw: DataFrame, table: str, cfg: CleanConfig, schema: DatasetSchema, contested: DataFrame | None = None
) -> DataFrame:
    """raw.users or raw.pois -> annotated rows (see `annotate`), duplicates of the key rejected."""
    return with_duplicates(annotate(raw, table, cfg, schema), table, contested)


def check_references(
    raw: DataFrame, valid_users: DataFrame, valid_pois: DataFrame, cfg: CleanConfig, schema: DatasetSchema
) -> DataFrame:
    """raw.impressions -> annotated rows with the row rules and the references checked."""
    return with_references(annotate(raw, "impressions", cfg, schema), valid_users, valid_pois)


def valid_rows(annotated: DataFrame) -> DataFrame:
    return annotated.where(F.col(REASON).isNull()).select(*_columns(annotated))


def rejected_rows(annotated: DataFrame, table: str, input_version: int) -> DataFrame:
    day = F.col("dt") if table == "impressions" else F.lit(None).cast("date")
    return annotated.where(F.col(REASON).isNotNull()).select(
        F.lit(f"raw.{table}").alias("source_table"),
        F.col(REASON).alias("reason"),
        payload(annotated).alias("raw_payload"),
        day.alias("dt"),
        F.lit(input_version).cast("long").alias("input_version"),
    )


def reconcile(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Check input = valid + rejected for every table; return the totals."""
    for table, c in counts.items():
        if c["input_rows"] != c["valid_rows"] + c["rejected_rows"]:
            raise ReconciliationError(
                f"clean: raw.{table} has {c['input_rows']} input rows but {c['valid_rows']} valid"
                f" + {c['rejected_rows']} rejected = {c['valid_rows'] + c['rejected_rows']}"
            )
    return {
        key: sum(c[key] for c in counts.values()) for key in ("input_rows", "valid_rows", "rejected_rows")
    }


def run(spark: SparkSession, catalog: TableCatalog, cfg: CleanConfig, log=print) -> dict:
    """Validate the raw tables, overwrite the clean tables and the rejects, reconcile the counts."""
    input_versions = {f"raw.{t}": catalog.version(spark, f"raw.{t}") for t in TABLES}
    input_versions[SCHEMA_TABLE] = catalog.version(spark, SCHEMA_TABLE)
    schema = read_schema(spark, catalog, input_versions[SCHEMA_TABLE])
    raw = {t: catalog.read(spark, f"raw.{t}", version=input_versions[f"raw.{t}"]) for t in TABLES}
    output_versions: dict[str, int] = {}
    cached: list[DataFrame] = []  # the contested keys and their ranked rows, unpersisted at the end
    checked: dict[str, DataFrame] = {}
    ranked: dict[str, DataFrame] = {}
    valid_counts: dict[str, int] = {}
    try:
        for table in ("users", "pois"):
            annotated = annotate(raw[table], table, cfg, schema)
            checked[table], ranked[table] = _deduplicated(annotated, table, cfg, cached, log)
            valid_counts[table] = _write(
                spark, catalog, valid_rows(checked[table]), table, output_versions, log
            )
        valid_users = catalog.read(spark, "clean.users", version=output_versions["clean.users"])
        valid_pois = catalog.read(spark, "clean.pois", version=output_versions["clean.pois"])
        references = check_references(raw["impressions"], valid_users, valid_pois, cfg, schema)
        checked["impressions"], ranked["impressions"] = _deduplicated(
            references, "impressions", cfg, cached, log
        )
        valid_counts["impressions"] = _write(
            spark, catalog, valid_rows(checked["impressions"]), "impressions", output_versions, log
        )
        rejects = None
        for table in TABLES:  # every rejected row is among the ranked ones
            part = rejected_rows(ranked[table], table, input_versions[f"raw.{table}"])
            rejects = part if rejects is None else rejects.unionByName(part)
        output_versions[REJECTS] = catalog.write(rejects, REJECTS)
    finally:
        for df in cached:
            df.unpersist()
    by_reason = (
        catalog.read(spark, REJECTS, version=output_versions[REJECTS])
        .groupBy("source_table", "reason")
        .count()
        .collect()
    )
    reasons: dict[str, dict[str, int]] = {f"raw.{t}": {} for t in TABLES}
    for row in sorted(by_reason, key=lambda r: (r["source_table"], -r["count"], r["reason"])):
        reasons[row["source_table"]][row["reason"]] = int(row["count"])
    log(
        f"clean: wrote {REJECTS}: {sum(sum(r.values()) for r in reasons.values())} rows (version {output_versions[REJECTS]})"
    )
    counts = {
        t: {
            "input_rows": raw[t].count(),
            "valid_rows": valid_counts[t],
            "rejected_rows": sum(reasons[f"raw.{t}"].values()),
        }
        for t in TABLES
    }
    totals = reconcile(counts)
    log(
        f"clean: reconciled {totals['input_rows']} input rows = {totals['valid_rows']} valid + {totals['rejected_rows']} rejected"
    )
    return {
        **totals,
        "reject_rate": round(totals["rejected_rows"] / max(totals["input_rows"], 1), 6),
        "tables": counts,
        "rejects_by_reason": reasons,
        "input_versions": input_versions,
        "output_versions": output_versions,
    }


def _deduplicated(
    annotated: DataFrame, table: str, cfg: CleanConfig, cached: list[DataFrame], log
) -> tuple[DataFrame, DataFrame]:
    """`with_duplicates` for the job: the contested keys counted once (the key column read) and
    broadcast when at most `cfg.broadcast_contested_keys` (else the rows are shuffled to meet them:
    slower, same result), and the ranked rows (rejected or contested: few) kept, so the rejects
    read only them and the valid rows read the table once more."""
    contested = contested_keys(annotated, table).persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(contested)
    count = contested.count()
    log(f"clean: raw.{table}: {count} keys held by more than one row")
    if count <= cfg.broadcast_contested_keys:
        contested = F.broadcast(contested)
    plain, ranked = split_contested(annotated, table, contested)
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(ranked)
    return plain.unionByName(ranked), ranked


def _write(spark, catalog: TableCatalog, df: DataFrame, table: str, versions: dict, log) -> int:
    name = f"clean.{table}"
    versions[name] = catalog.write(df, name, partition_by=PARTITIONS[table])
    rows = catalog.last_commit_rows(spark, name)
    if rows is None:
        rows = catalog.read(spark, name, version=versions[name]).count()
    log(f"clean: wrote {name}: {rows} rows (version {versions[name]})")
    return rows
