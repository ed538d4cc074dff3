"""The development stack: what the demo, the tests and the benchmarks start on one machine.

A private Mosquitto with the production config and a provisioned fleet (``mosquitto``), a
gateway process on free ports with HTTP helpers (``gateway``), the local deployment of the
demo and the benchmarks: Mosquitto plus ``energylake run`` (``stack``). Everything started
is ended by its PID. It may import every package but the CLI (the CLI's ``demo`` uses it).
"""
