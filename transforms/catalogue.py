"""The decoder catalogue: each vendor payload format is a YAML file of data, not code.

A decoder file (``transforms/decoders/<name>.yaml``) names the MQTT topics its devices
publish on and, per topic (a *stream*), how a payload becomes contract fields: where the
record is, which paths hold which fields (by device kind where a vendor's key means a
different field for a meter and a solar meter), the unit and scale of each, where the
event time is and in which zone, and how ``seq`` is derived. The layout ``envelope`` is the
energylake envelope itself (columnar, ``transforms/ndjson.py``); the layout ``mapping``
covers vendor formats in the spirit of Telegraf's JSON parsers::

    decoder: tasmota
    description: Tasmota energy monitors.
    namespace: ["tele/{device}/+"]     # what a device may publish: landed, never dropped
    streams:
      - name: sensor
        topic: "tele/{device}/SENSOR"
        require: [Time, ENERGY]         # absent: MALFORMED_PAYLOAD
        time: {path: Time, format: local}   # local: the branch's zone
        seq: {from: time}               # epoch seconds of the event time
        fields:
          - {path: ENERGY.Voltage, field: voltage_l1_v, shape: number}
          - {path: "ENERGY.Voltage[1]", field: voltage_l2_v}
          - {path: ENERGY.Total, field: {meter: energy_import_kwh, solar: energy_generated_kwh}}
          - {path: ENERGY.Power, field: power_kw, unit: W, reduce: sum}

Field rules: ``path`` is dotted keys with ``[i]`` list indexes; ``X.*`` maps every key of the
object ``X`` (``*`` the record's own keys) to the contract field of the same name (an unknown
key is then named and quarantined SCHEMA_MISMATCH, as in the envelope). ``shape`` (number,
list, any) applies a rule only to a value of that shape; ``reduce`` (sum, mean) folds a list.
``unit`` converts to the contract field's unit; ``scale`` multiplies first. The first rule
that yields a value for a field wins. ``derive`` adds the few fields computed from others
(``ratio``: a power factor from active and apparent power). A stream may name a
``profile`` of the readings contract its messages satisfy (a message that carries only
counters); a device's own profile comes from the registry.

``lint_decoder`` checks a decoder file against the contracts and returns every problem with
the file, the YAML path and the reason (codes D0xx); ``load_catalogue`` refuses a
catalogue with any. ``Catalogue.match`` finds the stream of a topic, with what the topic
claims (client, branch, device).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from contracts import ContractRegistry, load_registry
from contracts.errors import ContractInvalidError, LintIssue
from contracts.model import READING_SYSTEM_FIELDS
from transforms.units import UNIT_FACTORS

__all__ = [
    "DECODERS_DIR",
    "Catalogue",
    "Decoder",
    "FieldRule",
    "Stream",
    "default_catalogue",
    "lint_catalogue",
    "lint_decoder",
    "load_catalogue",
]

DECODERS_DIR = Path(__file__).parent / "decoders"
# A {device} segment: what the gateway lands as an identity (gateway/topics.py).
DEVICE_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
_CLIENT_SEGMENT = r"[a-z0-9][a-z0-9-]{1,31}"
_BRANCH_SEGMENT = r"[a-z0-9][a-z0-9-]{1,47}"
_PLACEHOLDERS = {
    "{device}": DEVICE_SEGMENT,
    "{client}": _CLIENT_SEGMENT,
    "{branch}": _BRANCH_SEGMENT,
    "{edge}": DEVICE_SEGMENT,
}
_WILD = frozenset({"+", "#", "{device}", "{client}", "{branch}", "{edge}"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_TIME_FORMATS = ("local", "iso", "epoch_s", "epoch_ms", "received")
_SEQ_SOURCES = ("path", "time", "received")
_SEQ_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
Shape = Literal["number", "list", "any"]
PathPart = str | int


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One path to one contract field (or one per device kind)."""

    path: tuple[PathPart, ...]
    targets: Mapping[str, str]  # device kind -> field; "*" for any kind
    factor: float = 1.0
    shape: Shape = "any"
    reduce: Literal["sum", "mean"] | None = None
    wildcard: bool = False  # path ends in "*": every key to the field of its name
    absolute: bool = False  # the magnitude (a signed power factor to the contract's 0..1)
    ignore: tuple[str, ...] = ()  # a wildcard's keys to leave out (fnmatch patterns)

    def target(self, kind: str) -> str | None:
        return self.targets.get(kind, self.targets.get("*"))


