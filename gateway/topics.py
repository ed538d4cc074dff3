"""What the gateway lands as a message's topic and identity, with bounded memory.

A Mosquitto ACL ``+`` segment holds any text (up to the packet limit), so a device could
publish on ``emaas/v1/<60 KB>/<branch>/<its id>/telemetry``: the topic was landed and
archived with every message, and the topic cache kept it. Here a topic is landed as
received only when it is at most ``max_topic_bytes`` long and every variable segment
(each ``+`` and the ``{device}`` of its pattern) has the shape of an id (letters, digits,
``. _ : -``, at most 128 characters). Any other topic is landed under a *marker*,
``!bad-topic/<reason>/<length in bytes>/<sha256 prefix>``, with the same identity: no
decoder knows the marker, so the pipeline quarantines the message (MALFORMED_PAYLOAD, "no
decoder for this topic") in the authenticated device's tenant. Nothing the broker
acknowledged is dropped, and nothing long is kept.

``TopicCache`` remembers the answer per good topic in a dict bounded by bytes (a rough
per-entry cost including the key); a bad topic is never kept. Each entry also counts the
messages seen on it, so floods can be reported per device without a second lookup per
message.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Sequence
from typing import Any

from gateway.config import TopicPattern

__all__ = ["BAD_TOPIC_PREFIX", "TopicCache", "classify_topic"]

BAD_TOPIC_PREFIX = "!bad-topic/"
# An id segment: what provisioning accepts as a device account, and wider than the
# pipeline's client, branch and device ids.
_ID_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# dict slot, str header, list of three, the int: a rough cost of one entry beyond its key
_ENTRY_OVERHEAD_BYTES = 200


def classify_topic(
    topic: str, patterns: Sequence[TopicPattern], max_topic_bytes: int
) -> tuple[str, str, str | None]:
    """``(landed topic, identity, reason)``; ``reason`` is None for a good topic (landed as
    received), else ``too_long`` or ``bad_segment`` (landed under a marker)."""
    size = len(topic.encode("utf-8", "surrogatepass"))
    identity = ""
    reason: str | None = None
    for pattern in patterns:
        device = pattern.identity(topic)
        if device is None:
            continue
        identity = device
        if size <= max_topic_bytes:
            parts = topic.split("/")
            wanted = pattern.subscription.split("/")
            for got, want in zip(parts, wanted, strict=True):
                if want == "+" and not _ID_SEGMENT.fullmatch(got):
                    reason = "bad_segment"
                    break
        break
    if size > max_topic_bytes:
        reason = "too_long"
    if identity and not _ID_SEGMENT.fullmatch(identity):
        identity = ""  # the ACL pins it to an account name; anything else is not an identity
        reason = reason or "bad_segment"
    if reason is None:
        return topic, identity, None
    digest = hashlib.sha256(topic.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{BAD_TOPIC_PREFIX}{reason}/{size}/{digest}", identity, reason


class TopicCache:
    """topic -> ``[landed topic, identity, messages]``, bounded by ``max_bytes``.

    Used from one thread (paho's network thread of one session); ``take_counts`` may run
    on another and may miss an increment racing with it (counts are for flood reports).
    """

    def __init__(
        self, patterns: Sequence[TopicPattern], *, max_topic_bytes: int, max_bytes: int
    ) -> None:
        self._patterns = tuple(patterns)
        self._max_topic_bytes = max_topic_bytes
        self._max_bytes = max_bytes
        self.entries: dict[str, list[Any]] = {}
        self.size_bytes = 0
        self.clears = 0

    def lookup(self, topic: str) -> tuple[list[Any], str | None]:
        """The entry for ``topic`` (computed on a miss) and the reason it is bad, if any."""
        landed, identity, reason = classify_topic(topic, self._patterns, self._max_topic_bytes)
        entry: list[Any] = [landed, identity, 0]
        if reason is None:  # a bad topic is worked out again each time: it is never kept
            cost = sys.getsizeof(topic) + _ENTRY_OVERHEAD_BYTES
            if self.size_bytes + cost > self._max_bytes:
                self.entries.clear()
                self.size_bytes = 0
                self.clears += 1
            self.entries[topic] = entry
            self.size_bytes += cost
        return entry, reason

    def take_counts(self) -> dict[str, int]:
        """Messages per identity since the last call (counts reset to zero)."""
        out: dict[str, int] = {}
        for entry in list(self.entries.values()):
            count = entry[2]
            if count:
                entry[2] = 0
                identity = str(entry[1])
                out[identity] = out.get(identity, 0) + int(count)
        return out
