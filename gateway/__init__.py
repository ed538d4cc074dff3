"""The ingest edge: MQTT consumer (paho), HTTP server (aiohttp), the group commit that acks
only after the landing log (``landing``) has fsynced, identities and the provisioning of
the broker's accounts and ACL, backpressure and metrics; security events go to the audit log
(``audit``).

Imports only ``contracts``, ``durable``, ``landing`` and ``audit``; never Beam. See
docs/GATEWAY.md and docs/LANDING.md.
"""