@dataclass(frozen=True, slots=True)
class Derived:
    """A field (or one per device kind) computed from two decoded ones:
    ``abs(numerator) / denominator``, capped at 1 (a power factor)."""

    targets: Mapping[str, str]
    numerator: str
    denominator: str


@dataclass(frozen=True, slots=True)
class Stream:
    """One topic of a decoder and how its payloads become readings."""

    decoder: str
    name: str
    topic: str
    regex: re.Pattern[str]
    layout: Literal["envelope", "mapping"]
    records: Literal["object", "list", "either"] = "object"
    record_path: tuple[PathPart, ...] = ()
    require: tuple[tuple[PathPart, ...], ...] = ()
    time_path: tuple[PathPart, ...] = ()
    time_format: str = "received"
    time_zone: str = "branch"
    time_fallback: str | None = None  # "received" when the time path may be absent
    seq_from: str = "time"
    seq_path: tuple[PathPart, ...] = ()
    seq_unit_s: float = 1.0
    boot_path: tuple[PathPart, ...] = ()
    fields: tuple[FieldRule, ...] = ()
    derive: tuple[Derived, ...] = ()
    profile: str | None = None
    refuse: str | None = None  # every message quarantined with this reason (no reading)
    problem_code: tuple[PathPart, ...] = ()  # a problem the sender reports: its code...
    problem_detail: tuple[PathPart, ...] = ()  # ...and detail; the record is quarantined

    @property
    def key(self) -> str:
        return f"{self.decoder}/{self.name}"

    def claims(self, topic: str) -> tuple[str | None, ...] | None:
        """(client, branch, device, edge) the topic claims, or None when it is not this
        stream's. ``edge``: the gateway (a Sparkplug edge node) the device publishes through,
        which is then the authenticated account, and ``device`` only a claim."""
        m = self.regex.fullmatch(topic)
        if m is None:
            return None
        groups = m.groupdict()
        return groups.get("client"), groups.get("branch"), groups.get("device"), groups.get("edge")


@dataclass(frozen=True, slots=True)
class Decoder:
    """A vendor format: its streams, and the topics its devices may publish on."""

    name: str
    description: str
    streams: tuple[Stream, ...]
    namespace: tuple[str, ...]
    namespace_regex: tuple[re.Pattern[str], ...]
    path: Path

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic pattern a device of this format publishes on (broker ACL, gateway)."""
        return tuple(dict.fromkeys([*(s.topic for s in self.streams), *self.namespace]))


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every decoder, and the lookups the pipeline needs."""

    decoders: Mapping[str, Decoder]
    by_kind_columns: tuple[str, ...] = field(default=())

    @property
    def streams(self) -> tuple[Stream, ...]:
        return tuple(s for d in self.decoders.values() for s in d.streams)

    def gateway_patterns(self) -> tuple[str, ...]:
        """What the gateway subscribes to and the broker lets devices write, as gateway topic
        patterns (``{device}``: the publishing account; ``{client}``: its tenant): each
        decoder's namespace, or its streams' topics when it has none. A stream's ``{edge}``
        is the account there, and its ``{device}`` any segment."""
        out: list[str] = []
        for decoder in self.decoders.values():
            patterns = decoder.namespace or tuple(s.topic for s in decoder.streams)
            for pattern in patterns:
                segments = pattern.split("/")
                if "{edge}" in segments:
                    segments = [
                        "{device}" if seg == "{edge}" else "+" if seg == "{device}" else seg
                        for seg in segments
                    ]
                segments = ["+" if seg == "{branch}" else seg for seg in segments]
                out.append("/".join(segments))
        # a topic matching two patterns takes the first's identity: literal heads first
        return tuple(sorted(dict.fromkeys(out), key=lambda p: p.startswith("{device}/")))

    def match(self, topic: str) -> tuple[Stream, tuple[str | None, ...]] | None:
        for stream in self.streams:
            claims = stream.claims(topic)
            if claims is not None:
                return stream, claims
        return None

    def namespace_of(self, topic: str) -> tuple[Decoder, str | None] | None:
        """The decoder whose namespace holds ``topic`` (a topic it does not decode), and the
        device the topic names."""
        candidates = sorted(
            (
                (-sum(1 for seg in pattern.split("/") if seg not in _WILD), k, decoder, regex)
                for k, decoder in enumerate(self.decoders.values())
                for pattern, regex in zip(decoder.namespace, decoder.namespace_regex, strict=True)
            ),
            key=lambda c: (c[0], c[1]),
        )
        for _, _, decoder, regex in candidates:
            m = regex.fullmatch(topic)
            if m is not None:
                return decoder, m.groupdict().get("device")
        return None


