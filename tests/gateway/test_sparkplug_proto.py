"""The committed ``sparkplug_b_pb2`` module matches the vendored ``sparkplug_b.proto``.

protoc is not needed by the tests (gateway/sparkplug/README.md): the .proto is read here
with a small parser of its declarations (messages, enums, oneofs, fields: label, type,
name, number) and compared with the descriptors compiled into the module, so an edit of
the .proto without `make proto` (or the reverse) fails.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.sparkplug import sparkplug_b_pb2 as pb

FOLDER = Path(pb.__file__).parent
PROTO = FOLDER / "sparkplug_b.proto"
PROTO_SHA256 = "4432c5c483b7fb9732d0594c98a2e97dca5e517e39c5374a8b918d837f0b4a19"

_TOKEN = re.compile(r"[A-Za-z_][\w.]*|\d+|[{}=;]")
_SCALARS = {
    "double": FieldDescriptor.TYPE_DOUBLE,
    "float": FieldDescriptor.TYPE_FLOAT,
    "uint32": FieldDescriptor.TYPE_UINT32,
    "uint64": FieldDescriptor.TYPE_UINT64,
    "bool": FieldDescriptor.TYPE_BOOL,
    "string": FieldDescriptor.TYPE_STRING,
    "bytes": FieldDescriptor.TYPE_BYTES,
}


def _declared() -> set[tuple[str, ...]]:
    """(kind, scope, name, number, label, type) of every declaration in the .proto."""
    text = re.sub(r"//[^\n]*", "", PROTO.read_text())
    tokens = _TOKEN.findall(text)
    out: set[tuple[str, ...]] = set()
    scope: list[tuple[str, str]] = []  # (kind, name)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("message", "enum", "oneof"):
            owner = ".".join(n for k, n in scope if k != "oneof")
            scope.append((tok, tokens[i + 1]))
            if tok == "oneof":
                out.add((tok, owner, tokens[i + 1]))
            else:
                out.add((tok, f"{owner}.{tokens[i + 1]}" if owner else tokens[i + 1]))
            i += 3  # kind, name, {
        elif tok == "}":
            scope.pop()
            i += 1
        elif tok in ("syntax", "package", "option", "extensions"):
            i = tokens.index(";", i) + 1
        else:  # a field or an enum value
            end = tokens.index(";", i)
            decl = tokens[i:end]
            owner = ".".join(n for k, n in scope if k != "oneof")
            if scope[-1][0] == "enum":
                name, _eq, number = decl
                out.add(("value", owner, name, number))
            else:
                if decl[0] in ("optional", "repeated"):
                    label, decl = decl[0], decl[1:]
                else:
                    label = "oneof:" + scope[-1][1]
                kind, name, _eq, number = decl
                out.add(("field", owner, name, number, label, kind.rsplit(".", 1)[-1]))
            i = end + 1
    return out


def _compiled() -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()

    def enum(desc: EnumDescriptor, owner: str) -> None:
        name = f"{owner}.{desc.name}" if owner else desc.name
        out.add(("enum", name))
        for value in desc.values:
            out.add(("value", name, value.name, str(value.number)))

    def message(desc: Descriptor, owner: str) -> None:
        name = f"{owner}.{desc.name}" if owner else desc.name
        out.add(("message", name))
        for oneof in desc.oneofs:
            out.add(("oneof", name, oneof.name))
        for f in desc.fields:
            if f.containing_oneof is not None:
                label = "oneof:" + f.containing_oneof.name
            else:
                label = "repeated" if f.label == FieldDescriptor.LABEL_REPEATED else "optional"
            if f.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_ENUM):
                kind = (f.message_type or f.enum_type).name
            else:
                kind = next(k for k, v in _SCALARS.items() if v == f.type)
            out.add(("field", name, f.name, str(f.number), label, kind))
        for nested in desc.nested_types:
            message(nested, name)
        for nested_enum in desc.enum_types:
            enum(nested_enum, name)

    for top in pb.DESCRIPTOR.message_types_by_name.values():
        message(top, "")
    for top_enum in pb.DESCRIPTOR.enum_types_by_name.values():
        enum(top_enum, "")
    return out


def test_the_vendored_proto_is_tahus() -> None:
    assert hashlib.sha256(PROTO.read_bytes()).hexdigest() == PROTO_SHA256
    assert "SPDX-License-Identifier: EPL-2.0" in PROTO.read_text()
    assert (FOLDER / "LICENSE-EPL-2.0").read_text().startswith("Eclipse Public License - v 2.0")


def test_the_compiled_module_matches_the_proto() -> None:
    declared, compiled = _declared(), _compiled()
    assert ("field", "Payload.Metric", "int_value", "10", "oneof:value", "uint32") in declared
    assert ("value", "DataType", "Int32", "3") in declared
    assert declared == compiled, (sorted(declared - compiled), sorted(compiled - declared))
    assert pb.DESCRIPTOR.name == "sparkplug_b.proto"
    assert pb.DESCRIPTOR.package == "org.eclipse.tahu.protobuf"
