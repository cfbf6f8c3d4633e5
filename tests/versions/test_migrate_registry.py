"""Settings migration over what a real Registry stores: sealed secrets, set values only, and
what the tenant reads back under the new schema."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from services_ai_plugins import Manifest, MemoryStorage, Registry, SettingsError
from services_ai_plugins._versions import migrate_settings

fernet = pytest.importorskip("cryptography.fernet")

KEY = fernet.Fernet.generate_key().decode("ascii")
SECRET = "sk-live-0123456789"
OLD_SETTINGS: list[dict[str, Any]] = [
    {"name": "token", "type": "secret"},
    {"name": "webhook", "type": "secret"},
    {"name": "label", "type": "string", "default": "CRM"},
    {"name": "limit", "type": "integer", "default": 10},
    {"name": "retired", "type": "boolean"},
]


def manifest(version: str, settings: list[dict[str, Any]]) -> Manifest:
    return Manifest.from_dict(
        {"id": "crm-sync", "name": "Crm Sync", "version": version, "settings": settings}
    )


@pytest.fixture
def registry() -> Registry:
    registry = Registry(MemoryStorage(), secret_keys=[KEY])
    registry.install(manifest("1.0.0", OLD_SETTINGS), actor="dev", code_hash="0" * 64)
    registry.approve("crm-sync", actor="admin")
    registry.set_settings(
        "crm-sync",
        "acme",
        {"token": SECRET, "webhook": "https://hooks.example/x", "limit": 20, "retired": True},
        actor="owner",
    )
    return registry


def read_after_upgrade(registry: Registry, new: Manifest, settings: dict[str, Any]) -> Any:
    """What the tenant would read with ``new`` running and ``settings`` stored (the
    registry's own read of records: defaults for absent keys, secrets opened)."""
    record = registry.plugin("crm-sync")
    upgraded = attrs.evolve(
        record, manifest=new.to_dict(), version=str(new.version), revision=record.revision + 100
    )
    stored = registry.tenant("crm-sync", "acme")
    assert stored is not None
    return registry._settings(upgraded, attrs.evolve(stored, settings=settings), strict=True)


def test_an_upgrade_keeps_the_sealed_secret_and_the_values_that_fit(registry: Registry) -> None:
    stored = registry.tenant("crm-sync", "acme")
    assert stored is not None
    assert set(stored.settings) == {"token", "webhook", "limit", "retired"}  # defaults not stored
    new = manifest(
        "1.1.0",
        [
            {"name": "token", "type": "secret", "required": True},
            {"name": "webhook", "type": "string"},  # no longer secret: not carried
            {"name": "label", "type": "string", "default": "CRM"},
            {"name": "limit", "type": "number", "default": 15, "max": 50},
            {"name": "region", "type": "choice", "choices": ["eu", "us"], "default": "eu"},
        ],
    )
    migrated = migrate_settings(
        manifest("1.0.0", OLD_SETTINGS).settings, new.settings, stored.settings
    )
    assert migrated == {"token": stored.settings["token"], "limit": 20}
    assert SECRET not in repr(migrated)
    assert read_after_upgrade(registry, new, migrated) == {
        "token": SECRET,
        "webhook": None,
        "label": "CRM",
        "limit": 20,
        "region": "eu",
    }


def test_a_required_secret_that_becomes_plain_is_refused_without_showing_it(
    registry: Registry,
) -> None:
    stored = registry.tenant("crm-sync", "acme")
    assert stored is not None
    new = manifest("2.0.0", [{"name": "token", "type": "string", "required": True}])
    with pytest.raises(SettingsError) as caught:
        migrate_settings(manifest("1.0.0", OLD_SETTINGS).settings, new.settings, stored.settings)
    assert [p.path for p in caught.value.problems] == ["token"]
    text = str(caught.value)
    assert SECRET not in text
    assert "$fernet" not in text
    assert str(stored.settings["token"]) not in text
