"""Reading mariadb-binlog's decoded row events, and building a flashback from them.

The sample is real `mariadb-binlog --base64-output=decode-rows -vv` output (MariaDB 10.11,
TZ=UTC): an INSERT, UPDATE and DELETE of one row of a table with every common column type, a
CREATE TABLE, and a two-row INSERT into another table.
"""

# ruff: noqa: E501  (the sample is verbatim tool output, one line per output line)
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from tbs_emergency.recovery.binlog import ColumnType, decode_value, parse_verbose, sql_literal
from tbs_emergency.recovery.flashback import TableInfo, build_plan, conflicts
from tbs_emergency.recovery.manifest import BinlogCoordinates

pytestmark = pytest.mark.unit

SAMPLE = (
    "DELIMITER /*!*/;",
    "# at 1953",
    "#261127  8:17:07 server id 1  end_log_pos 0 CRC32 0x59bf5cea \tStart: binlog v 4, server v 10.11.19-MariaDB-0+deb12u1-log created 261127  8:17:07",
    "# at 1953",
    "#261127  8:19:50 server id 1  end_log_pos 1995 CRC32 0x513470dc \tGTID 0-1-8 trans",
    "START TRANSACTION",
    "# at 1995",
    "# at 2335",
    "#261127  8:19:50 server id 1  end_log_pos 2335 CRC32 0xedbb5a70 \tAnnotate_rows:",
    "#Q> INSERT INTO ty VALUES (18446744073709551615, -5, 4294967295, 0.1, 0.1, -123.456789, 'it''s a \\\\x0a test', 'ab', CONCAT('line1', CHAR(10), 'line2\\ttab'), 0x00FF27415C, 0x0A0B, '2025-01-02 03:04:05.123456', '2025-01-02 03:04:05.125', '2025-01-02', '-12:34:56.78', 2025, 'y', 'a,c', b'10101', '{\"k\": [1,2]}', -128, NULL)",
    "#261127  8:19:50 server id 1  end_log_pos 2423 CRC32 0xbad7d573 \tTable_map: `d1`.`ty` mapped to number 22",
    "# at 2423",
    "#261127  8:19:50 server id 1  end_log_pos 2587 CRC32 0x76d5b7dd \tWrite_rows: table id 22 flags: STMT_END_F",
    "### INSERT INTO `d1`.`ty`",
    "### SET",
    "###   @1=-1 (18446744073709551615) /* LONGINT meta=0 nullable=0 is_null=0 */",
    "###   @2=-5 (4294967291) /* INT meta=0 nullable=1 is_null=0 */",
    "###   @3=-1 (4294967295) /* INT meta=0 nullable=1 is_null=0 */",
    "###   @4=0.1                  /* FLOAT meta=4 nullable=1 is_null=0 */",
    "###   @5=0.10000000000000000555 /* DOUBLE meta=8 nullable=1 is_null=0 */",
    "###   @6=-123.456789 /* DECIMAL(18,6) meta=4614 nullable=1 is_null=0 */",
    "###   @7='it's a \\x0a test' /* VARSTRING(160) meta=160 nullable=1 is_null=0 */",
    "###   @8='ab' /* STRING(20) meta=65044 nullable=1 is_null=0 */",
    "###   @9='line1\\x0aline2\\x09tab' /* BLOB/TEXT meta=2 nullable=1 is_null=0 */",
    "###   @10='\\x00ÿ'A\\' /* VARSTRING(20) meta=20 nullable=1 is_null=0 */",
    "###   @11='\\x0a\\x0b' /* BLOB/TEXT meta=2 nullable=1 is_null=0 */",
    "###   @12='2025-01-02 03:04:05.123456' /* DATETIME(6) meta=6 nullable=1 is_null=0 */",
    "###   @13=1735787045.125 /* TIMESTAMP(3) meta=3 nullable=1 is_null=0 */",
    "###   @14='2025:01:02' /* DATE meta=0 nullable=1 is_null=0 */",
    "###   @15='-12:34:56.78' /* TIME(2) meta=2 nullable=1 is_null=0 */",
    "###   @16=2025 /* YEAR meta=0 nullable=1 is_null=0 */",
    "###   @17=2 /* ENUM(1 byte) meta=63233 nullable=1 is_null=0 */",
    "###   @18=b'00000101' /* SET(1 bytes) meta=63489 nullable=1 is_null=0 */",
    "###   @19=b'10101' /* BIT(5) meta=5 nullable=1 is_null=0 */",
    "###   @20='{\"k\": [1,2]}' /* LONGBLOB/LONGTEXT meta=4 nullable=1 is_null=0 */",
    "###   @21=-128 (128) /* TINYINT meta=0 nullable=1 is_null=0 */",
    "###   @22=NULL /* INT meta=0 nullable=1 is_null=1 */",
    "# Number of rows: 1",
    "# at 2587",
    "#261127  8:19:50 server id 1  end_log_pos 2618 CRC32 0x987dfcee \tXid = 30",
    "COMMIT/*!*/;",
    "# at 2618",
    "#261127  8:19:50 server id 1  end_log_pos 2660 CRC32 0x43a72732 \tGTID 0-1-9 trans",
    "START TRANSACTION",
    "# at 2660",
    "# at 2751",
    "#261127  8:19:50 server id 1  end_log_pos 2751 CRC32 0x2ab04e4d \tAnnotate_rows:",
    "#Q> UPDATE ty SET s='Ã¼nÃ¯cÃ¸dÃ© â\x82¬', n=7 WHERE id=18446744073709551615",
    "#261127  8:19:50 server id 1  end_log_pos 2839 CRC32 0xc3b84f5a \tTable_map: `d1`.`ty` mapped to number 22",
    "# at 2839",
    "#261127  8:19:50 server id 1  end_log_pos 3138 CRC32 0xf385c9c0 \tUpdate_rows: table id 22 flags: STMT_END_F",
    "### UPDATE `d1`.`ty`",
    "### WHERE",
    "###   @1=-1 (18446744073709551615) /* LONGINT meta=0 nullable=0 is_null=0 */",
    "###   @2=-5 (4294967291) /* INT meta=0 nullable=1 is_null=0 */",
    "###   @3=-1 (4294967295) /* INT meta=0 nullable=1 is_null=0 */",
    "###   @4=0.1                  /* FLOAT meta=4 nullable=1 is_null=0 */",
    "###   @5=0.10000000000000000555 /* DOUBLE meta=8 nullable=1 is_null=0 */",
    "###   @6=-123.456789 /* DECIMAL(18,6) meta=4614 nullable=1 is_null=0 */",
    "###   @7='it's a \\x0a test' /* VARSTRING(160) meta=160 nullable=1 is_null=0 */",
    "###   @8='ab' /* STRING(20) meta=65044 nullable=1 is_null=0 */",
    "###   @9='line1\\x0aline2\\x09tab' /* BLOB/TEXT meta=2 nullable=1 is_null=0 */",
    "###   @10='\\x00ÿ'A\\' /* VARSTRING(20) meta=20 nullable=1 is_null=0 */",
    "###   @11='\\x0a\\x0b' /* BLOB/TEXT meta=2 nullable=1 is_null=0 */",
    "###   @12='2025-01-02 03:04:05.123456' /* DATETIME(6) meta=6 nullable=1 is_null=0 */",
    "###   @13=1735787045.125 /* TIMESTAMP(3) meta=3 nullable=1 is_null=0 */",
    "###   @14='2025:01:02' /* DATE meta=0 nullable=1 is_null=0 */",
    "###   @15='-12:34:56.78' /* TIME(2) meta=2 nullable=1 is_null=0 */",
    "###   @16=2025 /* YEAR meta=0 nullable=1 is_null=0 */",
    "###   @17=2 /* ENUM(1 byte) meta=63233 nullable=1 is_null=0 */",
    "###   @18=b'00000101' /* SET(1 bytes) meta=63489 nullable=1 is_null=0 */",
    "###   @19=b'10101' /* BIT(5) meta=5 nullable=1 is_null=0 */",
    "###   @20='{\"k\": [1,2]}' /* LONGBLOB/LONGTEXT meta=4 nullable=1 is_null=0 */",
    "###   @21=-128 (128) /* TINYINT meta=0 nullable=1 is_null=0 */",
    "###   @22=NULL /* INT meta=0 nullable=1 is_null=1 */",
    "### SET",
    "###   @1=-1 (18446744073709551615) /* LONGINT meta=0 nullable=0 is_null=0 */",
    "###   @2=-5 (4294967291) /* INT meta=0 nullable=1 is_null=0 */",
    "###   @3=-1 (4294967295) /* INT meta=0 nullable=1 is_null=0 */",
    "###   @4=0.1                  /* FLOAT meta=4 nullable=1 is_null=0 */",
    "###   @5=0.10000000000000000555 /* DOUBLE meta=8 nullable=1 is_null=0 */",
    "###   @6=-123.456789 /* DECIMAL(18,6) meta=4614 nullable=1 is_null=0 */",
    "###   @7='Ã¼nÃ¯cÃ¸dÃ© â\x82¬' /* VARSTRING(160) meta=160 nullable=1 is_null=0 */",
    "###   @8='ab' /* STRING(20) meta=65044 nullable=1 is_null=0 */",
    "###   @9='line1\\x0aline2\\x09tab' /* BLOB/TEXT meta=2 nullable=1 is_null=0 */",
    "###   @10='\\x00ÿ'A\\' /* VARSTRING(20) meta=20 nullable=1 is_null=0 */",
    "###   @11='\\x0a\\x0b' /* BLOB/TEXT meta=2 nullable=1 is_null=0 */",
    "###   @12='2025-01-02 03:04:05.123456' /* DATETIME(6) meta=6 nullable=1 is_null=0 */",
    "###   @13=1735787045.125 /* TIMESTAMP(3) meta=3 nullable=1 is_null=0 */",
    "###   @14='2025:01:02' /* DATE meta=0 nullable=1 is_null=0 */",
    "###   @15='-12:34:56.78' /* TIME(2) meta=2 nullable=1 is_null=0 */",
    "###   @16=2025 /* YEAR meta=0 nullable=1 is_null=0 */",
    "###   @17=2 /* ENUM(1 byte) meta=63233 nullable=1 is_null=0 */",
    "###   @18=b'00000101' /* SET(1 bytes) meta=63489 nullable=1 is_null=0 */",
    "###   @19=b'10101' /* BIT(5) meta=5 nullable=1 is_null=0 */",
    "###   @20='{\"k\": [1,2]}' /* LONGBLOB/LONGTEXT meta=4 nullable=1 is_null=0 */",
    "###   @21=-128 (128) /* TINYINT meta=0 nullable=1 is_null=0 */",
    "###   @22=7 /* INT meta=0 nullable=1 is_null=0 */",
    "# Number of rows: 1",
    "# at 3138",
    "#261127  8:19:50 server id 1  end_log_pos 3169 CRC32 0x9c01d3dd \tXid = 31",
    "COMMIT/*!*/;",
    "# at 3169",
    "#261127  8:19:50 server id 1  end_log_pos 3211 CRC32 0x14be7842 \tGTID 0-1-10 trans",
    "START TRANSACTION",
    "# at 3211",
    "# at 3248",
    "#261127  8:19:50 server id 1  end_log_pos 3248 CRC32 0x79076a10 \tAnnotate_rows:",
    "#Q> DELETE FROM ty",
    "#261127  8:19:50 server id 1  end_log_pos 3336 CRC32 0x0d2ff235 \tTable_map: `d1`.`ty` mapped to number 22",
    "# at 3336",
    "#261127  8:19:50 server id 1  end_log_pos 3503 CRC32 0x90e2963e \tDelete_rows: table id 22 flags: STMT_END_F",
    "### DELETE FROM `d1`.`ty`",
    "### WHERE",
    "###   @1=-1 (18446744073709551615) /* LONGINT meta=0 nullable=0 is_null=0 */",
    "###   @2=-5 (4294967291) /* INT meta=0 nullable=1 is_null=0 */",
    "###   @3=-1 (4294967295) /* INT meta=0 nullable=1 is_null=0 */",
    "###   @4=0.1                  /* FLOAT meta=4 nullable=1 is_null=0 */",
    "###   @5=0.10000000000000000555 /* DOUBLE meta=8 nullable=1 is_null=0 */",
    "###   @6=-123.456789 /* DECIMAL(18,6) meta=4614 nullable=1 is_null=0 */",
    "###   @7='Ã¼nÃ¯cÃ¸dÃ© â\x82¬' /* VARSTRING(160) meta=160 nullable=1 is_null=0 */",
    "###   @8='ab' /* STRING(20) meta=65044 nullable=1 is_null=0 */",
    "###   @9='line1\\x0aline2\\x09tab' /* BLOB/TEXT meta=2 nullable=1 is_null=0 */",
    "###   @10='\\x00ÿ'A\\' /* VARSTRING(20) meta=20 nullable=1 is_null=0 */",
    "###   @11='\\x0a\\x0b' /* BLOB/TEXT meta=2 nullable=1 is_null=0 */",
    "###   @12='2025-01-02 03:04:05.123456' /* DATETIME(6) meta=6 nullable=1 is_null=0 */",
    "###   @13=1735787045.125 /* TIMESTAMP(3) meta=3 nullable=1 is_null=0 */",
    "###   @14='2025:01:02' /* DATE meta=0 nullable=1 is_null=0 */",
    "###   @15='-12:34:56.78' /* TIME(2) meta=2 nullable=1 is_null=0 */",
    "###   @16=2025 /* YEAR meta=0 nullable=1 is_null=0 */",
    "###   @17=2 /* ENUM(1 byte) meta=63233 nullable=1 is_null=0 */",
    "###   @18=b'00000101' /* SET(1 bytes) meta=63489 nullable=1 is_null=0 */",
    "###   @19=b'10101' /* BIT(5) meta=5 nullable=1 is_null=0 */",
    "###   @20='{\"k\": [1,2]}' /* LONGBLOB/LONGTEXT meta=4 nullable=1 is_null=0 */",
    "###   @21=-128 (128) /* TINYINT meta=0 nullable=1 is_null=0 */",
    "###   @22=7 /* INT meta=0 nullable=1 is_null=0 */",
    "# Number of rows: 1",
    "# at 3503",
    "#261127  8:19:50 server id 1  end_log_pos 3534 CRC32 0x05f96845 \tXid = 32",
    "COMMIT/*!*/;",
    "# at 3534",
    "#261127  8:20:15 server id 1  end_log_pos 3576 CRC32 0x365e3b07 \tGTID 0-1-11 ddl",
    "# at 3576",
    "#261127  8:20:15 server id 1  end_log_pos 3700 CRC32 0xc76eae85 \tQuery\tthread_id=11\texec_time=0\terror_code=0\txid=36",
    "use `d1`/*!*/;",
    "SET TIMESTAMP=1795767615/*!*/;",
    "CREATE TABLE t2(id INT PRIMARY KEY, v VARCHAR(20))",
    "# at 3700",
    "#261127  8:20:15 server id 1  end_log_pos 3742 CRC32 0xd923b6dc \tGTID 0-1-12 trans",
    "START TRANSACTION",
    "# at 3742",
    "# at 3802",
    "#261127  8:20:15 server id 1  end_log_pos 3802 CRC32 0x679be48f \tAnnotate_rows:",
    "#Q> INSERT INTO t2 VALUES (1,'x'),(2,'y')",
    "#261127  8:20:15 server id 1  end_log_pos 3848 CRC32 0xe5810a8d \tTable_map: `d1`.`t2` mapped to number 23",
    "# at 3848",
    "#261127  8:20:15 server id 1  end_log_pos 3895 CRC32 0x907c0b45 \tWrite_rows: table id 23 flags: STMT_END_F",
    "### INSERT INTO `d1`.`t2`",
    "### SET",
    "###   @1=1 /* INT meta=0 nullable=0 is_null=0 */",
    "###   @2='x' /* VARSTRING(80) meta=80 nullable=1 is_null=0 */",
    "### INSERT INTO `d1`.`t2`",
    "### SET",
    "###   @1=2 /* INT meta=0 nullable=0 is_null=0 */",
    "###   @2='y' /* VARSTRING(80) meta=80 nullable=1 is_null=0 */",
    "# Number of rows: 2",
    "# at 3895",
    "#261127  8:20:15 server id 1  end_log_pos 3926 CRC32 0x09a7784c \tXid = 37",
    "COMMIT/*!*/;",
    "DELIMITER ;",
    "# End of log file",
    "ROLLBACK /* added by mysqlbinlog */;",
)

