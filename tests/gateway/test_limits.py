"""The failed-authentication budgets of the HTTP door stay bounded in memory."""

from __future__ import annotations

from gateway.limits import MAX_ADDRESSES, RateLimiter


def test_failed_authentication_buckets_stay_bounded() -> None:
    limiter = RateLimiter(1.0, 5, MAX_ADDRESSES)
    now = 1000.0
    for i in range(3 * MAX_ADDRESSES):
        limiter.take(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now)
    assert len(limiter.buckets) <= MAX_ADDRESSES
    # a drained address is still held back right after, whatever the churn
    for _ in range(6):
        limiter.take("192.0.2.1", now)
    assert limiter.wait("192.0.2.1", now) > 0
    assert limiter.wait("192.0.2.1", now + 10) == 0  # and refills
