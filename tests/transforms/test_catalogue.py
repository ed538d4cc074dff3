"""The decoder catalogue's lint: a mapping that does not fit the contracts is refused with
the file, the YAML path and the reason, by ``energylake decoders lint`` and by
``energylake contracts lint`` (which checks the catalogue against the contracts it lints)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from contracts import load_registry
from contracts.errors import ContractInvalidError
from transforms.catalogue import DECODERS_DIR, lint_decoder, load_catalogue, parse_path

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = load_registry(ROOT / "contracts")
GOOD = {
    "decoder": "acme",
    "description": "Acme meters.",
    "streams": [
        {
            "name": "data",
            "topic": "acme/{device}/data",
            "time": {"path": "t", "format": "epoch_s"},
            "seq": {"from": "path", "path": "n"},
            "fields": [{"path": "p", "field": "power_kw", "unit": "W"}],
        }
    ],
}


def write(folder: Path, data: object, name: str = "acme") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def codes(path: Path) -> dict[str, str]:
    return {f"{i.path} {i.code}": i.message for i in lint_decoder(path, REGISTRY)}


def test_the_shipped_catalogue_is_clean() -> None:
    for path in sorted(DECODERS_DIR.glob("*.yaml")):
        assert lint_decoder(path, REGISTRY) == [], path
    catalogue = load_catalogue((DECODERS_DIR,), REGISTRY)
    assert set(catalogue.decoders) == {
        "canonical",
        "tasmota",
        "shelly_pro3em",
        "thingsboard",
        "sparkplug_b",
    }


def test_a_good_file_is_clean(tmp_path: Path) -> None:
    assert codes(write(tmp_path, GOOD)) == {}


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        (
            {"fields": [{"path": "p", "field": "power_mw"}]},
            "streams[0].fields[0].field D005",
            "'power_mw' is not a value field of the readings contracts",
        ),
        (
            {"fields": [{"path": "p", "field": "energy_import_kwh", "unit": "W"}]},
            "streams[0].fields[0].field D006",
            "unit 'W' does not convert to energy_import_kwh's unit 'kWh'",
        ),
        (
            {"fields": [{"path": "a..b", "field": "power_kw"}]},
            "streams[0].fields[0].path D004",
            "path 'a..b' is not dotted keys",
        ),
        (
            {"fields": [{"path": "p", "field": {"boiler": "power_kw"}}]},
            "streams[0].fields[0].field D005",
            "'boiler' is not a device kind",
        ),
        (
            {"fields": [{"path": "p", "field": {"solar": "voltage_l1_v"}}]},
            "streams[0].fields[0].field D005",
            "'voltage_l1_v' is not a value field of the solar readings contract",
        ),
        ({"topic": "acme/+/data"}, "streams[0].topic D003", "exactly one {device} segment"),
        (
            {"time": {"path": "t", "format": "fortnights"}},
            "streams[0].time.format D007",
            "fortnights",
        ),
        (
            {"time": {"format": "received"}, "seq": {"from": "time"}},
            "streams[0].seq D008",
            "seq from the event time needs a time path",
        ),
        ({"profile": "half_phase"}, "streams[0].profile D010", "not a profile of any readings"),
        ({"colour": "blue"}, "streams[0].colour D002", "unknown key 'colour'"),
        (
            {"fields": [{"path": "values.*", "field": "*", "unit": "W"}]},
            "streams[0].fields[0].unit D006",
            "a wildcard rule maps keys to fields of different units",
        ),
        (
            {
                "fields": [
                    {
                        "path": "p",
                        "field": {"meter": "power_kw", "solar": "voltage_v"},
                        "unit": "kW",
                    }
                ]
            },
            "streams[0].fields[0].field D006",
            "unit 'kW' does not convert to voltage_v's unit 'V'",
        ),
        (
            {"fields": [{"path": "p", "field": "power_kw", "scale": 0}]},
            "streams[0].fields[0].scale D006",
            "non-zero number",
        ),
    ],
)
def test_a_mapping_that_does_not_fit_the_contract_names_file_path_and_reason(
    tmp_path: Path, change: dict[str, object], where: str, says: str
) -> None:
    data = {**GOOD, "streams": [{**GOOD["streams"][0], **change}]}  # type: ignore[dict-item]
    found = codes(write(tmp_path, data))
    assert where in found, found
    assert says in found[where], found[where]


def test_a_decoder_must_live_in_a_file_of_its_name(tmp_path: Path) -> None:
    found = codes(write(tmp_path, GOOD, name="other"))
    assert "must be in a file named acme.yaml" in found["decoder D001"]


def test_two_decoders_claiming_one_topic_are_refused(tmp_path: Path) -> None:
    shutil.copy(DECODERS_DIR / "tasmota.yaml", tmp_path / "tasmota.yaml")
    clash = {**GOOD, "streams": [{**GOOD["streams"][0], "topic": "tele/{device}/SENSOR"}]}
    write(tmp_path, clash)
    with pytest.raises(ContractInvalidError) as caught:
        load_catalogue((tmp_path,), REGISTRY)
    [issue] = caught.value.issues
    assert issue.code == "D011"
    assert "a topic has one decoder" in issue.message


def test_paths() -> None:
    assert parse_path("ENERGY.Voltage[1]") == ("ENERGY", "Voltage", 1)
    assert parse_path("") == ()
    assert parse_path("a.b.c") == ("a", "b", "c")
    for bad in ("a..b", ".a", "a.", "[x]", "a[1"):
        assert parse_path(bad) is None, bad


ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))


def _cli(*args: str, env_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    if env_dir is not None:
        env["ENERGYLAKE_DECODERS_DIR"] = str(env_dir)
    return subprocess.run(
        [ENERGYLAKE, *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )


def test_the_commands_exit_1_naming_the_problem(tmp_path: Path) -> None:
    stream = {**GOOD["streams"][0], "fields": [{"path": "p", "field": "watts"}]}  # type: ignore[index]
    bad = write(tmp_path, {**GOOD, "streams": [stream]})
    out = _cli("decoders", "lint", str(bad))
    assert out.returncode == 1, out
    assert f"{bad}: streams[0].fields[0].field: 'watts' is not a value field" in out.stderr
    (tmp_path / "ok").mkdir()
    assert _cli("decoders", "lint", str(write(tmp_path / "ok", GOOD))).returncode == 0
    # contracts lint checks the configured catalogue against the contracts
    shutil.copy(DECODERS_DIR / "tasmota.yaml", tmp_path / "tasmota.yaml")
    out = _cli("contracts", "lint", env_dir=tmp_path)
    assert out.returncode == 1, out
    assert "'watts' is not a value field" in out.stderr
    bad.unlink()
    out = _cli("contracts", "lint", env_dir=tmp_path)
    assert out.returncode == 0, out
    assert "13 contract(s) OK, 1 decoder(s) OK" in out.stdout
