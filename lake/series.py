"""The numbering of a device's readings: where one *epoch* of its ``seq`` ends and the next
begins (a restart). Deduplication (``transforms.series``) and the count of sequence gaps
(``analytics.gaps``) cut a device's readings by this one rule, so a gap and a duplicate mean
the same thing on both sides."""

from __future__ import annotations

import polars as pl

__all__ = ["SAME_DEVICE_AS_PREVIOUS", "SEQ_RESTART_FALL", "SEQ_RESTART_FIRST", "epoch_starts"]

# A seq that falls by more than this share of its predecessor is a device restart, not a
# reading with a wrong clock (the ends of a series have only one neighbour to judge by).
SEQ_RESTART_FALL = 0.10
# A seq this low, again, later: the device started counting afresh (its first messages
# after a boot), even when the seq before it was as low (a crash loop).
SEQ_RESTART_FIRST = 1
# In a frame sorted by device: whether a row's previous neighbour is the same device's
# reading (a shift guarded by it is ``shift().over("device_id")`` without grouping).
SAME_DEVICE_AS_PREVIOUS = pl.col("device_id") == pl.col("device_id").shift(1)


def epoch_starts(seq: str = "seq", boot: str = "boot", ts: str = "ts") -> pl.Expr:
    """In a frame sorted by device, event time and seq: whether a reading starts a numbering
    of its device (its first reading, a boot other than the reading's before, or, when
    neither sent a boot, a seq that falls by more than SEQ_RESTART_FALL, or a seq that
    starts again from the bottom (at most SEQ_RESTART_FIRST, later than a reading whose seq
    is not lower: a device in a crash loop). ``cum_sum`` of it numbers the epochs."""
    prev_seq = pl.col(seq).shift(1)
    prev_boot = pl.col(boot).shift(1)
    same = SAME_DEVICE_AS_PREVIOUS.fill_null(False)
    other_boot = pl.col(boot).ne_missing(prev_boot)
    fell = pl.col(seq) < prev_seq * (1 - SEQ_RESTART_FALL)
    again = (
        (pl.col(seq) <= SEQ_RESTART_FIRST)
        & (pl.col(seq) <= prev_seq)
        & (pl.col(ts) > pl.col(ts).shift(1))  # a redelivery has the same event time
    )
    no_boot = pl.col(boot).is_null() & prev_boot.is_null()
    return ~same | other_boot | (no_boot & (fell | again)).fill_null(False)