def topic_regex(pattern: str) -> re.Pattern[str]:
    """An MQTT topic pattern (``+`` one segment, a trailing ``#`` the rest, ``{device}``,
    ``{client}``, ``{branch}`` named segments) as an anchored regular expression."""
    parts = []
    segments = pattern.split("/")
    for k, seg in enumerate(segments):
        if seg in _PLACEHOLDERS:
            parts.append(f"(?P<{seg[1:-1]}>{_PLACEHOLDERS[seg]})")
        elif seg == "+":
            parts.append("[^/]+")
        elif seg == "#" and k == len(segments) - 1:
            parts.append(".+")
        else:
            parts.append(re.escape(seg))
    return re.compile("/".join(parts))


def parse_path(text: str) -> tuple[PathPart, ...] | None:
    """``a.b[0].c`` as ("a", "b", 0, "c"); "" is the record itself; None if malformed."""
    if text == "":
        return ()
    out: list[PathPart] = []
    pos = 0
    for m in _PATH_PART.finditer(text):
        if m.start() != pos and not (text[pos] == "." and m.start() == pos + 1 and out):
            return None
        key, index = m.group(1), m.group(2)
        out.append(int(index) if index is not None else key)
        pos = m.end()
    return tuple(out) if pos == len(text) and out else None


# --------------------------------------------------------------------------------- lint


class _Lint:
    def __init__(self, file: str, registry: ContractRegistry) -> None:
        self.file = file
        self.registry = registry
        self.issues: list[LintIssue] = []
        self.kinds = {
            kind: registry.get(ds)
            for ds in registry.readings_datasets
            if (kind := registry.get(ds).device_kind) is not None
        }
        self.value_fields: dict[str, dict[str, Any]] = {
            kind: {f.name: f for f in c.fields if f.name not in READING_SYSTEM_FIELDS}
            for kind, c in self.kinds.items()
        }

    def reason_codes(self) -> frozenset[str]:
        """The quarantine contract's reason codes (what a stream may refuse with)."""
        field = self.registry.get("quarantine").field("reason_code")
        return frozenset(str(v) for v in field.allowed_values or ())

    def issue(self, path: str, code: str, message: str) -> None:
        self.issues.append(LintIssue(self.file, path, code, message))

    def path(self, where: str, value: Any) -> tuple[PathPart, ...] | None:
        if not isinstance(value, str):
            self.issue(where, "D004", f"a path must be a string like 'a.b[0]', not {value!r}")
            return None
        parsed = parse_path(value)
        if parsed is None:
            self.issue(where, "D004", f"path {value!r} is not dotted keys with [i] indexes")
        return parsed

    def topic(self, where: str, value: Any, *, namespace: bool = False) -> str | None:
        if not isinstance(value, str) or not value:
            self.issue(where, "D003", f"a topic pattern must be a non-empty string, not {value!r}")
            return None
        segments = value.split("/")
        if segments.count("{device}") != 1:
            self.issue(
                where,
                "D003",
                f"topic {value!r} needs exactly one {{device}} segment: the gateway takes the "
                "publishing device from it, and the broker pins it to the device's account",
            )
            return None
        if segments.count("{edge}") > 1 or (namespace and "{edge}" in segments):
            self.issue(
                where, "D003", f"topic {value!r}: at most one {{edge}}, and not in a namespace"
            )
            return None
        for k, seg in enumerate(segments):
            if seg == "#" and (namespace and k == len(segments) - 1):
                continue
            if seg in _PLACEHOLDERS or seg == "+":
                continue
            if not seg or any(c in seg for c in "#+{}"):
                self.issue(where, "D003", f"topic {value!r} has a bad segment {seg!r}")
                return None
        return value

    def target(self, where: str, value: Any, unit: str | None) -> dict[str, str] | None:
        if isinstance(value, str):
            targets = {"*": value}
        elif isinstance(value, dict) and value and all(isinstance(v, str) for v in value.values()):
            targets = {str(k): v for k, v in value.items()}
        else:
            self.issue(
                where, "D005", f"field must be a contract field or {{kind: field}}: {value!r}"
            )
            return None
        ok = True
        for kind, name in targets.items():
            kinds = list(self.kinds) if kind == "*" else [kind]
            if kind != "*" and kind not in self.kinds:
                self.issue(where, "D005", f"{kind!r} is not a device kind ({sorted(self.kinds)})")
                ok = False
                continue
            if name == "*":
                continue
            owners = [k for k in kinds if name in self.value_fields[k]]
            if not owners:
                self.issue(
                    where,
                    "D005",
                    f"{name!r} is not a value field of the "
                    + (f"{kind} readings contract" if kind != "*" else "readings contracts"),
                )
                ok = False
                continue
            if unit is not None:
                for k in owners:
                    want = self.value_fields[k][name].unit
                    if unit_factor(unit, want) is None:
                        self.issue(
                            where,
                            "D006",
                            f"unit {unit!r} does not convert to {name}'s unit {want!r} "
                            f"({k} readings contract)",
                        )
                        ok = False
        return targets if ok else None


