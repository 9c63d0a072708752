"""Ingest sources beyond plain CSV: CSV options (quotes, escapes, line breaks, separators,
encodings, header-less files, null text), Delta folders, Parquet and tables by name; empty,
row-less and binary sources."""

import dataclasses
import gzip

import pytest
import yaml
from pyspark.sql import functions as F

from etl.ingest import job
from etl.ingest.mapping import CsvOptions, MappingError, SourceTable, load_mapping
from jobs.cli import main
from tests.etl.test_ingest import BYO, EVENT_COLUMNS, EXAMPLE_EVENTS, POI_COLUMNS, RAW, copy_example, table

IMPRESSION_COLUMNS = [
    "log_id", "session", "event_time", "uid", "shop_id", "rank", "city", "area_type", "place", "weather",
    "temp", "platform", "click", "order",
]  # fmt: skip

# RFC 4180 quoting: commas, doubled quotes and line breaks inside quoted values; a backslash is text
POIS_CSV = (
    "shop_id,shop_name,shop_city,area,addr,lat,lng,category,dishes,intro,labels,price,score,hours,sales\n"
    '501,"Granny Zhao\'s ""Dan Dan""",Chengdu,Wuhou,"12 Renmin Road, Wuhou, Chengdu",30.57,104.07,'
    'Noodles & rice,"dan dan noodles, spicy wontons in chili oil","Made fresh to order.\n'
    'Ask for ""extra spicy"", it is free.",,2,4.6,10:00-22:00,830\n'
    '502,Crayfish No. 8,Wuhan,Hankou,"8 Jiefang Road, Hankou, Wuhan",30.59,114.31,Street food,'
    '"spicy crayfish, garlic crayfish","Open late,\nfor night owls.\r\nCash or card.",discount,3,4.2,'
    "17:00-03:00,410\n"
    '503,Lucky Ice Corner,Wuhan,Wuchang,"3 Heping Road\\2F, Wuchang, Wuhan",30.55,114.3,Drinks & desserts,'
    '"mango snow ice, red bean shaved ice",Served chilled.,new shop,1,4.4,11:00-23:00,150\n'
)
USERS_LATIN1 = (
    "uid;nick;sex;age;city;platform\n"
    "1;Zoé Müller;female;25-34;Chengdu;ios\n"
    "2;José Ñúñez, Jr.;male;18-24;Chengdu;android\n"
    "3;Françoise;unknown;35-44;Wuhan;mini_program\n"
)
# no header row; "-" is the export's null (the temperature of event 9006)
IMPRESSIONS_HEADERLESS = (BYO / "impressions.csv").read_text().split("\n", 1)[1].replace(",20.0,", ",-,")


