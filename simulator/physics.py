"""The physical model of a branch, on a grid of fixed intervals (the devices' cadence).

Each interval k covers [t0 + k*c, t0 + (k+1)*c); a device reports at the end of it
(plus its clock offset) the interval's power and its counters including the
interval's energy, so counters equal the right Riemann sum of reported power.

- Load: base load (ATM, servers, CCTV) plus lighting, plugs and air conditioning
  following occupancy (staff arrive before opening, leave after closing; closed
  days, including the second and fourth Saturdays of banks), with AR(1) noise.
- Grid: voltage about 230 V with slow drift and sags, frequency about 50 Hz,
  power factor 0.8-0.99, three roughly balanced phases; outages (Poisson,
  log-normal durations) during which the meter reads zero and the DG carries the load.
- DG: warm-up, running, cool-down; fuel = idle burn + specific burn x load
  (Willans line); refills when low; a weekly no-load exercise run.
- Solar: clear-sky irradiance from the sun's elevation (declination, hour angle,
  equation of time), clouds as AR(1), performance ratio, inverter clipping;
  trips on grid loss (anti-islanding) and reconnects five minutes after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from simulator.reference import Branch

__all__ = ["BranchSeries", "simulate_branch", "start_epoch"]

_DG_STATES = ("stopped", "pre_start", "warm_up", "running", "cool_down")
STOPPED, PRE_START, WARM_UP, RUNNING, COOL_DOWN = range(5)


def start_epoch(start: date, tz: str = "Asia/Kolkata") -> float:
    """Local midnight of the start date, as UTC epoch seconds."""
    return datetime.combine(start, time(0, 0), tzinfo=ZoneInfo(tz)).timestamp()


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    shocks = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    acc = rng.normal(0.0, sigma / math.sqrt(max(1e-9, 1 - phi * phi)))
    for i in range(n):
        acc = phi * acc + shocks[i]
        out[i] = acc
    return out


@dataclass
class BranchSeries:
    """Every device's values per interval, and the truth totals of the branch."""

    n: int
    cadence_s: int
    t0: float
    outage: np.ndarray
    meter: dict[str, np.ndarray] = field(default_factory=dict)
    dg: dict[str, np.ndarray] = field(default_factory=dict)
    solar: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def dg_state_name(code: int) -> str:
        return _DG_STATES[code]


def _is_closed_day(day: date, closed_days: str) -> bool:
    names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    for token in filter(None, closed_days.split(",")):
        if token in names and day.weekday() == names.index(token):
            return True
        if token.endswith("Sat") and token[0].isdigit() and day.weekday() == 5:
            nth = int(token[0])
            if (day.day - 1) // 7 + 1 == nth:
                return True
    return False


