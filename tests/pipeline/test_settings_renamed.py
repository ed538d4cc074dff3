"""Settings carry their unit in their name; a renamed setting's old name still works, with a
DeprecationWarning, until users have moved (``gateway_roll_seconds`` -> ``gateway_roll_s``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.settings import load_settings


def test_the_new_name_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYLAKE_GATEWAY_ROLL_S", "0.25")
    settings = load_settings(data_dir=tmp_path)
    assert settings.gateway_roll_s == 0.25
    assert "gateway_roll_seconds" not in settings.model_dump()  # `config show` lists new names


def test_the_old_name_still_works_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENERGYLAKE_GATEWAY_ROLL_SECONDS", "0.5")
    with pytest.warns(DeprecationWarning, match="use gateway_roll_s"):
        settings = load_settings(data_dir=tmp_path)
    assert settings.gateway_roll_s == 0.5
    config = tmp_path / "energylake.toml"
    config.write_text("gateway_roll_seconds = 7\n")
    monkeypatch.delenv("ENERGYLAKE_GATEWAY_ROLL_SECONDS")
    with pytest.warns(DeprecationWarning, match="gateway_roll_seconds"):
        assert load_settings(config, data_dir=tmp_path).gateway_roll_s == 7


def test_the_new_name_wins_over_the_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYLAKE_GATEWAY_ROLL_SECONDS", "0.5")
    with pytest.warns(DeprecationWarning, match="gateway_roll_seconds"):
        settings = load_settings(data_dir=tmp_path, gateway_roll_s=3.0)
    assert settings.gateway_roll_s == 3.0
