"""Configuration defaults are computed when asked for, not when tokenkeys is imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenkeys.config import Config, load_config


def test_default_registry_follows_xdg_data_home_set_after_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENKEYS_REGISTRY")
    monkeypatch.delenv("TOKENKEYS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    expected = str(tmp_path / "data" / "tokenkeys" / "registry.sqlite")
    assert Config().registry == expected
    assert load_config().registry == expected  # no file
    (tmp_path / "config" / "tokenkeys").mkdir(parents=True)
    (tmp_path / "config" / "tokenkeys" / "config.toml").write_text('service = "achats"\n')
    loaded = load_config()
    assert (loaded.registry, loaded.service) == (expected, "achats")
