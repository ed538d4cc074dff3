"""Sparkplug B at the gateway: decodes ``spBv1.0`` BIRTH, DATA and DEATH messages into the
JSON the gateway lands, keeps each edge node's aliases and seq, and asks for rebirths.

``codec.py`` reads topics and metric values (``sparkplug_b_pb2`` is compiled from the
vendored ``sparkplug_b.proto``, Eclipse Tahu, EPL-2.0: see README.md here); ``state.py``
keeps the per edge node state across restarts and builds the landed document
(docs/SPARKPLUG.md).
"""

from gateway.sparkplug.codec import MESSAGE_TYPES, SparkplugTopic, parse_topic
from gateway.sparkplug.state import SparkplugState, Translation

__all__ = ["MESSAGE_TYPES", "SparkplugState", "SparkplugTopic", "Translation", "parse_topic"]