def edit_mapping(folder, **tables):
    """Replace source tables (users / pois / impressions) of the copied example mapping."""
    path = folder / "mapping.yaml"
    data = yaml.safe_load(path.read_text())
    for name, changes in tables.items():
        data[name] = {**data[name], **changes}
        data[name] = {k: v for k, v in data[name].items() if v is not None}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def test_quoted_multiline_latin1_and_headerless_csv_through_etl_ingest(spark, lakehouse, catalog, tmp_path):
    folder = copy_example(tmp_path)
    (folder / "pois.csv").write_text(POIS_CSV)
    (folder / "users.csv").write_bytes(USERS_LATIN1.encode("latin-1"))
    (folder / "impressions.csv").write_text(IMPRESSIONS_HEADERLESS)
    path = edit_mapping(
        folder,
        pois={"csv": {"multi_line": True, "escape": '"'}},
        users={"csv": {"sep": ";", "encoding": "latin-1"}},
        impressions={"csv": {"header": False, "names": IMPRESSION_COLUMNS, "null_value": "-"}},
    )

    assert main(["etl", "ingest", "--lakehouse", str(lakehouse), "--set", f"mapping={path}"]) == 0

    assert table(spark, catalog, "raw.pois", "poi_id", POI_COLUMNS) == [
        (
            501, "Granny Zhao's \"Dan Dan\"", "Chengdu", "Wuhou", "12 Renmin Road, Wuhou, Chengdu", 30.57, 104.07,
            "Noodles & rice", "dan dan noodles, spicy wontons in chili oil",
            'Made fresh to order.\nAsk for "extra spicy", it is free.', None, 2, 4.6, "10:00-22:00", 830,
        ),
        (
            502, "Crayfish No. 8", "Wuhan", "Hankou", "8 Jiefang Road, Hankou, Wuhan", 30.59, 114.31,
            "Street food", "spicy crayfish, garlic crayfish", "Open late,\nfor night owls.\r\nCash or card.",
            "discount", 3, 4.2, "17:00-03:00", 410,
        ),
        (
            503, "Lucky Ice Corner", "Wuhan", "Wuchang", "3 Heping Road\\2F, Wuchang, Wuhan", 30.55, 114.3,
            "Drinks & desserts", "mango snow ice, red bean shaved ice", "Served chilled.", "new shop", 1, 4.4,
            "11:00-23:00", 150,
        ),
    ]  # fmt: skip
    user_columns = ["user_id", "nickname", "gender", "age_band", "home_city", "device"]
    assert table(spark, catalog, "raw.users", "user_id", user_columns) == [
        (1, "Zoé Müller", "female", "25-34", "Chengdu", "ios"),
        (2, "José Ñúñez, Jr.", "male", "18-24", "Chengdu", "android"),
        (3, "Françoise", "unknown", "35-44", "Wuhan", "mini_program"),
    ]
    # the example's impressions, but the header-less file's "-" temperature is null
    last = EXAMPLE_EVENTS[-1]
    expected = [*EXAMPLE_EVENTS[:-1], (*last[:10], None, *last[11:])]
    assert table(spark, catalog, "raw.impressions", "event_id", EVENT_COLUMNS) == expected

    # the same files with Spark's default CSV options are misread: proof that the options matter
    mapping = load_mapping(path)
    plain = {name: dataclasses.replace(mapping.table(name), csv=CsvOptions()) for name in ("pois", "users")}
    assert job.read_source(spark, plain["pois"], "pois").count() != 3
    latin1 = dataclasses.replace(mapping.users, csv=CsvOptions(encoding="ISO-8859-1"))
    assert job.read_source(spark, latin1, "users").columns == ["uid;nick;sex;age;city;platform"]
    with pytest.raises(job.IngestError) as err:  # and Latin-1 is not UTF-8
        job.read_source(spark, plain["users"], "users")
    assert str(err.value) == (
        f"ingest: users source {folder / 'users.csv'} is not a CSV file in UTF-8"
        " (if it is one, set users.csv.encoding)"
    )


@pytest.fixture()
def users_table(spark, tmp_path):
    """raw-like users as a metastore table (external: its files live in tmp_path)."""
    name = "byo_users_source"
    users = spark.createDataFrame(
        [(1, "HappyPanda7", "female"), (2, "SleepyFox12", "male")], "uid long, nick string, sex string"
    )
    users.write.format("delta").option("path", str(tmp_path / "users_table")).saveAsTable(name)
    yield name
    spark.sql(f"DROP TABLE IF EXISTS {name}")


