"""The ingest edge: MQTT consumer (paho), HTTP server (aiohttp), the group commit that acks
only after the landing log (``landing``) has fsynced, identities, backpressure, audit and
metrics.

Imports only ``contracts`` and ``landing``; never Beam. See docs/GATEWAY.md and
docs/LANDING.md.
"""
