"""SQL text as the access log keeps it: literals redacted, and the names a statement uses.

DuckDB's own tokenizer (``duckdb.tokenize``) finds the literals, so a string that looks
like SQL inside a quoted literal is still one literal. The log keeps the statement with
every string and number literal replaced by ``?`` (an analyst's ``WHERE phone = '+91…'``
leaves no phone number in the log) and the SHA-256 of the exact text (two logs can be
matched against a statement one holds, without the log holding it).
"""

from __future__ import annotations

import hashlib
import re

import duckdb

__all__ = ["identifiers", "redact", "sql_sha256"]

# DuckDB's tokenizer gives BYTE offsets into the UTF-8 text: every scan here is on bytes.
_NUMBER = re.compile(
    rb"0[xX][0-9a-fA-F_]+|0[bB][01_]+"
    rb"|[0-9][0-9_]*\.?[0-9_]*(?:[eE][+-]?[0-9]+)?|\.[0-9][0-9_]*(?:[eE][+-]?[0-9]+)?"
)
_STRING_PREFIX = re.compile(rb"[eEbBxX]?'")
_DOLLAR = re.compile(rb"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
_IDENTIFIER = re.compile(rb'"((?:[^"]|"")*)"|([A-Za-z_\x80-\xff][A-Za-z_0-9$\x80-\xff]*)')
_COMMENTS = re.compile(rb"--[^\n]*|/\*.*?(?:\*/|\Z)", re.DOTALL)


def _string_end(sql: bytes, start: int) -> int:
    """The end of the string literal at ``start`` ('...' with '' escapes, E'...' with
    backslash escapes, $tag$...$tag$)."""
    dollar = _DOLLAR.match(sql, start)
    if dollar is not None:
        close = sql.find(dollar.group(0), dollar.end())
        return len(sql) if close < 0 else close + len(dollar.group(0))
    prefix = _STRING_PREFIX.match(sql, start)
    pos = start + (len(prefix.group(0)) if prefix else 1)
    backslash = bool(prefix) and sql[start : start + 1] in (b"e", b"E")
    while pos < len(sql):
        ch = sql[pos : pos + 1]
        if backslash and ch == b"\\":
            pos += 2
            continue
        if ch == b"'":
            if sql[pos + 1 : pos + 2] == b"'":
                pos += 2
                continue
            return pos + 1
        pos += 1
    return len(sql)


def redact(sql: str) -> str:
    """``sql`` with every string and number literal replaced by ``?`` and comments removed
    (a comment can hold anything). Text DuckDB cannot tokenize is replaced whole."""
    try:
        tokens = duckdb.tokenize(sql)
    except Exception:
        return "<not tokenizable>"
    data = sql.encode()
    out: list[bytes] = []
    cursor = 0
    for index, (start, kind) in enumerate(tokens):
        if start < cursor:
            continue
        following = tokens[index + 1][0] if index + 1 < len(tokens) else len(data)
        if kind == duckdb.token_type.string_const:
            end = _string_end(data, start)
        elif kind == duckdb.token_type.numeric_const:
            match = _NUMBER.match(data, start)
            end = match.end() if match and match.end() > start else following
        elif kind == duckdb.token_type.comment:
            out.append(data[cursor:start])
            cursor = following
            continue
        else:
            continue
        out.append(data[cursor:start])
        out.append(b"?")
        cursor = max(end, start + 1)
    out.append(data[cursor:])
    # Literals are gone: what is left of a comment is a comment (and a quote left over, an
    # unterminated literal: everything from it on goes).
    text = _COMMENTS.sub(b"", b"".join(out))
    quote = text.find(b"'")
    redacted = text if quote < 0 else text[:quote] + b"?"
    return redacted.decode(errors="replace")


def sql_sha256(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def identifiers(sql: str) -> set[str]:
    """Every identifier the statement names, lower-cased (quoted ones unquoted): which
    datasets a session must make ready before it runs the statement. Over-inclusive on
    purpose (a column named like a dataset makes that dataset ready too)."""
    try:
        tokens = duckdb.tokenize(sql)
    except Exception:
        return set()
    data = sql.encode()
    names: set[str] = set()
    for start, kind in tokens:
        if kind not in (duckdb.token_type.identifier, duckdb.token_type.keyword):
            continue
        match = _IDENTIFIER.match(data, start)
        if match is None:
            continue
        quoted = match.group(1)
        name = quoted.replace(b'""', b'"') if quoted is not None else match.group(2)
        names.add(name.decode(errors="replace").lower())
    return names
