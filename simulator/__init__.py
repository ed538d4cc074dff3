"""A simulated fleet: physically plausible telemetry from meters, DG sets and solar meters,
injected faults with a ledger, a truth manifest, and publishers over MQTT, HTTP or the landing
log. Used by the tests, the benchmarks and the demo. See docs/SIMULATOR.md.
"""