TY = TableInfo(
    database="d1",
    name="ty",
    columns=[
        ColumnType("id", "bigint", "bigint(20) unsigned"),
        ColumnType("i", "int", "int(11)"),
        ColumnType("u", "int", "int(10) unsigned"),
        ColumnType("f", "float", "float"),
        ColumnType("d", "double", "double"),
        ColumnType("dec1", "decimal", "decimal(18,6)"),
        ColumnType("s", "varchar", "varchar(40)"),
        ColumnType("c", "char", "char(5)"),
        ColumnType("tx", "text", "text"),
        ColumnType("b", "varbinary", "varbinary(20)", binary=True),
        ColumnType("bl", "blob", "blob", binary=True),
        ColumnType("dt", "datetime", "datetime(6)"),
        ColumnType("ts", "timestamp", "timestamp(3)"),
        ColumnType("da", "date", "date"),
        ColumnType("tm", "time", "time(2)"),
        ColumnType("y", "year", "year(4)"),
        ColumnType("e", "enum", "enum('x','y','z')"),
        ColumnType("st", "set", "set('a','b','c')"),
        ColumnType("bt", "bit", "bit(5)", binary=True),
        ColumnType("j", "longtext", "longtext"),
        ColumnType("ti", "tinyint", "tinyint(4)"),
        ColumnType("n", "int", "int(11)"),
    ],
    primary_key=["id"],
)
T2 = TableInfo(
    "d1",
    "t2",
    [ColumnType("id", "int", "int(11)"), ColumnType("v", "varchar", "varchar(20)")],
    ["id"],
)
MAX = 18446744073709551615