def test_delta_parquet_and_table_sources(spark, catalog, tmp_path, users_table):
    folder = copy_example(tmp_path)
    pois = spark.read.option("header", True).csv(str(BYO / "pois.csv"))
    pois.withColumns(
        {"shop_id": F.col("shop_id").cast("long"), "lat": F.col("lat").cast("double")}
    ).write.format("delta").save(str(folder / "pois_delta"))
    impressions = spark.read.option("header", True).csv(str(BYO / "impressions.csv"))
    impressions.withColumn("event_time", F.col("event_time").cast("timestamp")).write.parquet(
        str(folder / "impressions_parquet")
    )
    path = edit_mapping(
        folder,
        users={
            "path": users_table,
            "format": "table",
            "columns": {"uid": "user_id", "nick": "nickname", "sex": "gender"},
            "defaults": {"age_band": "25-34", "home_city": "Chengdu", "device": "ios"},  # not in the table
        },
        pois={"path": "pois_delta", "format": "delta"},
        impressions={"path": "impressions_parquet", "format": "parquet"},
    )

    figures = job.run(spark, catalog, job.IngestConfig(mapping=str(path)), log=lambda _: None)

    assert {k: figures[k] for k in ("users", "pois", "impressions")} == {
        "users": 2,
        "pois": 3,
        "impressions": 6,
    }
    assert table(
        spark, catalog, "raw.users", "user_id", ["user_id", "nickname", "gender", "age_band", "device"]
    ) == [
        (1, "HappyPanda7", "female", "25-34", "ios"),
        (2, "SleepyFox12", "male", "25-34", "ios"),
    ]
    pois_rows = catalog.read(spark, "raw.pois").select(
        "poi_id", "name", "latitude", "rating", "monthly_sales"
    )
    assert sorted(tuple(r) for r in pois_rows.collect()) == [
        (501, "Granny Zhao's Dan Dan", 30.57, 4.6, 830),
        (502, "Crayfish No. 8", 30.59, 4.2, 410),
        (503, "Lucky Ice Corner", 30.55, 4.4, 150),
    ]
    assert [r[:5] for r in table(spark, catalog, "raw.impressions", "event_id", EVENT_COLUMNS)] == [
        (9001, 70, "2026-04-06 11:45:10", 1, 501),
        (9002, 71, "2026-04-06 19:02:33", 2, 501),
        (9003, 72, "2026-04-07 22:30:00", 3, 502),
        (9004, 72, "2026-04-07 22:30:00", 3, 503),
        (9005, 73, "2026-04-07 23:10:05", 4, 502),
        (9006, 74, "2026-04-08 12:00:00", 1, 503),
    ]
    sources = catalog.read(spark, "raw.ingest_mapping").first()["sources"]
    assert sources == {
        "users": users_table,  # a table name, not resolved against the mapping folder
        "pois": str(folder / "pois_delta"),
        "impressions": str(folder / "impressions_parquet"),
    }


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"users": {"path": "no_such_table", "format": "table"}},
            "ingest: table no_such_table does not exist",
        ),
        ({"pois": {"path": "pois.csv", "format": "delta"}}, "ingest: {folder}/pois.csv is not a Delta table"),
        (
            {"users": {"csv": {"header": False, "names": ["uid", "nick", "sex"]}}},
            "ingest: {folder}/users.csv: the file has 6 column(s), csv.names lists 3 (uid, nick, sex)",
        ),
        (
            {"users": {"csv": {"encoding": "cp1252"}}},
            "ingest: {folder}/users.csv: csv.encoding cp1252 needs the Spark setting"
            " spark.sql.legacy.javaCharsets=true (without it Spark reads CSV only in UTF-8,",
        ),
    ],
)
def test_unreadable_source_is_one_line_naming_it_and_nothing_is_written(
    spark, catalog, tmp_path, source, message
):
    folder = copy_example(tmp_path)
    path = edit_mapping(folder, **source)
    before = spark.conf.get(job.JAVA_CHARSETS, "false")
    spark.conf.set(job.JAVA_CHARSETS, "false")  # as on a cluster that has not turned it on
    try:
        with pytest.raises(job.IngestError) as err:
            job.run(spark, catalog, job.IngestConfig(mapping=str(path)), log=lambda _: None)
    finally:
        spark.conf.set(job.JAVA_CHARSETS, before)
    assert str(err.value).startswith(message.format(folder=folder))
    assert "\n" not in str(err.value)
    assert not any(catalog.exists(spark, name) for name in RAW)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"impressions": {"csv": {"multiline": True}}},
            "unknown key impressions.csv.multiline (known: encoding,",
        ),
        (
            {"impressions": {"csv": {"multi_line": "yes please"}}},
            "impressions.csv.multi_line must be true or false",
        ),
        ({"users": {"csv": {"encoding": "latin-42"}}}, "key users.csv.encoding: unknown encoding 'latin-42'"),
        ({"users": {"csv": {"sep": ";;"}}}, "key users.csv.sep must be one character, got ';;'"),
        ({"users": {"delimiter": "\t\t"}}, "key users.delimiter must be one character"),
        (
            {"users": {"delimiter": ";", "csv": {"sep": ";"}}},
            "key users.delimiter is the deprecated name of users.csv.sep: give only users.csv.sep",
        ),
        (
            {"users": {"csv": {"quote": "''"}}},
            "key users.csv.quote must be one character (or '' for no quoting)",
        ),
        ({"users": {"csv": {"escape": ""}}}, "key users.csv.escape must be one character"),
        ({"users": {"csv": {"null_value": 0}}}, "key users.csv.null_value must be a string"),
        (
            {"impressions": {"allow_empty": "yes"}},
            "key impressions.allow_empty must be true or false, got 'yes'",
        ),
        (
            {"users": {"format": "parquet", "csv": {"sep": ";"}}},
            "key users.csv: CSV options need format csv, not parquet",
        ),
        (
            {"users": {"format": "delta", "delimiter": ";"}},
            "key users.delimiter: CSV options need format csv",
        ),
        ({"users": {"csv": ["sep", ";"]}}, "key users.csv must be a mapping of CSV options"),
        (
            {"users": {"csv": {"header": False}}},
            "key users.csv.names is required when users.csv.header is false",
        ),
        ({"users": {"csv": {"names": ["uid"]}}}, "key users.csv.names: only for a file without a header row"),
        (
            {"users": {"csv": {"header": False, "names": ["uid", "uid"]}}},
            "users.csv.names: uid is named twice",
        ),
        ({"users": {"format": "table", "path": ""}}, "key users.path must be a table name"),
        (
            {"users": {"format": "excel"}},
            "users.format must be one of csv, parquet, delta, table, got 'excel'",
        ),
    ],
)
def test_bad_source_options_name_file_and_key(tmp_path, source, message):
    folder = copy_example(tmp_path)
    path = edit_mapping(folder, **source)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_csv_options_become_spark_reader_options(tmp_path):
    folder = copy_example(tmp_path)
    path = edit_mapping(
        folder,
        users={"csv": {"encoding": "latin1"}},
        pois={"csv": {"sep": "\t", "quote": "", "escape": '"', "multi_line": True, "encoding": "cp1252"}},
        impressions={"csv": {"header": False, "names": IMPRESSION_COLUMNS, "null_value": "NULL"}},
    )
    mapping = load_mapping(path)
    assert mapping.users.csv == CsvOptions(encoding="ISO-8859-1")  # Spark's name: Spark 4 refuses "latin1"
    assert job.csv_reader_options(mapping.pois.csv) == {
        "sep": "\t", "quote": "", "escape": '"', "multiLine": "true", "encoding": "cp1252", "header": "true",
        "nullValue": "", "inferSchema": "false",
    }  # fmt: skip
    assert job.csv_reader_options(mapping.impressions.csv) == {
        "sep": ",", "quote": '"', "escape": "\\", "multiLine": "false", "encoding": "UTF-8", "header": "false",
        "nullValue": "NULL", "inferSchema": "false",
    }  # fmt: skip
    assert mapping.impressions.csv.names == tuple(IMPRESSION_COLUMNS)