def unit_factor(unit: str, contract_unit: str | None) -> float | None:
    """What multiplies a value in ``unit`` to give it in ``contract_unit``; None if unknown."""
    if contract_unit is None or unit == contract_unit:
        return 1.0
    return UNIT_FACTORS.get((unit, contract_unit))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _parse(
    file: str, data: Any, registry: ContractRegistry
) -> tuple[Decoder | None, list[LintIssue]]:
    lint = _Lint(file, registry)
    if not isinstance(data, dict):
        lint.issue("", "D001", "a decoder file is a mapping with decoder, description, streams")
        return None, lint.issues
    known = {"decoder", "description", "namespace", "streams"}
    for key in data:
        if key not in known:
            lint.issue(str(key), "D002", f"unknown key {key!r} (known: {sorted(known)})")
    name = data.get("decoder")
    stem = Path(file).name.removesuffix(".yaml")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        lint.issue("decoder", "D001", f"decoder name {name!r} must match {_NAME.pattern}")
        name = stem
    elif name != stem:
        lint.issue("decoder", "D001", f"decoder {name!r} must be in a file named {name}.yaml")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        lint.issue("description", "D001", "say in a sentence which devices send this format")
        description = ""
    namespace: list[str] = []
    for k, pattern in enumerate(_as_list(data.get("namespace"))):
        topic = lint.topic(f"namespace[{k}]", pattern, namespace=True)
        if topic:
            namespace.append(topic)
    if "namespace" in data and not isinstance(data["namespace"], list):
        lint.issue("namespace", "D003", "namespace is a list of topic patterns")
    raw_streams = data.get("streams")
    if not isinstance(raw_streams, list) or not raw_streams:
        lint.issue("streams", "D001", "a decoder has at least one stream (a topic it decodes)")
        raw_streams = []
    streams = []
    for k, raw in enumerate(raw_streams):
        stream = _stream(lint, f"streams[{k}]", str(name), raw)
        if stream is not None:
            streams.append(stream)
    names = [s.name for s in streams]
    for dup in {n for n in names if names.count(n) > 1}:
        lint.issue("streams", "D001", f"stream name {dup!r} is used twice")
    if lint.issues:
        return None, lint.issues
    return (
        Decoder(
            name=str(name),
            description=str(description).strip(),
            streams=tuple(streams),
            namespace=tuple(namespace),
            namespace_regex=tuple(topic_regex(p) for p in namespace),
            path=Path(file),
        ),
        [],
    )


_STREAM_KEYS = {
    "name",
    "topic",
    "layout",
    "records",
    "record",
    "require",
    "time",
    "seq",
    "boot",
    "fields",
    "derive",
    "profile",
    "refuse",
    "problem",
}