def _occupancy(branch: Branch, start: date, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy in [0, 1] and an open flag, per interval (local time)."""
    mid = (np.arange(n) * c + c / 2.0) / 60.0  # minutes since local midnight of start
    day_index = (mid // 1440).astype(int)
    minute = mid % 1440
    closed = np.array(
        [
            _is_closed_day(start + timedelta(days=int(d)), branch.closed_days)
            for d in range(day_index.max() + 1)
        ]
    )[day_index]
    o, cl = branch.opens_min, branch.closes_min
    ramp_in = np.clip((minute - (o - 45)) / 30.0, 0.0, 1.0)
    tail = 1.5 * 60 if branch.sector == "bank" else 30
    ramp_out = np.clip(((cl + tail) - minute) / 30.0, 0.0, 1.0)
    occ = np.minimum(ramp_in, ramp_out) * np.where(minute > cl, 0.75, 1.0)
    occ = np.where(minute > cl + tail, 0.0, occ)
    occ = np.where(closed, 0.0, occ)
    is_open = (~closed) & (minute >= o) & (minute < cl)
    return occ, is_open


def _solar_clear_sky(branch: Branch, start: date, t0: float, n: int, c: int) -> np.ndarray:
    """Global horizontal irradiance (W/m2) under a clear sky, per interval midpoint."""
    offsets = np.arange(n) * c + c / 2.0
    utc_mid = t0 + offsets
    day_index = (offsets // 86400).astype(int)
    doys = np.array(
        [(start + timedelta(days=d)).timetuple().tm_yday for d in range(day_index.max() + 1)]
    )
    doy_full = doys[day_index]
    gamma = 2 * math.pi * (doy_full - 1) / 365.0
    decl = np.radians(23.45) * np.sin(2 * math.pi * (284 + doy_full) / 365.0)
    eot = 229.18 * (
        0.000075
        + 0.001868 * np.cos(gamma)
        - 0.032077 * np.sin(gamma)
        - 0.014615 * np.cos(2 * gamma)
        - 0.040849 * np.sin(2 * gamma)
    )  # minutes
    utc_minutes = (utc_mid % 86400) / 60.0
    solar_minutes = utc_minutes + 4 * branch.lon + eot
    hour_angle = np.radians((solar_minutes / 4.0) - 180.0)
    lat = math.radians(branch.lat)
    sin_elev = math.sin(lat) * np.sin(decl) + math.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    sin_elev = np.clip(sin_elev, 0.0, 1.0)
    ghi: np.ndarray = 1050.0 * np.power(sin_elev, 1.15)
    return ghi


def simulate_branch(
    branch: Branch, start: date, days: int, cadence_s: int, rng: np.random.Generator
) -> BranchSeries:
    """All device series of one branch for the period."""
    c = cadence_s
    n = days * 86400 // c
    t0 = start_epoch(start)
    dt_h = c / 3600.0
    occ, _is_open = _occupancy(branch, start, n, c)
    minute = ((np.arange(n) * c + c / 2.0) / 60.0) % 1440

    # --- ambient temperature and load --------------------------------------------
    doy = start.timetuple().tm_yday
    winterness = (1 + math.cos(2 * math.pi * (doy - 15) / 365.0)) / 2
    t_mean = 31.0 - 0.4 * (branch.lat - 10.0) * winterness
    ambient = t_mean + 5.0 * np.sin(2 * math.pi * (minute / 60.0 - 9.0) / 24.0)
    cooling = np.clip((ambient - 22.0) / 8.0, 0.15, 1.0)
    s = branch.sanctioned_load_kw
    base = s * rng.uniform(0.07, 0.12)
    noise = 1.0 + _ar1(rng, n, 0.97, 0.012)
    spikes = np.zeros(n)
    for _ in range(rng.poisson(4 * days)):
        at = int(rng.integers(0, n))
        spikes[at : at + int(rng.integers(1, 4))] += s * rng.uniform(0.03, 0.08) * (occ[at] > 0.5)
    load = (base + s * 0.30 * occ + s * 0.42 * occ * cooling + spikes) * noise
    load = np.maximum(load, 0.3)
    pf = np.clip(0.93 - 0.07 * (1 - occ) + _ar1(rng, n, 0.95, 0.004), 0.80, 0.99)

    # --- grid: outages, voltage, frequency ---------------------------------------
    outage = np.zeros(n, dtype=bool)
    for _ in range(rng.poisson(branch.city.outages_per_day * days)):
        begin = int(rng.integers(0, n))
        minutes = float(np.clip(rng.lognormal(math.log(20.0), 0.8), 3.0, 240.0))
        outage[begin : begin + max(1, math.ceil(minutes * 60 / c))] = True
    v_base = np.clip(232.0 + _ar1(rng, n, 0.995, 0.25), 214.0, 248.0)
    sag = np.ones(n)
    for _ in range(rng.poisson(2 * days)):
        at = int(rng.integers(0, n))
        sag[at : at + int(rng.integers(1, 4))] = rng.uniform(0.80, 0.90)
    phase_offset = rng.normal(0.0, 1.5, 3)
    volts = np.stack([v_base * sag + phase_offset[p] + rng.normal(0, 0.4, n) for p in range(3)])
    freq = np.clip(50.0 + _ar1(rng, n, 0.98, 0.006), 49.7, 50.25)

    # --- solar ---------------------------------------------------------------------
    solar_dev = branch.device("solar")
    solar_ac = np.zeros(n)
    ghi = np.zeros(n)
    if solar_dev is not None:
        clouds = np.clip(0.85 + _ar1(rng, n, 0.99, 0.02), 0.15, 1.0)
        ghi = _solar_clear_sky(branch, start, t0, n, c) * clouds
        tripped = outage.copy()
        reconnect = math.ceil(300 / c)
        for k in np.flatnonzero(np.diff(outage.astype(int)) == -1):
            tripped[k + 1 : k + 1 + reconnect] = True
        dc = (
            solar_dev.rated_power_kw
            * ghi
            / 1000.0
            * 0.80
            * (1 - 0.004 * np.maximum(ambient - 25, 0))
        )
        solar_ac = np.where(tripped, 0.0, np.minimum(dc, solar_dev.rated_power_kw))
        solar_ac = np.where(solar_ac < 0.02, 0.0, solar_ac)

    # --- meter (grid incomer, net metering) ---------------------------------------------
    net = np.where(outage, 0.0, load - solar_ac)
    imp = np.maximum(net, 0.0)
    exp = np.maximum(-net, 0.0)
    shares = rng.dirichlet([60, 60, 60])
    phase_share = np.stack(
        [np.clip(shares[p] + rng.normal(0, 0.01, n), 0.2, 0.5) for p in range(3)]
    )
    phase_share = phase_share / phase_share.sum(axis=0)
    series = BranchSeries(n=n, cadence_s=c, t0=t0, outage=outage)
    meter = branch.device("meter")
    if meter is not None:
        p_phase = net * phase_share
        v = np.where(outage, 0.0, volts)
        pf_rep = np.where(np.abs(net) < 1e-9, 1.0, pf)
        with np.errstate(divide="ignore", invalid="ignore"):
            amps = np.where(v > 1.0, np.abs(p_phase) * 1000.0 / (v * pf_rep), 0.0)
        kva = np.abs(net) / pf_rep
        kvar = np.sqrt(np.maximum(kva**2 - net**2, 0.0))
        imp0 = rng.uniform(5e3, 4e5)
        exp0 = rng.uniform(0.0, 2e3) if solar_dev is not None else 0.0
        series.meter = {
            "voltage_l1_v": v[0],
            "voltage_l2_v": v[1],
            "voltage_l3_v": v[2],
            "current_l1_a": amps[0],
            "current_l2_a": amps[1],
            "current_l3_a": amps[2],
            "power_l1_kw": p_phase[0],
            "power_l2_kw": p_phase[1],
            "power_l3_kw": p_phase[2],
            "power_kw": net,
            "apparent_power_kva": kva,
            "reactive_power_kvar": kvar,
            "power_factor": pf_rep,
            "frequency_hz": np.where(outage, 0.0, freq),
            "energy_import_kwh": imp0 + np.cumsum(imp * dt_h),
            "energy_export_kwh": exp0 + np.cumsum(exp * dt_h),
        }

    if solar_dev is not None:
        on = solar_ac > 0
        e0 = rng.uniform(1e3, 5e4)
        temp = ambient + 25.0 * solar_ac / solar_dev.rated_power_kw + rng.normal(0, 0.2, n)
        series.solar = {
            "power_kw": solar_ac,
            "energy_generated_kwh": e0 + np.cumsum(solar_ac * dt_h),
            "voltage_v": np.where(outage, 0.0, volts[0]),
            "current_a": np.where(on, solar_ac * 1000.0 / (3 * np.maximum(volts[0], 1.0)), 0.0),
            "frequency_hz": np.where(outage, 0.0, freq),
            "inverter_temp_degc": temp,
        }
        if solar_dev.has_irradiance:
            series.solar["irradiance_w_m2"] = ghi

    dg_dev = branch.device("dg")
    if dg_dev is not None:
        series.dg = _simulate_dg(
            branch,
            start,
            dg_dev.rated_power_kw,
            dg_dev.rated_kva or 25.0,
            dg_dev.tank_capacity_l or 200.0,
            load,
            outage,
            ambient,
            minute,
            rng,
            c,
        )

    served_grid = np.where(outage, 0.0, load)
    series.truth = {
        "grid_import_kwh": float(np.sum(imp) * dt_h),
        "grid_export_kwh": float(np.sum(exp) * dt_h),
        "solar_kwh": float(np.sum(solar_ac) * dt_h),
        "dg_fuel_l": float(np.sum(series.dg["_fuel_burn_l"])) if series.dg else 0.0,
        "dg_run_hours": float(np.sum(series.dg["_running"]) * dt_h) if series.dg else 0.0,
        "dg_energy_kwh": float(np.sum(series.dg["power_kw"]) * dt_h) if series.dg else 0.0,
        "dg_starts": int(series.dg["starts_count"][-1] - series.dg["_starts0"][0])
        if series.dg
        else 0,
        "outage_minutes": float(np.sum(outage) * c / 60.0),
        "load_on_grid_kwh": float(np.sum(served_grid) * dt_h),
    }
    return series


def _simulate_dg(
    branch: Branch,
    start: date,
    rated_kw: float,
    rated_kva: float,
    tank_l: float,
    load: np.ndarray,
    outage: np.ndarray,
    ambient: np.ndarray,
    minute: np.ndarray,
    rng: np.random.Generator,
    c: int,
) -> dict[str, np.ndarray]:
    n = load.size
    dt_h = c / 3600.0
    cool_steps = max(1, math.ceil(180 / c))
    exercise_day = int(rng.integers(0, 7))
    exercise_start = 8 * 60 + int(rng.integers(0, 4)) * 15
    status = np.zeros(n, dtype=np.int8)
    power = np.zeros(n)
    burn = np.zeros(n)
    level = np.zeros(n)
    coolant = np.zeros(n)
    starts = np.zeros(n, dtype=np.int64)
    running = np.zeros(n)
    fuel = tank_l * rng.uniform(0.35, 0.95)
    temp = float(ambient[0])
    starts0 = int(rng.integers(50, 3000))
    n_starts = starts0
    state = STOPPED
    cooling_left = 0
    idle_lph = 0.07 * rated_kw
    specific = 0.26  # litres per kWh above idle
    for k in range(n):
        day = start + timedelta(days=int((k * c) // 86400))
        exercise = (
            day.weekday() == exercise_day and exercise_start <= minute[k] < exercise_start + 15
        )
        wanted = bool(outage[k]) or exercise
        if wanted:
            if state in (STOPPED,):
                state = WARM_UP
                n_starts += 1
            elif state in (WARM_UP, COOL_DOWN):
                state = RUNNING
        elif state in (WARM_UP, RUNNING):
            state = COOL_DOWN
            cooling_left = cool_steps
        elif state == COOL_DOWN:
            cooling_left -= 1
            if cooling_left <= 0:
                state = STOPPED
        p = float(load[k]) if (state == RUNNING and outage[k]) else 0.0
        p = min(p, rated_kw * 1.1)
        on = state != STOPPED
        b = (idle_lph + specific * p) * dt_h if on else 0.0
        tanker = 660 <= minute[k] < 660 + c / 60.0  # the tanker comes at 11:00
        if not on and (fuel < 0.15 * tank_l or (tanker and fuel < 0.40 * tank_l)):
            fuel = tank_l * rng.uniform(0.92, 0.97)
        fuel -= b
        target = 88.0 if on else float(ambient[k])
        tau = 480.0 if on else 1800.0
        temp += (target - temp) * (1 - math.exp(-c / tau))
        status[k], power[k], burn[k], level[k], coolant[k] = state, p, b, fuel, temp
        starts[k] = n_starts
        running[k] = 1.0 if on else 0.0
    rh0 = rng.uniform(100, 6000)
    e0 = rng.uniform(1e3, 1e5)
    on_mask = status != STOPPED
    volts = 24.0 if rated_kva >= 40 else 12.0
    battery = np.where(on_mask, volts * 1.155, volts * 1.05) + rng.normal(0, 0.02 * volts / 12, n)
    running_mask = status == RUNNING
    return {
        "_status": status,
        "engine_speed_rpm": np.where(on_mask, 1500.0 + rng.normal(0, 2.0, n), 0.0),
        "oil_pressure_kpa": np.where(
            on_mask, 380.0 - 0.4 * (coolant - 80.0) + rng.normal(0, 3.0, n), 0.0
        ),
        "coolant_temp_degc": coolant + rng.normal(0, 0.15, n),
        "battery_voltage_v": battery,
        "fuel_level_pct": np.clip(level / tank_l * 100.0, 0.0, 100.0),
        "load_pct": power / rated_kw * 100.0,
        "power_kw": power,
        "frequency_hz": np.where(on_mask, 50.0 + rng.normal(0, 0.04, n), 0.0),
        "run_hours_h": rh0 + np.cumsum(running * dt_h),
        "energy_generated_kwh": e0 + np.cumsum(power * dt_h),
        "starts_count": starts,
        "_fuel_burn_l": burn,
        "_running": running,
        "_starts0": np.array([starts0]),
        "_running_mask": running_mask,
    }
