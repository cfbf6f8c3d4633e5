"""What the pytest fixtures hand a plugin author: a host to run plugins in, and a recording API.

:class:`PluginHarness` (the ``plugin_host`` fixture) is a real
:class:`~services_ai_plugins.PluginHost` on memory storage and fake host
services: plugins go through the same install, approval, code hash, loading
and call loop as in production. :class:`MockAPI` (the ``mock_api`` fixture) is
the real permission layer over the same fake services, recording every call,
for unit tests that call a hook method directly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from services_ai_plugins import (
    Manifest,
    MemoryStorage,
    PluginAPI,
    PluginHost,
    PluginRecord,
    SandboxPolicy,
    pack_plugin,
)
from services_ai_plugins._kinds import MANIFEST_NAME
from services_ai_plugins._secrets import throwaway_keys
from services_ai_plugins.events import Context
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import DeniedCall, HookTrace, Isolation

from .fakes import FakeHostServices

__all__ = ["APICall", "MockAPI", "PluginHarness", "find_plugin_folder"]

#: The tenant fixtures use unless told otherwise.
DEFAULT_TENANT: Final = "acme"
#: The actor of the harness's registry steps in the audit trail.
ACTOR: Final = "pytest"


def find_plugin_folder(start: str | os.PathLike[str]) -> Path | None:
    """The nearest folder at or above ``start`` that holds a ``manifest.json``, or None."""
    here = Path(start).resolve()
    for folder in (here, *here.parents) if here.is_dir() else here.parents:
        if (folder / MANIFEST_NAME).is_file():
            return folder
    return None


@attrs.frozen
class APICall:
    """One call a plugin made through a :class:`MockAPI`."""

    method: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    #: What it returned (None when it raised).
    result: Any = None
    #: What it raised (``PermissionDenied`` for a refused call), or None.
    error: BaseException | None = None


class MockAPI:
    """The real :class:`PluginAPI` for one plugin and tenant over fake services, recording calls.

    Its settings are the manifest's defaults (:meth:`set_settings` changes
    them; without a manifest the fake services answer). Its grants are the
    plugin's declared ``permissions`` (the manifest's), as an
    admin's approval gives them; :meth:`grant` adds one of the manifest's
    ``optional_permissions`` for the tenant, as an admin can, and :meth:`revoke`
    takes one away. A call without its permission raises ``PermissionDenied``,
    exactly as in production, and is recorded (in :attr:`calls` and
    :attr:`denied`). Pass it as a hook's ``api``::

        def test_greets(mock_api, fake_services):
            lead = fake_services.make_lead(name="Ada")
            MyPlugin().lead_created(lead=lead, api=mock_api)
            mock_api.assert_called("send_notification")
    """

    def __init__(
        self,
        services: FakeHostServices,
        *,
        plugin_id: str = "test-plugin",
        tenant: str = DEFAULT_TENANT,
        permissions: Iterable[str] = (),
        optional: Iterable[str] | None = None,
        settings: Mapping[str, Any] | None = None,
        api_class: type[PluginAPI] = PluginAPI,
    ) -> None:
        #: The fake host services behind the API (``fake_services``).
        self.services: Final = services
        self.plugin_id: Final = plugin_id
        self.tenant: Final = tenant
        #: Every call, in order.
        self.calls: list[APICall] = []
        #: Every refused call, as the host's ``on_denied`` hears of it.
        self.denied: list[DeniedCall] = []
        self._optional = None if optional is None else frozenset(optional)
        self._grants = set(permissions)
        self._settings = dict(settings) if settings is not None else None
        self._api_class = api_class
        self._methods = frozenset(api_class.permissions())
        self._api = self._build()

    @classmethod
    def for_manifest(
        cls,
        services: FakeHostServices,
        manifest: Manifest,
        *,
        tenant: str = DEFAULT_TENANT,
        api_class: type[PluginAPI] = PluginAPI,
    ) -> MockAPI:
        """The API a plugin with ``manifest`` gets once approved: its declared permissions."""
        return cls(
            services,
            plugin_id=manifest.id,
            tenant=tenant,
            permissions=manifest.permissions,
            optional=manifest.optional_permissions,
            settings={spec.name: spec.default for spec in manifest.settings},
            api_class=api_class,
        )

    def _build(self) -> PluginAPI:
        return self._api_class(
            self.plugin_id,
            self.services,
            tenant=self.tenant,
            grants=frozenset(self._grants),
            context=Context(tenant=self.tenant),
            on_denied=self.denied.append,
            settings=self._settings,
        )

    @property
    def grants(self) -> frozenset[str]:
        """The permissions the plugin holds now."""
        return frozenset(self._grants)

    def grant(self, permission: str) -> None:
        """Grant one of the plugin's optional permissions for the tenant, as an admin can.

        :raises ValueError: when the manifest does not list it as optional (an
            admin could not grant it either); any permission when no manifest is known.
        """
        if self._optional is not None and permission not in self._optional:
            listed = ", ".join(sorted(self._optional)) or "none"
            raise ValueError(
                f"{permission!r} is not an optional permission of plugin {self.plugin_id!r} "
                f"(optional permissions: {listed}); declare it in the manifest"
            )
        self._grants.add(permission)
        self._api = self._build()

    def set_settings(self, **values: Any) -> None:
        """Change the setting values the plugin reads (``api.get_setting``), as an admin would."""
        self._settings = {**(self._settings or {}), **values}
        self._api = self._build()

    def revoke(self, permission: str) -> None:
        """Take a permission away, to test how the plugin copes without it."""
        self._grants.discard(permission)
        self._api = self._build()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._api, name)
        if name not in self._methods or not callable(value):
            return value
        return _Recorded(name, value, self.calls)

    def called(self, method: str) -> list[APICall]:
        """The calls of one API method, in order."""
        return [call for call in self.calls if call.method == method]

    def assert_called(self, method: str, *args: Any, **kwargs: Any) -> APICall:
        """The first call of ``method`` with these arguments (all of them, if none are given).

        :raises AssertionError: naming the calls that were made instead.
        """
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        for call in self.called(method):
            if (not args or call.args == args) and all(
                call.kwargs.get(key, _MISSING) == value for key, value in kwargs.items()
            ):
                return call
        wanted = _signature(method, args, kwargs) if args or kwargs else f"{method}(...)"
        raise AssertionError(f"expected a call {wanted}; {_made(self.calls)}")

    def assert_not_called(self, method: str) -> None:
        """:raises AssertionError: when ``method`` was called."""
        __tracebackhide__ = True
        made = self.called(method)
        if made:
            raise AssertionError(f"expected no call of {method}(); {_made(made)}")

    def __repr__(self) -> str:
        return (
            f"MockAPI(plugin_id={self.plugin_id!r}, tenant={self.tenant!r}, "
            f"grants={sorted(self._grants)!r}, {len(self.calls)} calls)"
        )


_MISSING: Final = object()


class _Recorded:
    """An API method that records its call into ``calls``."""

    __slots__ = ("calls", "method", "name")

    def __init__(self, name: str, method: Callable[..., Any], calls: list[APICall]) -> None:
        self.name = name
        self.method = method
        self.calls = calls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self.method(*args, **kwargs)
        except Exception as error:
            self.calls.append(APICall(self.name, args, dict(kwargs), None, error))
            raise
        self.calls.append(APICall(self.name, args, dict(kwargs), result, None))
        return result


def _signature(method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{method}({', '.join(parts)})"


def _made(calls: Sequence[APICall]) -> str:
    if not calls:
        return "the plugin made no API call"
    lines = []
    for call in calls:
        outcome = f" -> {type(call.error).__name__}: {call.error}" if call.error else ""
        lines.append(f"  {_signature(call.method, call.args, call.kwargs)}{outcome}")
    return "the calls made were:\n" + "\n".join(lines)


def _sandbox_policy(sandbox: bool) -> SandboxPolicy:
    """Every plugin in a worker process (as a host runs uploads), or every one in this process."""
    where = Isolation.PROCESS if sandbox else Isolation.INPROCESS
    return SandboxPolicy(isolation=dict.fromkeys(SourceKind, where))


class PluginHarness:
    """A real host on memory storage and fake services, for running plugins in tests.

    :meth:`add` installs, approves and enables a plugin for a tenant in one
    call, from a folder, a ZIP, a module, a class or an instance; :meth:`fire`
    calls a hook through the real call loop (tenant filter, the plugin's own
    ``api`` and ``settings``, permission checks, isolation) with the documented
    example payloads for anything not given, and returns what each plugin did::

        def test_lead_created(plugin_host):
            plugin_host.add()  # the plugin whose manifest.json is above this test
            trace = plugin_host.fire("lead_created")
            trace.assert_ok()
            assert plugin_host.services.notifications("acme")

    Plugins run in the test's process, where a test can look at them
    (:meth:`plugin`); with ``sandbox=True`` (the marker's ``sandbox=True``)
    they run in worker processes, as a host runs uploaded archives, so a
    test sees what the sandbox allows and refuses.
    """

    def __init__(
        self,
        services: FakeHostServices,
        plugins_dir: str | os.PathLike[str],
        *,
        tenant: str = DEFAULT_TENANT,
        project: str | os.PathLike[str] | None = None,
        strict: bool = False,
        sandbox: bool = False,
    ) -> None:
        #: The fake host services plugins act on (``fake_services``).
        self.services: Final = services
        #: The tenant :meth:`add` and :meth:`fire` use by default.
        self.tenant: Final = tenant
        self._project = Path(project) if project is not None else None
        self._plugins_dir = Path(plugins_dir)
        #: The host itself, for anything the harness does not wrap.
        self.host: Final = PluginHost(
            services,
            storage=MemoryStorage(),
            plugins_dir=self._plugins_dir / "installed",
            entry_points=False,
            strict=strict,
            refresh_interval=0,
            sandbox=_sandbox_policy(sandbox),
            secret_keys=throwaway_keys(),  # the memory storage dies with the harness
        )

    def add(
        self,
        plugin: object = None,
        *,
        tenants: Iterable[str] | None = None,
        settings: Mapping[str, object] | None = None,
        grant: Iterable[str] = (),
        manifest: Manifest | Mapping[str, Any] | None = None,
    ) -> str:
        """Install, approve and enable a plugin for the tenants; return its id.

        ``plugin`` is a folder or a ``.zip`` path, a module, a class or an
        instance (with ``manifest`` or a ``manifest`` attribute), or None for the
        plugin of the project under test (the nearest folder holding a
        ``manifest.json`` above the test file). ``settings`` are set for every
        tenant; ``grant`` names optional permissions to grant there.
        """
        record = self._install(plugin, manifest)
        registry = self.host.registry
        registry.approve(record.id, actor=ACTOR)
        for tenant in tenants if tenants is not None else (self.tenant,):
            registry.enable(record.id, tenant, actor=ACTOR, with_requirements=True)
            if settings:
                registry.set_settings(record.id, tenant, settings, actor=ACTOR)
            for permission in grant:
                registry.grant(record.id, tenant, permission, actor=ACTOR)
        return record.id

    def _install(
        self, plugin: object, manifest: Manifest | Mapping[str, Any] | None
    ) -> PluginRecord:
        if plugin is None:
            if self._project is None:
                raise ValueError(
                    "no manifest.json above this test: pass the plugin to add() "
                    "(a folder, a ZIP, a module or a class)"
                )
            plugin = self._project
        if isinstance(plugin, (str, os.PathLike)):
            path = Path(plugin)
            if path.is_dir():
                self._plugins_dir.mkdir(parents=True, exist_ok=True)
                built = Path(tempfile.mkdtemp(dir=self._plugins_dir, prefix="packed-"))
                # A project folder also holds what is not the plugin's (a virtualenv,
                # links a tool made, pytest's own temporary folders, which may hold
                # this very harness): pack a copy without them, as the author would.
                copy = built / path.name
                here = self._plugins_dir.resolve()
                shutil.copytree(path, copy, symlinks=True, ignore=_NotPluginFiles(here))
                path = pack_plugin(copy, built / f"{path.name}.zip").path
            return self.host.install(path, actor=ACTOR, reinstall=True)
        if isinstance(plugin, (type, types.ModuleType)) or manifest is not None:
            return self.host.install_object(plugin, actor=ACTOR, manifest=manifest)
        return self.host.install_object(plugin, actor=ACTOR)

    def plugin(self, plugin_id: str) -> object:
        """The loaded plugin object (to look at what it kept)."""
        return self.host.plugins()[plugin_id]

    def fire(self, hook: str, *, tenant: str | None = None, **arguments: Any) -> HookTrace:
        """Call ``hook`` for ``tenant`` through the host; report each plugin's part.

        Arguments not given are filled: ``context`` with ``Context(tenant=...)``,
        payloads with their documented examples at the tenant.
        """
        return self.host.trace_hook(hook, **self._arguments(hook, tenant, arguments))

    def call(self, hook: str, *, tenant: str | None = None, **arguments: Any) -> Any:
        """Call ``hook`` as the app would and return the combined result (see :meth:`fire`)."""
        return self.host.call_hook(hook, **self._arguments(hook, tenant, arguments))

    def _arguments(self, hook: str, tenant: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
        from services_ai_plugins._examples import sample_arguments  # noqa: PLC0415

        return sample_arguments(self.host.pm, hook, tenant or self.tenant, given)

    def failures(self, plugin_id: str | None = None) -> list[Any]:
        """The failures recorded so far, newest first."""
        return self.host.failures(plugin_id)

    def close(self) -> None:
        """Unload every plugin."""
        self.host.close()


class _NotPluginFiles:
    """What a copy of a project folder leaves out: links, virtualenvs, dot-entries, caches,
    and any folder holding ``work`` (the harness's own)."""

    def __init__(self, work: Path) -> None:
        self.work = work

    def __call__(self, folder: str, names: list[str]) -> set[str]:
        base = Path(folder)
        return {
            name
            for name in names
            if name.startswith(".")
            or name == "__pycache__"
            or (base / name).is_symlink()
            or (base / name / "pyvenv.cfg").is_file()
            or self.work.is_relative_to((base / name).resolve())
        }