def _stream(lint: _Lint, where: str, decoder: str, raw: Any) -> Stream | None:
    if not isinstance(raw, dict):
        lint.issue(where, "D001", "a stream is a mapping with name, topic and fields")
        return None
    before = len(lint.issues)
    for key in raw:
        if key not in _STREAM_KEYS:
            lint.issue(
                f"{where}.{key}", "D002", f"unknown key {key!r} (known: {sorted(_STREAM_KEYS)})"
            )
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        lint.issue(f"{where}.name", "D001", f"stream name {name!r} must match {_NAME.pattern}")
        name = "stream"
    topic = lint.topic(f"{where}.topic", raw.get("topic"))
    layout = raw.get("layout", "mapping")
    if layout not in ("envelope", "mapping"):
        lint.issue(f"{where}.layout", "D001", f"layout {layout!r} is not envelope or mapping")
    if layout == "envelope":
        extra = sorted(set(raw) - {"name", "topic", "layout"})
        if extra:
            lint.issue(where, "D002", f"the envelope layout takes no {', '.join(extra)}")
        if len(lint.issues) > before or topic is None:
            return None
        return Stream(decoder, name, topic, topic_regex(topic), "envelope")
    records = raw.get("records", "object")
    if records not in ("object", "list", "either"):
        lint.issue(f"{where}.records", "D001", f"records {records!r}: object, list or either")
    record_path = lint.path(f"{where}.record", raw.get("record", "")) or ()
    require = tuple(
        p
        for k, r in enumerate(_as_list(raw.get("require")))
        if (p := lint.path(f"{where}.require[{k}]", r))
    )
    # time
    time = raw.get("time", {"format": "received"})
    time_path: tuple[PathPart, ...] = ()
    time_format, zone, fallback = "received", "branch", None
    if not isinstance(time, dict):
        lint.issue(f"{where}.time", "D007", "time is {path, format[, zone][, fallback]}")
    else:
        time_format = time.get("format", "epoch_s")
        if time_format not in _TIME_FORMATS:
            lint.issue(
                f"{where}.time.format",
                "D007",
                f"format {time_format!r} is not one of {_TIME_FORMATS}",
            )
        if time_format != "received":
            time_path = lint.path(f"{where}.time.path", time.get("path")) or ()
        zone = time.get("zone", "branch")
        if time_format == "local" and zone != "branch":
            try:
                from zoneinfo import ZoneInfo

                ZoneInfo(str(zone))
            except (KeyError, ValueError, OSError):
                lint.issue(
                    f"{where}.time.zone", "D007", f"zone {zone!r} is not 'branch' or an IANA zone"
                )
        fallback = time.get("fallback")
        if fallback not in (None, "received"):
            lint.issue(f"{where}.time.fallback", "D007", "fallback is 'received' or absent")
    # seq
    seq = raw.get("seq", {"from": "time"})
    seq_from, seq_unit = "time", 1.0
    seq_path: tuple[PathPart, ...] = ()
    if not isinstance(seq, dict) or seq.get("from", "path") not in _SEQ_SOURCES:
        lint.issue(
            f"{where}.seq",
            "D008",
            f"seq is {{from: {'|'.join(_SEQ_SOURCES)}[, path][, unit: s|ms|us]}}",
        )
    else:
        seq_from = seq.get("from", "path")
        if seq_from == "path":
            seq_path = lint.path(f"{where}.seq.path", seq.get("path")) or ()
        unit = seq.get("unit", "s")
        if unit not in _SEQ_UNITS:
            lint.issue(
                f"{where}.seq.unit", "D008", "unit is s, ms or us (of the time a seq is taken from)"
            )
        seq_unit = _SEQ_UNITS.get(unit, 1.0)
        if seq_from == "time" and time_format == "received" and raw.get("refuse") is None:
            lint.issue(
                f"{where}.seq",
                "D008",
                "seq from the event time needs a time path; say 'from: received' to number "
                "messages by their arrival (a redelivered copy is then not a duplicate)",
            )
    boot_path = lint.path(f"{where}.boot", raw["boot"]) or () if "boot" in raw else ()
    reasons = lint.reason_codes()
    refuse = raw.get("refuse")
    if refuse is not None and refuse not in reasons:
        lint.issue(f"{where}.refuse", "D012", f"{refuse!r} is not a quarantine reason code")
    problem = raw.get("problem")
    problem_code: tuple[PathPart, ...] = ()
    problem_detail: tuple[PathPart, ...] = ()
    if problem is not None:
        if not isinstance(problem, dict) or set(problem) != {"code", "detail"}:
            lint.issue(f"{where}.problem", "D012", "problem is {code: path, detail: path}")
        else:
            problem_code = lint.path(f"{where}.problem.code", problem["code"]) or ()
            problem_detail = lint.path(f"{where}.problem.detail", problem["detail"]) or ()
    if refuse is not None:
        raw = {**raw, "fields": raw.get("fields") or [{"path": "*", "field": "*"}]}
    # fields
    rules = []
    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        lint.issue(f"{where}.fields", "D005", "a mapping stream maps at least one path to a field")
        raw_fields = []
    for k, rf in enumerate(raw_fields):
        rule = _field(lint, f"{where}.fields[{k}]", rf)
        if rule is not None:
            rules.append(rule)
    derived = []
    for k, rd in enumerate(_as_list(raw.get("derive"))):
        w = f"{where}.derive[{k}]"
        if not (
            isinstance(rd, dict) and isinstance(rd.get("ratio"), list) and len(rd["ratio"]) == 2
        ):
            lint.issue(w, "D009", "derive is {field: f, ratio: [numerator, denominator]}")
            continue
        target = lint.target(w, rd.get("field"), None)
        for part in rd["ratio"]:
            lint.target(w, part, None)
        if target:
            derived.append(Derived(target, str(rd["ratio"][0]), str(rd["ratio"][1])))
    profile = raw.get("profile")
    if profile is not None:
        kinds = [kind for kind, c in lint.kinds.items() if profile in c.profiles]
        if not kinds:
            lint.issue(
                f"{where}.profile",
                "D010",
                f"profile {profile!r} is not a profile of any readings contract",
            )
    if len(lint.issues) > before or topic is None:
        return None
    return Stream(
        decoder=decoder,
        name=name,
        topic=topic,
        regex=topic_regex(topic),
        layout="mapping",
        records=records,
        record_path=record_path,
        require=require,
        time_path=time_path,
        time_format=time_format,
        time_zone=str(zone),
        time_fallback=fallback,
        seq_from=seq_from,
        seq_path=seq_path,
        seq_unit_s=seq_unit,
        boot_path=boot_path,
        fields=tuple(rules),
        derive=tuple(derived),
        profile=None if profile is None else str(profile),
        refuse=None if refuse is None else str(refuse),
        problem_code=problem_code,
        problem_detail=problem_detail,
    )


