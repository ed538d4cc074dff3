"""BodyReader: every byte of a gzip body is inflated (all members) or the body is refused."""

from __future__ import annotations

import gzip

import pytest

from gateway.body import BodyError, BodyReader, BodyRules

RULES = BodyRules(
    max_body_bytes=1 << 20, max_decompressed_bytes=1 << 20, max_depth=16, max_readings=100
)


def _read(body: bytes, step: int, rules: BodyRules = RULES) -> bytes:
    reader = BodyReader(rules, gzip=True)
    for i in range(0, len(body), step):
        reader.feed(body[i : i + step])
    return reader.finish()


def test_every_member_is_inflated_wherever_the_chunks_split() -> None:
    texts = [b'{"seq": 1}\n', b"", b'{"seq": 2}\n{"seq": 3}\n', b'{"seq": 4}\n' * 300]
    body = b"".join(gzip.compress(t) for t in texts)  # what `cat a.gz b.gz ...` gives
    want = b"".join(texts)
    assert gzip.decompress(body) == want  # the reference reader agrees on the bytes
    for step in (1, 2, 3, 7, 10, 19, 64, 1000, len(body)):
        assert _read(body, step) == want, step


@pytest.mark.parametrize(
    ("tail", "detail"),
    [
        (b"garbage", "after gzip member 1"),
        (b"\x00\x00\x00\x00", "after gzip member 1"),  # zero padding is not a member either
        # mtime=0: the same bytes in every process (pytest-xdist's workers must collect the
        # same test ids, and a gzip header carries the time it was made)
        (gzip.compress(b"more", mtime=0)[:12], "member 2 is truncated"),
        (gzip.compress(b"more", mtime=0) + b"x", "member 3 is truncated"),  # a header's first byte
        (gzip.compress(b"more", mtime=0) + b"not gzip at all", "after gzip member 2"),
    ],
)
def test_bytes_after_a_member_that_are_no_member_are_refused(tail: bytes, detail: str) -> None:
    body = gzip.compress(b'{"seq": 1}') + tail
    for step in (len(body), 5, 1):
        with pytest.raises(BodyError) as caught:
            _read(body, step)
        assert (caught.value.status, caught.value.reason) == (400, "bad_gzip")
        assert detail in caught.value.detail


def test_the_decompressed_limit_counts_every_member() -> None:
    rules = BodyRules(
        max_body_bytes=1 << 20, max_decompressed_bytes=1000, max_depth=16, max_readings=100
    )
    member = gzip.compress(b" " * 600)
    assert _read(member, 64, rules) == b" " * 600
    with pytest.raises(BodyError) as caught:
        _read(member + member, 64, rules)
    assert (caught.value.status, caught.value.reason) == (413, "body_too_large")