def test_row_events_statements_and_transactions_are_read() -> None:
    d = parse_verbose(SAMPLE, "mariadb-bin.000001")
    assert [(c.table, c.kind) for c in d.changes] == [
        ("ty", "insert"),
        ("ty", "update"),
        ("ty", "delete"),
        ("t2", "insert"),
        ("t2", "insert"),
    ]
    ins, upd, dele = d.changes[:3]
    assert ins.after is not None and ins.before is None and len(ins.after) == 22
    assert upd.before is not None and upd.after is not None
    assert dele.before is not None and dele.after is None
    assert upd.gtid == "0-1-9" and upd.at == datetime(2026, 11, 27, 8, 19, 50, tzinfo=UTC)
    assert ins.position == 2423 and ins.end_position == 2587
    assert [(s.database, s.sql) for s in d.statements] == [
        ("d1", "CREATE TABLE t2(id INT PRIMARY KEY, v VARCHAR(20))")
    ]
    assert d.transactions == 5


def test_values_decode_to_python_exactly_where_the_text_allows() -> None:
    d = parse_verbose(SAMPLE)
    row = {
        c.name: decode_value(v, c)
        for c, v in zip(TY.columns, d.changes[0].after or [], strict=True)
    }
    v = {k: x.value for k, x in row.items()}
    assert v["id"] == MAX and v["i"] == -5 and v["u"] == 4294967295 and v["ti"] == -128
    assert v["d"] == 0.1 and row["f"].approximate
    assert v["dec1"] == Decimal("-123.456789")
    assert v["s"] == "it's a \n test" and row["s"].ambiguous, "\\x0a: newline or literal text"
    assert v["c"] == "ab" and v["tx"] == "line1\nline2\ttab"
    assert v["b"] == b"\x00\xff'A\\" and v["bl"] == b"\n\x0b"
    assert v["dt"] == datetime(2025, 1, 2, 3, 4, 5, 123456)
    assert v["ts"] == datetime(2025, 1, 2, 3, 4, 5, 125000, tzinfo=UTC)
    assert v["da"] == date(2025, 1, 2)
    assert v["tm"] == -timedelta(hours=12, minutes=34, seconds=56.78)
    assert v["y"] == 2025 and v["e"] == "y" and v["st"] == "a,c" and v["bt"] == 21
    assert v["j"] == '{"k": [1,2]}' and v["n"] is None