def test_delimiter_is_a_deprecated_alias_of_csv_sep(tmp_path):
    folder = copy_example(tmp_path)
    path = edit_mapping(folder, users={"delimiter": ";"})
    with pytest.warns(FutureWarning, match=f"ingest mapping {path}: key users.delimiter is deprecated"):
        mapping = load_mapping(path)
    assert mapping.users.csv == CsvOptions(sep=";")


@pytest.fixture()
def java_charsets(spark):
    """The session setting that lets Spark 4 read CSV in any JDK charset (restored afterwards)."""
    before = spark.conf.get(job.JAVA_CHARSETS, "false")
    spark.conf.set(job.JAVA_CHARSETS, "true")
    yield
    spark.conf.set(job.JAVA_CHARSETS, before)


@pytest.mark.usefixtures("java_charsets")
def test_jdk_charset_with_the_legacy_setting(spark, tmp_path):
    folder = copy_example(tmp_path)
    (folder / "users.csv").write_bytes("uid,nick\n1,Zoé €uro\n".encode("cp1252"))
    path = edit_mapping(folder, users={"csv": {"encoding": "cp1252"}})
    rows = job.read_source(spark, load_mapping(path).users, "users").collect()
    assert [tuple(r) for r in rows] == [("1", "Zoé €uro")]
    unknown = dataclasses.replace(load_mapping(path).users, csv=CsvOptions(encoding="mac-roman"))
    with pytest.raises(job.IngestError, match="csv.encoding mac-roman is not a charset that Java knows"):
        job.read_source(spark, unknown, "users")


