"""The SERVICES_AI_PLUGINS setting: every key read and checked, one lazy host per process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from services_ai_plugins import BreakerPolicy, SandboxPolicy
from services_ai_plugins.django import conf
from services_ai_plugins.django.api import DjangoPluginAPI
from services_ai_plugins.django.storage import DjangoStorage
from services_ai_plugins.events import User


@pytest.fixture
def plugins(settings: Any) -> Any:
    """Set SERVICES_AI_PLUGINS to exactly the given keys (each change closes the host)."""

    def set_to(**keys: Any) -> None:
        settings.SERVICES_AI_PLUGINS = keys

    yield set_to
    conf.close_host()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"SANDBOXX": {}}, r"unknown keys \['SANDBOXX'\]"),
        ({"SANDBOX": {"timeout": 0}}, r"\['SANDBOX'\] is not a valid sandbox policy"),
        ({"SANDBOX": ["timeout"]}, r"\['SANDBOX'\] must be a dict"),
        ({"BREAKER": {"window": -1}}, r"\['BREAKER'\] is not a valid breaker policy"),
        ({"SERVICES": "no.such.module.Services"}, r"\['SERVICES'\] names 'no.such.module"),
        ({"TENANT_RESOLVER": 42}, r"\['TENANT_RESOLVER'\] must be a function"),
        ({"STORAGE": "django:nowhere"}, r"\['STORAGE'\] names database 'nowhere'"),
        ({"STORAGE": 7}, r"\['STORAGE'\] must be 'django'"),
        ({"ADMIN_UPLOAD_LIMIT": 0}, r"\['ADMIN_UPLOAD_LIMIT'\] must be a positive"),
        ({"ACTOR": ""}, r"\['ACTOR'\] must be a non-empty string"),
    ],
)
def test_a_wrong_value_names_its_key(plugins: Any, keys: dict[str, Any], message: str) -> None:
    plugins(**keys)
    with pytest.raises(ImproperlyConfigured, match=message):
        conf.get_host()
    assert conf.built_host() is None


def test_the_setting_must_be_a_dict(settings: Any) -> None:
    settings.SERVICES_AI_PLUGINS = ["SANDBOX"]
    with pytest.raises(ImproperlyConfigured, match="SERVICES_AI_PLUGINS must be a dict"):
        conf.plugins_settings()
    conf.close_host()


@pytest.mark.django_db(transaction=True)
def test_every_key_reaches_the_host(plugins: Any, tmp_path: Path) -> None:
    plugins(
        STORAGE="django",
        PLUGINS_DIR=str(tmp_path / "code"),
        SANDBOX={"timeout": 2.5, "trusted": ["legacy"]},
        BREAKER={"consecutive_failures": 2},
        HOST={"entry_points": False, "refresh_interval": 0.0},
        ACTOR="crm",
    )
    assert conf.built_host() is None  # nothing is built until asked for
    host = conf.get_host()
    assert conf.get_host() is host
    assert conf.built_host() is host
    assert isinstance(host.registry.storage, DjangoStorage)
    assert host.plugins_dir == tmp_path / "code"
    assert host.sandbox.policy == SandboxPolicy(timeout=2.5, trusted=["legacy"])
    assert host.breaker == BreakerPolicy(consecutive_failures=2)
    assert host._api_class is DjangoPluginAPI


@pytest.mark.django_db(transaction=True)
def test_changing_the_setting_closes_the_host(plugins: Any, settings: Any, tmp_path: Path) -> None:
    plugins(HOST={"entry_points": False}, PLUGINS_DIR=str(tmp_path))
    first = conf.get_host()
    settings.SERVICES_AI_PLUGINS = {"HOST": {"entry_points": False}, "ACTOR": "other"}
    assert conf.built_host() is None
    second = conf.get_host()
    assert second is not first
    with pytest.raises(Exception, match="closed"):
        first.registry.storage.generation()


def test_a_storage_file_or_url_is_opened_as_the_sdk_opens_it(plugins: Any, tmp_path: Path) -> None:
    plugins(STORAGE=str(tmp_path / "registry.db"), HOST={"entry_points": False})
    host = conf.get_host()
    assert type(host.registry.storage).__name__ == "SQLiteStorage"
    assert (tmp_path / "registry.db").is_file()


def _tenant_of(request: Any) -> Any:
    return (
        request.META.get("HTTP_X_ANSWER_KIND")
        and {
            "name": "acme",
            "pair": ("acme", User(id="7", tenant="acme", email="a@acme.example", name="Ada")),
            "none": None,
            "junk": 42,
        }[request.META["HTTP_X_ANSWER_KIND"]]
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("name", ("acme", None)),
        ("pair", ("acme", User(id="7", tenant="acme", email="a@acme.example", name="Ada"))),
        ("none", None),
    ],
)
def test_the_resolver_may_answer_a_name_a_pair_or_none(
    plugins: Any, kind: str, expected: Any
) -> None:
    plugins(TENANT_RESOLVER=f"{__name__}._tenant_of")
    request = RequestFactory().get("/", HTTP_X_ANSWER_KIND=kind)
    assert conf.resolve_tenant(request) == expected


def test_a_resolver_answering_something_else_is_a_configuration_error(plugins: Any) -> None:
    plugins(TENANT_RESOLVER=f"{__name__}._tenant_of")
    request = RequestFactory().get("/", HTTP_X_ANSWER_KIND="junk")
    with pytest.raises(ImproperlyConfigured, match=r"\['TENANT_RESOLVER'\] answered 42"):
        conf.resolve_tenant(request)


def test_without_a_resolver_the_request_tenant_attribute_is_the_tenant(plugins: Any) -> None:
    plugins()
    request = RequestFactory().get("/")
    assert conf.resolve_tenant(request) is None
    request.tenant = "globex"
    assert conf.resolve_tenant(request) == ("globex", None)


class _Broken:
    def __init__(self) -> None:
        raise RuntimeError("no database url")


def test_services_that_cannot_be_built_name_the_key(plugins: Any) -> None:
    plugins(SERVICES=f"{__name__}._Broken")
    with pytest.raises(ImproperlyConfigured, match=r"\['SERVICES'\] could not be built: Runtime"):
        conf.get_host()