def test_sql_literals() -> None:
    assert sql_literal(None) == "NULL"
    assert sql_literal("it's\n\\") == "'it\\'s\\n\\\\'"
    assert sql_literal(b"\x00\xff") == "X'00FF'"
    assert sql_literal(Decimal("1.50")) == "1.50"
    assert sql_literal(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "'2025-01-02 03:04:05'"
    assert sql_literal(-timedelta(hours=1, seconds=1.5)) == "'-01:00:01.500000'"


def test_the_flashback_plan_undoes_newest_first_with_column_names() -> None:
    d = parse_verbose(SAMPLE, "mariadb-bin.000001")
    until = BinlogCoordinates(file="mariadb-bin.000001", position=3926)
    since = datetime(2026, 11, 27, 8, 19, 0, tzinfo=UTC)
    plan = build_plan(
        "20261127T081950Z-aaaaaa", d, {"ty": TY}, "d1", since, "mariadb-bin.000001", until
    )
    assert plan.applicable
    assert plan.changes == {"ty": {"insert": 1, "update": 1, "delete": 1}}
    assert plan.row_delta == {"ty": 0}
    assert plan.touched_keys == {"ty": [[MAX]]}
    undo_delete, undo_update, undo_insert = plan.statements
    assert undo_delete.startswith("INSERT INTO `d1`.`ty` (`id`, `i`, `u`, `f`")
    assert "X'00FF27415C'" in undo_delete and "'y'" in undo_delete
    assert undo_update == (
        f"UPDATE `d1`.`ty` SET `s` = 'it\\'s a \\n test', `n` = NULL WHERE `id` = {MAX} LIMIT 1;"
    )
    assert undo_insert == f"DELETE FROM `d1`.`ty` WHERE `id` = {MAX} LIMIT 1;"
    assert any("FLOAT" in w for w in plan.warnings)
    assert any("escapes" in w for w in plan.warnings)
    assert "1 insert(s), 1 update(s), 1 delete(s)" in "\n".join(plan.describe())


def test_a_table_created_or_altered_in_the_window_is_refused() -> None:
    d = parse_verbose(SAMPLE)
    until = BinlogCoordinates(file="mariadb-bin.000001", position=3926)
    plan = build_plan(
        "20261127T081950Z-aaaaaa",
        d,
        {"t2": T2},
        "d1",
        datetime(2026, 11, 27, tzinfo=UTC),
        "mariadb-bin.000001",
        until,
    )
    assert not plan.applicable
    assert "CREATE" in plan.refusals[0] and "point-in-time recovery" in plan.refusals[0]


def test_later_changes_to_touched_rows_are_conflicts() -> None:
    d = parse_verbose(SAMPLE)
    until = BinlogCoordinates(file="mariadb-bin.000001", position=3926)
    plan = build_plan(
        "20261127T081950Z-aaaaaa",
        d,
        {"t2": T2, "ty": TY},
        "d1",
        datetime(2026, 11, 27, tzinfo=UTC),
        "mariadb-bin.000001",
        until,
    )
    later = parse_verbose(SAMPLE[SAMPLE.index("# at 3742") :])
    found = conflicts(later, "d1", {"t2": T2}, {"t2": [[1]]})
    assert found and "t2: row 1 was changed again (insert)" in found[0]
    assert conflicts(later, "d1", {"t2": T2}, {"t2": [[99]]}) == []
    assert sorted(plan.touched_keys["t2"]) == [[1], [2]]
