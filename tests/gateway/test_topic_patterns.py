"""The gateway's default subscriptions and the broker's device ACL are the decoder
catalogue's topics: the gateway does not import transforms, so its defaults are a copy,
kept equal here to what the shipped catalogue reads."""

from __future__ import annotations

from pathlib import Path

from contracts import load_registry
from gateway.config import DEFAULT_TOPIC_PATTERNS
from transforms.catalogue import DECODERS_DIR, load_catalogue

ROOT = Path(__file__).resolve().parents[2]


def test_the_gateways_default_subscriptions_are_the_catalogues() -> None:
    catalogue = load_catalogue((DECODERS_DIR,), load_registry(ROOT / "contracts"))
    assert catalogue.gateway_patterns() == DEFAULT_TOPIC_PATTERNS