_FIELD_KEYS = {"path", "field", "unit", "scale", "shape", "reduce", "absolute", "ignore"}


def _field(lint: _Lint, where: str, raw: Any) -> FieldRule | None:
    if not isinstance(raw, dict):
        lint.issue(
            where, "D005", "a field rule is {path, field[, unit][, scale][, shape][, reduce]}"
        )
        return None
    for key in raw:
        if key not in _FIELD_KEYS:
            lint.issue(
                f"{where}.{key}", "D002", f"unknown key {key!r} (known: {sorted(_FIELD_KEYS)})"
            )
    text = raw.get("path")
    wildcard = isinstance(text, str) and (text == "*" or text.endswith(".*"))
    if wildcard:
        assert isinstance(text, str)
        text = "" if text == "*" else text[:-2]
    path = lint.path(f"{where}.path", text)
    unit = raw.get("unit")
    if unit is not None and not isinstance(unit, str):
        lint.issue(f"{where}.unit", "D006", f"unit must be a string, not {unit!r}")
        unit = None
    targets = lint.target(f"{where}.field", raw.get("field"), unit)
    if targets is not None and wildcard != (set(targets.values()) == {"*"}):
        lint.issue(
            where,
            "D005",
            "a path ending in '*' maps to field '*' (each key to its own field), and only it does",
        )
        targets = None
    scale = raw.get("scale", 1)
    if type(scale) not in (int, float) or scale == 0:
        lint.issue(f"{where}.scale", "D006", f"scale must be a non-zero number, not {scale!r}")
        scale = 1
    shape = raw.get("shape", "any")
    if shape not in ("number", "list", "any"):
        lint.issue(f"{where}.shape", "D005", f"shape {shape!r}: number, list or any")
    ignore = raw.get("ignore", [])
    if not (isinstance(ignore, list) and all(isinstance(g, str) and g for g in ignore)):
        lint.issue(f"{where}.ignore", "D005", "ignore is a list of key patterns ('Node Control/*')")
        ignore = []
    elif ignore and not wildcard:
        lint.issue(
            f"{where}.ignore", "D005", "ignore belongs to a wildcard rule (a path ending in *)"
        )
    if raw.get("absolute", False) not in (True, False):
        lint.issue(f"{where}.absolute", "D005", "absolute is true or false")
    reduce = raw.get("reduce")
    if reduce not in (None, "sum", "mean"):
        lint.issue(f"{where}.reduce", "D005", f"reduce {reduce!r}: sum or mean")
    if path is None or targets is None or shape not in ("number", "list", "any"):
        return None
    factor = float(scale)
    if unit is not None:
        if wildcard:
            lint.issue(
                f"{where}.unit",
                "D006",
                "a wildcard rule maps keys to fields of different units: give each its rule",
            )
            return None
        # One factor per rule: every field it may fill must convert from the unit alike.
        factors = {
            unit_factor(unit, lint.value_fields[k][name].unit)
            for kind, name in targets.items()
            for k in (list(lint.kinds) if kind == "*" else [kind])
            if name in lint.value_fields[k]
        }
        if len(factors) != 1 or None in factors:
            lint.issue(
                f"{where}.unit",
                "D006",
                f"unit {unit!r} converts differently to the fields this rule fills: one rule "
                "per unit",
            )
            return None
        factor *= factors.pop() or 1.0
    return FieldRule(
        path=path,
        targets=targets,
        factor=factor,
        shape=shape,
        reduce=reduce,
        wildcard=wildcard,
        absolute=raw.get("absolute") is True,
        ignore=tuple(str(g) for g in ignore),
    )


