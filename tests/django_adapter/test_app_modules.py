"""The Django app's modules, walked inside the configured project (the package-wide walks of
tests/test_errors.py and tests/test_exports.py leave them out: they need Django settings)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from django.core.management.base import CommandError

import services_ai_plugins.django as app


def _modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(app.__path__, prefix=f"{app.__name__}.")
        if ".migrations." not in info.name
    ]


def test_every_module_of_the_app_imports_in_a_project() -> None:
    names = _modules()
    assert {"services_ai_plugins.django.conf", "services_ai_plugins.django.urls"} <= set(names)
    for name in names:
        importlib.import_module(name)


def test_the_app_defines_no_exception_class_of_its_own() -> None:
    """Errors raised here are Django's (ImproperlyConfigured, CommandError) or the SDK's
    (errors.py, the one exception tree); a private marker subclass of Django's
    CommandError is what callers still catch as CommandError."""
    for name in _modules():
        module = importlib.import_module(name)
        own = [
            value
            for value in vars(module).values()
            if inspect.isclass(value)
            and issubclass(value, BaseException)
            and value.__module__ == name
            and not (value.__name__.startswith("_") and issubclass(value, CommandError))
        ]
        assert own == [], name