HEADER = (BYO / "impressions.csv").read_text().split("\n", 1)[0] + "\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
RANDOM = bytes(range(256)) * 16  # NUL bytes, and not UTF-8


def test_header_only_csv_is_refused_unless_allow_empty(spark, lakehouse, catalog, tmp_path, capsys):
    folder = copy_example(tmp_path)
    (folder / "impressions.csv").write_text(HEADER)
    path = folder / "mapping.yaml"

    assert main(["etl", "ingest", "--lakehouse", str(lakehouse), "--set", f"mapping={path}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (  # after MLflow's own log lines
        f"larr etl ingest: error: ingest: impressions source {folder / 'impressions.csv'} has a header but no rows"
        " (set impressions.allow_empty: true to ingest it empty)"
    )
    assert not any(catalog.exists(spark, name) for name in RAW)

    edit_mapping(folder, impressions={"allow_empty": True})
    figures = job.run(spark, catalog, job.IngestConfig(mapping=str(path)), log=lambda _: None)
    assert (figures["users"], figures["pois"], figures["impressions"]) == (4, 3, 0)
    assert catalog.read(spark, "raw.impressions").isEmpty()


@pytest.mark.parametrize(
    ("files", "source", "message"),
    [
        ({"impressions.csv": b""}, {}, "{folder}/impressions.csv is an empty file"),
        ({"imp/_SUCCESS": b""}, {"path": "imp"}, "{folder}/imp is an empty folder"),
        ({"impressions.csv": RANDOM}, {}, "{folder}/impressions.csv is not a CSV file"),
        ({"impressions.csv": PNG}, {}, "{folder}/impressions.csv is not a CSV file"),
        (
            {"impressions.csv": gzip.compress(HEADER.encode(), mtime=0)},  # gzip, but not named .gz
            {},
            "{folder}/impressions.csv is not a CSV file",
        ),
        (
            {"imp/part-0.csv": HEADER.encode(), "imp/part-1.csv": PNG},
            {"path": "imp"},
            "{folder}/imp/part-1.csv is not a CSV file",
        ),
        (
            {"imp.parquet": RANDOM},
            {"path": "imp.parquet", "format": "parquet"},
            "{folder}/imp.parquet is not a Parquet file",
        ),
        ({}, {"format": "parquet"}, "{folder}/impressions.csv is not a Parquet file"),
        (
            {"imp/part-0.parquet": b"", "imp/part-1.parquet": b"PAR1"},  # Spark fails on an empty Parquet
            {"path": "imp", "format": "parquet"},
            "{folder}/imp/part-0.parquet is an empty file",
        ),
    ],
)
def test_empty_or_binary_file_is_one_line_naming_it_and_nothing_is_written(
    spark, catalog, tmp_path, files, source, message
):
    folder = copy_example(tmp_path)
    for name, data in files.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    path = edit_mapping(folder, impressions=source)
    with pytest.raises(job.IngestError) as err:
        job.run(spark, catalog, job.IngestConfig(mapping=str(path)), log=lambda _: None)
    assert str(err.value) == "ingest: impressions source " + message.format(folder=folder)
    assert not any(catalog.exists(spark, name) for name in RAW)


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"", "csv", "{url} is an empty file"),
        (RANDOM, "csv", "{url} is not a CSV file"),
        # only the header is seen, and PNG's holds no NUL: it may be text in another encoding
        (PNG, "csv", "{url} is not a CSV file in UTF-8 (if it is one, set impressions.csv.encoding)"),
        (RANDOM, "parquet", "file:{file} is not a Parquet file"),
    ],
)
def test_remote_empty_or_binary_file_is_named_without_its_bytes(spark, tmp_path, data, fmt, message):
    """A URL is not sniffed on the driver: Spark reads it, and what it read is checked instead."""
    file = tmp_path / f"imp.{fmt}"
    file.write_bytes(data)
    source = SourceTable(file.as_uri(), fmt)
    with pytest.raises(job.IngestError) as err:
        job.read_source(spark, source, "impressions")
    assert str(err.value) == "ingest: impressions source " + message.format(url=file.as_uri(), file=file)
