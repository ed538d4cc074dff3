"""Token buckets of the HTTP door, bounded in memory: requests per device (after
authentication) and failed authentications per client address (checked before
authentication, so a guessing address is refused before its token is looked at).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MAX_ADDRESSES", "RateLimiter"]

MAX_ADDRESSES = 65_536  # client addresses with a failed-authentication budget in memory


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class RateLimiter:
    """A token bucket per key (events per second, with a burst), at most ``max_keys``."""

    rate_per_s: float
    burst: int
    max_keys: int | None = None
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(
            float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate_per_s
        )
        bucket.stamp = now

    def take(self, key: str, now: float) -> float:
        """0 if allowed (a token taken), else seconds until the next token."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if self.max_keys is not None and len(self.buckets) >= self.max_keys:
                self._prune(now)
            bucket = self.buckets[key] = _Bucket(float(self.burst), now)
        self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token (0: it has one now); takes nothing."""
        bucket = self.buckets.get(key)
        if bucket is None:
            return 0.0
        self._refill(bucket, now)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate_per_s

    def _prune(self, now: float) -> None:
        """Forget full buckets (they hold nothing); then, if need be, the oldest keys."""
        full = float(self.burst)
        for key, bucket in list(self.buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * self.rate_per_s >= full:
                del self.buckets[key]
        limit = self.max_keys or 0
        if len(self.buckets) > limit * 3 // 4:
            for key in list(self.buckets)[: len(self.buckets) - limit * 3 // 4]:
                del self.buckets[key]