def lint_decoder(path: Path, registry: ContractRegistry | None = None) -> list[LintIssue]:
    """Every problem of one decoder file (file, YAML path, reason, code D0xx)."""
    registry = registry or load_registry()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return [LintIssue(str(path), "", "D001", f"not readable YAML: {exc}")]
    return _parse(str(path), data, registry)[1]


def lint_catalogue(files: Sequence[Path], registry: ContractRegistry) -> list[LintIssue]:
    """Every problem of these decoder files, each alone, then together (one decoder a
    topic, no name twice)."""
    issues = [issue for f in files for issue in lint_decoder(f, registry)]
    if not issues:
        try:
            load_catalogue(files, registry)
        except ContractInvalidError as exc:
            issues = list(exc.issues)
    return issues


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    return out


def load_catalogue(
    paths: Sequence[Path] = (DECODERS_DIR,), registry: ContractRegistry | None = None
) -> Catalogue:
    """The decoders of these files or folders; refuses a catalogue with any problem, or
    with two streams that would both claim one topic pattern."""
    registry = registry or load_registry()
    decoders: dict[str, Decoder] = {}
    issues: list[LintIssue] = []
    for path in _files(paths):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            issues.append(LintIssue(str(path), "", "D001", f"not readable YAML: {exc}"))
            continue
        decoder, found = _parse(str(path), data, registry)
        issues.extend(found)
        if decoder is None:
            continue
        if decoder.name in decoders:
            issues.append(
                LintIssue(
                    str(path), "decoder", "D001", f"decoder {decoder.name!r} is defined twice"
                )
            )
            continue
        decoders[decoder.name] = decoder
    seen: dict[str, str] = {}
    for decoder in decoders.values():
        for stream in decoder.streams:
            shape = re.sub(r"\{[a-z]+\}", "+", stream.topic)
            if shape in seen:
                issues.append(
                    LintIssue(
                        str(decoder.path),
                        f"streams.{stream.name}.topic",
                        "D011",
                        f"topic {stream.topic!r} is also {seen[shape]}'s: a topic has one decoder",
                    )
                )
            seen[shape] = stream.key
    if issues:
        raise ContractInvalidError(str(paths[0]) if paths else "decoders", issues)
    by_kind = sorted(
        {
            f"{kind}@{name}"
            for s in (st for d in decoders.values() for st in d.streams)
            for rule in s.fields
            if len(rule.targets) > 1 or "*" not in rule.targets
            for kind, name in rule.targets.items()
            if name != "*"
        }
    )
    return Catalogue(decoders=decoders, by_kind_columns=tuple(by_kind))


@cache
def default_catalogue() -> Catalogue:
    """The shipped decoders, checked against the shipped contracts (once per process)."""
    return load_catalogue((DECODERS_DIR,), load_registry())
