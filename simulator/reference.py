"""The fleet the simulator runs: clients, branches, devices, contacts, work orders.

Fake but well-formed: Indian names from Faker's en_IN provider, mobiles in E.164
(+91, first digit 6-9), e-mails on the reserved ``.example`` domain (RFC 2606), real
city coordinates. Deterministic for a seed: every entity draws from its own seeded
stream, so adding branches does not change the existing ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from faker import Faker

from simulator.config import SimConfig

__all__ = ["CITIES", "Branch", "City", "Device", "Fleet", "build_fleet", "rng_for"]


@dataclass(frozen=True, slots=True)
class City:
    name: str
    code: str
    state: str
    lat: float
    lon: float
    ncr_district: str | None
    outages_per_day: float  # grid reliability: metros rarely, smaller towns more often


CITIES: tuple[City, ...] = (
    City("Bengaluru", "blr", "Karnataka", 12.9716, 77.5946, None, 0.4),
    City("Mumbai", "bom", "Maharashtra", 19.0760, 72.8777, None, 0.2),
    City("New Delhi", "del", "Delhi", 28.6139, 77.2090, "New Delhi", 0.5),
    City("Gurugram", "ggn", "Haryana", 28.4595, 77.0266, "Gurugram", 1.2),
    City("Noida", "noi", "Uttar Pradesh", 28.5355, 77.3910, "Gautam Buddh Nagar", 1.0),
    City("Chennai", "maa", "Tamil Nadu", 13.0827, 80.2707, None, 0.5),
    City("Hyderabad", "hyd", "Telangana", 17.3850, 78.4867, None, 0.5),
    City("Pune", "pnq", "Maharashtra", 18.5204, 73.8567, None, 0.6),
    City("Kolkata", "ccu", "West Bengal", 22.5726, 88.3639, None, 0.7),
    City("Ahmedabad", "amd", "Gujarat", 23.0225, 72.5714, None, 0.5),
    City("Jaipur", "jai", "Rajasthan", 26.9124, 75.7873, None, 1.0),
    City("Lucknow", "lko", "Uttar Pradesh", 26.8467, 80.9462, None, 1.5),
    City("Faridabad", "fbd", "Haryana", 28.4089, 77.3178, "Faridabad", 1.3),
    City("Ghaziabad", "gzb", "Uttar Pradesh", 28.6692, 77.4538, "Ghaziabad", 1.4),
    City("Kochi", "cok", "Kerala", 9.9312, 76.2673, None, 0.6),
    City("Indore", "idr", "Madhya Pradesh", 22.7196, 75.8577, None, 1.1),
    City("Patna", "pat", "Bihar", 25.5941, 85.1376, None, 2.0),
    City("Bhubaneswar", "bbi", "Odisha", 20.2961, 85.8245, None, 1.2),
)

_CLIENT_NAMES = (
    ("Kaveri Bank", "bank"),
    ("Sahyadri Retail", "retail"),
    ("Narmada Co-operative Bank", "bank"),
    ("Godavari Mart", "retail"),
    ("Tungabhadra Finance Bank", "bank"),
    ("Tapti Stores", "retail"),
)
_METERS = (
    ("Schneider Electric", "EM6400NG"),
    ("Secure Meters", "Elite 440"),
    ("Eastron", "SDM630-Modbus V2"),
    ("Selec", "EM4M-3P"),
    ("L&T", "WL4405"),
)
_DGS = (
    ("Kirloskar", "KG1 Green"),
    ("Cummins", "C-Series CPCB IV+"),
    ("Mahindra Powerol", "MPDG"),
    ("Ashok Leyland", "Genset ALP"),
)
_INVERTERS = (
    ("Sungrow", "SG10RT"),
    ("Growatt", "MID 15KTL3-X"),
    ("Fronius", "Symo 10.0-3-M"),
    ("Delta", "M15A"),
)
_DG_KVA = (15.0, 20.0, 25.0, 30.0, 40.0, 62.5, 82.5, 125.0)


def rng_for(seed: int, *labels: str) -> np.random.Generator:
    """A PCG64 stream for (seed, labels): independent of any other entity's stream."""
    digest = hashlib.sha256("/".join((str(seed), *labels)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def _faker(seed: int, *labels: str) -> Faker:
    fake = Faker("en_IN")
    fake.seed_instance("/".join((str(seed), *labels)))
    return fake


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _mobile(rng: np.random.Generator) -> str:
    return "+91" + str(int(rng.integers(6, 10))) + "".join(str(d) for d in rng.integers(0, 10, 9))


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    client_id: str
    branch_id: str
    kind: str  # meter | dg | solar
    rated_power_kw: float
    rated_kva: float | None
    tank_capacity_l: float | None
    has_irradiance: bool
    offset_s: int  # the device clock's offset within the cadence
    row: dict[str, Any]

    @property
    def payload_format(self) -> str:
        return str(self.row.get("payload_format") or "canonical")

    @property
    def account(self) -> str:
        """The MQTT account it publishes with: its MQTT name, its edge node's, or its id."""
        return str(self.row.get("mqtt_name") or self.row.get("edge_node") or self.device_id)


@dataclass(frozen=True, slots=True)
class Branch:
    branch_id: str
    client_id: str
    sector: str
    city: City
    lat: float
    lon: float
    sanctioned_load_kw: float
    floor_area_m2: float
    opens_min: int  # minutes after local midnight
    closes_min: int
    closed_days: str
    devices: tuple[Device, ...]
    row: dict[str, Any]
    vendor: str | None = None  # a vendor device's branch: its format (config.VENDOR_FORMATS)
    edge_nodes: tuple[Device, ...] = ()  # registered Sparkplug edge nodes (no readings)

    def device(self, kind: str) -> Device | None:
        return next((d for d in self.devices if d.kind == kind), None)


@dataclass(frozen=True, slots=True)
class Fleet:
    clients: list[dict[str, Any]]
    branches: list[Branch]
    contacts: list[dict[str, Any]]
    work_orders: list[dict[str, Any]]
    tokens: dict[str, str]  # device_id -> clear HTTP token (for provisioning and publishing)

    @property
    def devices(self) -> list[Device]:
        return [d for b in self.branches for d in b.devices]

    @property
    def registered(self) -> list[Device]:
        """Every registered device: those with readings and the Sparkplug edge nodes."""
        return [d for b in self.branches for d in (*b.devices, *b.edge_nodes)]

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """Reference rows per dataset, shaped as their contracts say."""
        return {
            "clients": self.clients,
            "branches": [b.row for b in self.branches],
            "devices": [d.row for d in self.registered],
            "contacts": self.contacts,
            "work_orders": self.work_orders,
        }


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _token(seed: int, device_id: str) -> str:
    # Deterministic per seed so a re-run provisions the same tokens; 256 bits.
    return hashlib.sha256(f"energylake-sim-token/{seed}/{device_id}".encode()).hexdigest()


def build_fleet(config: SimConfig) -> Fleet:
    """Generate the fleet for a config (deterministic for its seed)."""
    seed = config.seed
    updated = datetime.combine(config.start, datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
    clients: list[dict[str, Any]] = []
    branches: list[Branch] = []
    contacts: list[dict[str, Any]] = []
    work_orders: list[dict[str, Any]] = []
    tokens: dict[str, str] = {}
    for ci in range(config.clients):
        base_name, sector = _CLIENT_NAMES[ci % len(_CLIENT_NAMES)]
        cycle = ci // len(_CLIENT_NAMES)
        legal_name = base_name + (f" {cycle + 1}" if cycle else "") + " Ltd"
        client_id = _slug(base_name).split("-")[0] + (f"{cycle + 1}" if cycle else "")
        crng = rng_for(seed, "client", client_id)
        clients.append(
            {
                "client_id": client_id,
                "legal_name": legal_name,
                "sector": sector,
                "hq_city": CITIES[int(crng.integers(len(CITIES)))].name,
                "onboarded_on": config.start - timedelta(days=int(crng.integers(200, 1500))),
                "updated_at": updated,
            }
        )
        for bi in range(config.branches):
            branch = _branch(config, client_id, sector, bi, updated, tokens)
            branches.append(branch)
            contacts.extend(_contacts(seed, branch, updated))
            work_orders.extend(_work_orders(config, branch, len(work_orders)))
    if config.vendor_devices:  # after every other branch: the fleet before them is unchanged
        first = clients[0]
        for j, fmt in enumerate(config.vendor_devices):
            client_id, sector = str(first["client_id"]), str(first["sector"])
            index = config.branches + j
            branch = _branch(config, client_id, sector, index, updated, tokens, vendor=fmt)
            branches.append(branch)
            contacts.extend(_contacts(seed, branch, updated))
    return Fleet(clients, branches, contacts, work_orders, tokens)


def _branch(
    config: SimConfig,
    client_id: str,
    sector: str,
    index: int,
    updated: datetime,
    tokens: dict[str, str],
    vendor: str | None = None,
) -> Branch:
    seed = config.seed
    rng = rng_for(seed, "branch", client_id, str(index))
    fake = _faker(seed, "branch", client_id, str(index))
    city = CITIES[int(rng.integers(len(CITIES)))]
    branch_id = f"{client_id}-{city.code}-{index + 1:03d}"
    lat = round(city.lat + float(rng.normal(0, 0.04)), 6)
    lon = round(city.lon + float(rng.normal(0, 0.04)), 6)
    if sector == "bank":
        area = float(rng.uniform(150, 600))
        opens, closes, closed = 10 * 60, 16 * 60, "Sun,2Sat,4Sat"
    else:
        area = float(rng.uniform(300, 1500))
        opens, closes, closed = 10 * 60, 21 * 60 + 30, ""
    sanctioned = round(area * float(rng.uniform(0.08, 0.13)), 1)
    peak = sanctioned * 0.8
    devices: list[Device] = []

    def add(
        kind: str,
        rated_kw: float,
        maker: tuple[str, str],
        extra: dict[str, Any],
        prefix: str | None = None,
    ) -> Device:
        suffix = hashlib.sha256(f"{seed}/{branch_id}/{prefix or kind}".encode()).hexdigest()[:8]
        device_id = (prefix or {"meter": "em", "dg": "dg", "solar": "pv"}[kind]) + "-" + suffix
        token = _token(seed, device_id)
        tokens[device_id] = token
        row = {
            "device_id": device_id,
            "client_id": client_id,
            "branch_id": branch_id,
            "kind": kind,
            "manufacturer": maker[0],
            "model": maker[1],
            "serial_number": f"{maker[0][:2].upper()}{int(rng.integers(10**7, 10**8))}",
            "payload_format": "canonical",
            "rated_power_kw": rated_kw,
            "rated_kva": None,
            "tank_capacity_l": None,
            "fuel_type": None,
            "emission_norm": None,
            "emission_control": None,
            "certificate_ref": None,
            "cadence_s": config.cadence_s,
            "http_token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "status": "active",
            "installed_on": config.start - timedelta(days=int(rng.integers(30, 1200))),
            "updated_at": updated,
        } | extra
        device = Device(
            device_id=device_id,
            client_id=client_id,
            branch_id=branch_id,
            kind=kind,
            rated_power_kw=rated_kw,
            rated_kva=extra.get("rated_kva"),
            tank_capacity_l=extra.get("tank_capacity_l"),
            has_irradiance=bool(extra.get("_irradiance", False)),
            offset_s=int(rng.integers(0, config.cadence_s)),
            row={k: v for k, v in row.items() if not k.startswith("_")},
        )
        devices.append(device)
        return device

    meter_rating = float(np.ceil(sanctioned * 1.5 / 5) * 5)
    edge_nodes: list[Device] = []
    if vendor is not None:
        maker = _VENDOR_METERS[vendor]
        if vendor == "sparkplug_b":  # the edge node first: the meter names it
            add("meter", meter_rating, maker, _vendor_extra(config, "edge", ""), prefix="edge")
            edge_nodes.append(devices.pop())
        meter = add("meter", meter_rating, maker, {})
        meter.row.update(_vendor_extra(config, vendor, meter.device_id, edge_nodes))
    else:
        add("meter", meter_rating, _METERS[int(rng.integers(len(_METERS)))], {})
    if vendor is None and rng.random() < config.dg_share:
        kva = next((k for k in _DG_KVA if k * 0.8 >= peak * 1.25), _DG_KVA[-1])
        tank = float(max(100, round(kva * 6 / 50) * 50))
        add(
            "dg",
            kva * 0.8,
            _DGS[int(rng.integers(len(_DGS)))],
            {
                "rated_kva": kva,
                "tank_capacity_l": tank,
                "fuel_type": "diesel",
                "emission_norm": "cpcb_iv_plus" if rng.random() < 0.4 else "cpcb_ii",
            },
        )
        _emission_control(devices[-1])
    if vendor is None and rng.random() < config.solar_share:
        kwp = float(round(min(area * 0.03, sanctioned * 0.6) * 2) / 2)
        add(
            "solar",
            max(kwp, 2.0),
            _INVERTERS[int(rng.integers(len(_INVERTERS)))],
            {"_irradiance": bool(rng.random() < 0.4)},
        )
    street = fake.street_address().replace("\n", ", ")
    row = {
        "branch_id": branch_id,
        "client_id": client_id,
        "site_name": f"{city.name} {fake.street_name()}",
        "address": f"{street}, {city.name}, {city.state}",
        "city": city.name,
        "state": city.state,
        "ncr": city.ncr_district is not None,
        "ncr_district": city.ncr_district,
        "floor_area_m2": round(area, 1),
        "sanctioned_load_kw": sanctioned,
        "latitude_deg": lat,
        "longitude_deg": lon,
        "opens_local": _hhmm(opens),
        "closes_local": _hhmm(closes),
        "closed_days": closed,
        "timezone": "Asia/Kolkata",
        "opened_on": config.start - timedelta(days=int(rng.integers(365, 5000))),
        "updated_at": updated,
    }
    return Branch(
        branch_id=branch_id,
        client_id=client_id,
        sector=sector,
        city=city,
        lat=lat,
        lon=lon,
        sanctioned_load_kw=sanctioned,
        floor_area_m2=area,
        opens_min=opens,
        closes_min=closes,
        closed_days=closed,
        devices=tuple(devices),
        row=row,
        vendor=vendor,
        edge_nodes=tuple(edge_nodes),
    )


# A vendor device's maker and model (the registry's manufacturer and model columns).
_VENDOR_METERS: dict[str, tuple[str, str]] = {
    "tasmota": ("Tasmota", "ESP32 with an SDM630 (Tasmota 14)"),
    "shelly_pro3em": ("Shelly", "Pro 3EM"),
    "thingsboard": ("Selec", "EM4M-3P (ThingsBoard telemetry)"),
    "sparkplug_b": ("Schneider Electric", "EM6400NG (Sparkplug B edge node)"),
    "modbus": ("Eastron", "SDM630-Modbus V2"),
}


def _vendor_extra(
    config: SimConfig, vendor: str, device_id: str, edge_nodes: list[Device] | None = None
) -> dict[str, Any]:
    """The registry columns of a vendor device (devices contract 1.3.0): its decoder, and
    its MQTT name, edge node, or Modbus endpoint and register map."""
    if vendor == "edge":  # a Sparkplug edge node's own account: its NBIRTH has no reading
        return {"payload_format": "sparkplug_b", "profile": "by_exception"}
    if vendor == "tasmota":  # Tasmota's default topic: tasmota_<last 6 hex digits of the MAC>
        mac = hashlib.sha256(f"mac/{device_id}".encode()).hexdigest()[:6].upper()
        return {"payload_format": "tasmota", "mqtt_name": f"tasmota_{mac}"}
    if vendor == "shelly_pro3em":
        return {"payload_format": "shelly_pro3em", "cadence_s": config.live_cadence_s}
    if vendor == "thingsboard":
        return {"payload_format": "thingsboard"}
    if vendor == "sparkplug_b":
        assert edge_nodes
        return {"payload_format": "sparkplug_b", "edge_node": edge_nodes[0].device_id}
    return {  # modbus: polled, so the canonical envelope (the poller writes it)
        "payload_format": "canonical",
        "modbus_endpoint": config.modbus_endpoint,
        "modbus_unit_id": 1,
        "register_map": "eastron_sdm630",
        "cadence_s": config.live_cadence_s,
    }


def _email(name: str, client_id: str) -> str:
    local = ".".join(_slug(name).split("-")[:2]) or "contact"
    return f"{local}@{client_id}.example"


def _contacts(seed: int, branch: Branch, updated: datetime) -> list[dict[str, Any]]:
    rng = rng_for(seed, "contacts", branch.branch_id)
    fake = _faker(seed, "contacts", branch.branch_id)
    roles = ["branch_manager", "facility_manager"]
    if rng.random() < 0.3:
        roles.append("security_officer")
    rows = []
    for index, role in enumerate(roles):
        name = fake.name()
        rows.append(
            {
                "contact_id": "ct-"
                + hashlib.sha256(f"{branch.branch_id}/{index}".encode()).hexdigest()[:10],
                "client_id": branch.client_id,
                "branch_id": branch.branch_id,
                "name": name,
                "mobile": _mobile(rng),
                "email": _email(name, branch.client_id) if rng.random() < 0.9 else None,
                "role": role,
                "is_primary": index == 0,
                "updated_at": updated,
            }
        )
    return rows


def _work_orders(config: SimConfig, branch: Branch, counter: int) -> list[dict[str, Any]]:
    rng = rng_for(config.seed, "work_orders", branch.branch_id)
    fake = _faker(config.seed, "work_orders", branch.branch_id)
    start = datetime.combine(config.start, datetime.min.time(), tzinfo=UTC)
    rows = []
    for index in range(int(rng.integers(1, 4))):
        device = branch.devices[int(rng.integers(len(branch.devices)))]
        kind = "pm" if rng.random() < 0.7 else "breakdown"
        opened = start - timedelta(days=float(rng.uniform(0.5, 30)))
        closed = bool(rng.random() < 0.8)
        started = opened + timedelta(hours=float(rng.uniform(2, 48)))
        closed_at = started + timedelta(hours=float(rng.uniform(0.5, 4))) if closed else None
        ticket = f"WO-{config.start.year}-{counter + index + 1:06d}"
        rows.append(
            {
                "ticket_id": ticket,
                "client_id": branch.client_id,
                "branch_id": branch.branch_id,
                "device_id": device.device_id,
                "type": kind,
                "status": "closed" if closed else "in_progress",
                "priority": "p4" if kind == "pm" else ("p1" if rng.random() < 0.3 else "p2"),
                "opened_at": opened,
                "scheduled_for": opened + timedelta(days=1) if kind == "pm" else None,
                "started_at": started,
                "closed_at": closed_at,
                "technician_id": f"tech-{int(rng.integers(1000, 9999))}",
                "technician_name": fake.name(),
                "technician_phone": _mobile(rng),
                "visit_latitude_deg": round(branch.lat + float(rng.normal(0, 0.0003)), 6),
                "visit_longitude_deg": round(branch.lon + float(rng.normal(0, 0.0003)), 6),
                "notes": (
                    f"{'Quarterly PM' if kind == 'pm' else 'Breakdown attended'} on "
                    f"{device.kind} {device.device_id}; met {fake.first_name()} at the site."
                ),
                "photo_refs": [f"field/{ticket}/photo-{i + 1}.jpg" for i in range(2)],
                "signature_ref": f"field/{ticket}/signature.png" if closed else None,
                "updated_at": closed_at or started,
            }
        )
    return rows


_CONTROLS = ("none", "dual_fuel", "recd")


def _emission_control(device: Device) -> None:
    """A DG set's emission control and certificate, from its norm and id (deterministic, and
    no draw from the fleet's random stream: the rest of the fleet stays as it was)."""
    row = device.row
    digest = hashlib.sha256(device.device_id.encode()).hexdigest()
    if row.get("emission_norm") == "cpcb_iv_plus":
        row["emission_control"] = "cpcb_iv_plus"
        row["certificate_ref"] = f"TA-{digest[:8].upper()}"
        return
    control = _CONTROLS[int(digest[:2], 16) % len(_CONTROLS)]
    row["emission_control"] = control
    # most retrofits have their certificate on record; one in four does not (yet)
    if control == "recd" and int(digest[2:4], 16) % 4:
        row["certificate_ref"] = f"RECD-{digest[:8].upper()}"
