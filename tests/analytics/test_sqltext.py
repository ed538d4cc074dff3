"""The access log's SQL text: literals redacted (by DuckDB's own tokenizer, whose offsets
are bytes of the UTF-8 text), comments dropped, and the datasets a statement names."""

from __future__ import annotations

import pytest

from analytics.sqltext import identifiers, redact, sql_sha256


@pytest.mark.parametrize(
    ("sql", "logged"),
    [
        (
            "SELECT * FROM work_orders WHERE technician_phone = '+919812345678' AND n > 1.5e3",
            "SELECT * FROM work_orders WHERE technician_phone = ? AND n > ?",
        ),
        ("SELECT 'it''s +91 98', 42, .5, 0x1F FROM t", "SELECT ?, ?, ?, ? FROM t"),
        ("SELECT E'a\\'b +91', $$ +91 $$, $t$ x $t$ FROM t", "SELECT ?, ?, ? FROM t"),
        # Non-ASCII before a literal: the tokenizer's offsets are bytes (a bug the
        # isolation property found: 'é…' shifted every later token).
        ("SELECT 'é…' AS x, 'Priya Sarna' FROM \"Wörk\"", 'SELECT ? AS x, ? FROM "Wörk"'),
        ("SELECT 1 -- Priya +91\n, 2 /* Priya */ FROM t", "SELECT ? \n, ?  FROM t"),
        ("SELECT 'unterminated +91", "SELECT ?"),
        ("SELECT 1 /* unterminated +91", "SELECT ? "),
    ],
)
def test_literals_and_comments_leave_no_trace(sql: str, logged: str) -> None:
    assert redact(sql) == logged
    for secret in ("+91", "Priya", "é…"):
        assert secret not in redact(sql)


def test_the_datasets_a_statement_names_are_found_after_any_literal() -> None:
    sql = "SELECT count(*) FROM \"work_orders\" w JOIN devices USING (device_id) WHERE x = '…'"
    assert {"work_orders", "devices", "device_id"} <= identifiers(sql)
    assert "…" not in "".join(identifiers(sql))
    assert sql_sha256("SELECT 1") == sql_sha256("SELECT 1") != sql_sha256("SELECT 2")
