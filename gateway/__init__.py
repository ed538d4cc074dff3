"""The ingest edge: MQTT consumer (paho), HTTP server (aiohttp), the landing log it writes,
the group commit that acks only after fsync, identities, backpressure, audit and metrics.

Imports only ``contracts``; never Beam. See docs/GATEWAY.md and docs/LANDING.md.
"""
