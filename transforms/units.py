"""Unit conversions a device or a decoder may declare: (its unit, the contract's) to a factor."""

from __future__ import annotations

__all__ = ["UNIT_FACTORS"]

# (declared unit, contract unit) -> factor. Unit names as devices write them.
UNIT_FACTORS: dict[tuple[str, str], float] = {
    ("W", "kW"): 1e-3,
    ("kW", "kW"): 1.0,
    ("MW", "kW"): 1e3,
    ("VA", "kVA"): 1e-3,
    ("kVA", "kVA"): 1.0,
    ("var", "kVAr"): 1e-3,
    ("VAr", "kVAr"): 1e-3,
    ("VAR", "kVAr"): 1e-3,
    ("kvar", "kVAr"): 1.0,
    ("kVAr", "kVAr"): 1.0,
    ("Wh", "kWh"): 1e-3,
    ("kWh", "kWh"): 1.0,
    ("MWh", "kWh"): 1e3,
}
