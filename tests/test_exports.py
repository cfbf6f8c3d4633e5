"""The public API is exactly what ``services_ai_plugins.__all__`` lists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from types import ModuleType
from typing import Any, TypeVar

import pytest

import services_ai_plugins
import services_ai_plugins_testing

#: The public modules besides the top level: named by audience (``storage``, ``sandbox``,
#: ``tooling``, ``types``, ``errors``, ``web``, and ``admin``, the framework-neutral admin of
#: the ``admin`` extra) or by interface (``events``, ``hookspecs``), each with its own ``__all__``.
PUBLIC_MODULES = {
    "admin",
    "errors",
    "events",
    "hookspecs",
    "prometheus",
    "sandbox",
    "storage",
    "tooling",
    "types",
    "web",
}

#: The faces that import their names lazily, as the top level does.
LAZY_FACES = ("storage", "sandbox", "tooling", "types")

#: Modules a plain import must not load: the heavy ones, and cattrs.
HEAVY = ("_manifest", "_sqlite", "_registry", "events", "_archive", "_pool", "_check", "cattrs")


def _public(name: str) -> ModuleType:
    return importlib.import_module(f"services_ai_plugins.{name}" if name else "services_ai_plugins")


def test_all_is_sorted_and_complete() -> None:
    """Every public name is exported, listed once, resolves, and names what it is."""
    exported = services_ai_plugins.__all__
    assert len(set(exported)) == len(exported)
    lazy = set(services_ai_plugins._LAZY)
    assert set(exported) == lazy | {"hookimpl", "HOST_API_VERSION", "__version__"}
    for name in exported:
        value = getattr(services_ai_plugins, name)
        assert value is not None
        if isinstance(value, type) or callable(value):
            assert getattr(value, "__name__", name) == name
    assert set(exported) <= set(dir(services_ai_plugins))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        services_ai_plugins.nothing  # noqa: B018 - the lookup is the test


@pytest.mark.parametrize("face", LAZY_FACES)
def test_each_face_resolves_its_names(face: str) -> None:
    """A face lists each of its lazy names once; each resolves to the object it names."""
    module = _public(face)
    exported = module.__all__
    assert len(set(exported)) == len(exported)
    assert set(exported) == set(module._LAZY)
    for name in exported:
        value = getattr(module, name)
        if isinstance(value, type) or callable(value):
            assert getattr(value, "__name__", name) == name
    assert set(exported) <= set(dir(module))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        module.nothing  # noqa: B018 - the lookup is the test


def test_a_name_in_two_faces_is_one_object() -> None:
    """The top level and a face hand out the same object (SandboxPolicy, the backends, ...)."""
    faces = [_public(name) for name in ("", *sorted(PUBLIC_MODULES))]
    homes: dict[str, object] = {}
    for module in faces:
        for name in module.__all__:
            value = getattr(module, name)
            assert homes.setdefault(name, value) is value, (module.__name__, name)


def test_internals_left_the_public_surface() -> None:
    """What nobody constructs (HostHook, the dispatcher's parts) is in no public module."""
    for name in ("", *PUBLIC_MODULES):
        exported = set(_public(name).__all__)
        assert not exported & {"HostHook", "Dispatcher", "Planner", "RouteGuard"}


@pytest.mark.parametrize("face", ["", *LAZY_FACES])
def test_importing_a_face_is_cheap(face: str) -> None:
    """A plain import loads none of the heavy modules; names load on first use."""
    module = "services_ai_plugins" + (f".{face}" if face else "")
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.startswith(('services_ai_plugins', 'cattrs'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = result.stdout.strip()
    for heavy in HEAVY:
        assert heavy not in loaded, loaded


#: Private types a public signature may name, and why nobody needs to import them.
PRIVATE_IN_SIGNATURES = {
    ("services_ai_plugins.sandbox.SandboxedPlugin.__init__", "PluginWorkers"): (
        "the Sandbox builds SandboxedPlugin; hosts receive one and never construct it"
    ),
    ("services_ai_plugins.types.ApiMeter.__init__", "_Ledger"): (
        "the narrow part of Storage the meter uses: callers pass a Storage"
    ),
    ("services_ai_plugins.types.RequestScope.hold", "Held"): (
        "what host.defer hands the request scope; adapters submit or discard, never hold"
    ),
}


#: Plugin code, not SDK code; and the Django app, whose modules need a configured Django
#: project (tests/django_adapter/test_app_modules.py checks them there).
_NOT_WALKED = ("services_ai_plugins._demo_plugins", "services_ai_plugins.django")

#: Framework packages: public, each a Django (or other framework) app whose modules are its
#: interface (``services_ai_plugins.django.conf``, ``.services``, ...), imported only inside
#: a configured project.
FRAMEWORK_PACKAGES = {"django", "flask", "starlette"}


def _package_namespace() -> dict[str, object]:
    """Every module-level name of the package, to resolve annotations imported for typing only."""
    names: dict[str, object] = {}
    for info in pkgutil.walk_packages(
        services_ai_plugins.__path__, prefix=f"{services_ai_plugins.__name__}."
    ):
        if not info.name.startswith(_NOT_WALKED):
            names.update(vars(importlib.import_module(info.name)))
    return names


def _members(name: str, value: object) -> Iterator[tuple[str, object]]:
    if inspect.isclass(value):
        yield name, value
        for attribute, member in vars(value).items():
            if attribute.startswith("_") and attribute != "__init__":
                continue
            function = member.fget if isinstance(member, property) else member
            function = getattr(function, "__func__", function)
            if inspect.isfunction(function):
                yield f"{name}.{attribute}", function
    elif inspect.isfunction(value):
        yield name, value


def _named_types(hint: object) -> Iterator[Any]:
    """The package's own classes and NewTypes inside an annotation."""
    if isinstance(hint, TypeVar):
        return
    for argument in typing.get_args(hint):
        yield from _named_types(argument)
    ours = getattr(hint, "__module__", "").startswith("services_ai_plugins")
    named = inspect.isclass(hint) or hasattr(hint, "__supertype__")
    if typing.get_origin(hint) is None and ours and named:
        yield hint


def test_public_signatures_name_only_public_types() -> None:
    """Every type a public class, method or function annotates with can be imported from a face."""
    exported = {
        f"{module.__name__}.{name}": getattr(module, name)
        for module in map(_public, ("", *sorted(PUBLIC_MODULES)))
        for name in module.__all__
    }
    public = {id(value) for value in exported.values()}
    names = _package_namespace()
    private = set()
    for name, value in exported.items():
        for where, member in _members(name, value):
            module = vars(inspect.getmodule(member))
            hints = typing.get_type_hints(member, globalns={**names, **module})
            for hint in hints.values():
                for kind in _named_types(hint):
                    if id(kind) not in public:
                        private.add((where, kind.__qualname__))
    assert private == set(PRIVATE_IN_SIGNATURES)


def test_public_api_is_pinned() -> None:
    """Changing the public API is a deliberate act: this list changes with it."""
    assert services_ai_plugins.__all__ == [
        "HOST_API_VERSION",
        "AccessPolicy",
        "AuditEvent",
        "BreakerPolicy",
        "ConflictError",
        "DependencyError",
        "FailureMailer",
        "FailureRecord",
        "HookMetrics",
        "HostConfig",
        "HostServices",
        "Manifest",
        "ManifestError",
        "MemoryStorage",
        "MetricsPolicy",
        "PackageError",
        "PermissionDenied",
        "PluginAPI",
        "PluginError",
        "PluginHealth",
        "PluginHost",
        "PluginNotFound",
        "PluginRecord",
        "PluginStatus",
        "PostgresStorage",
        "QuotaExceeded",
        "RateLimited",
        "Registry",
        "RegistryEvent",
        "RequirementsError",
        "SQLiteStorage",
        "SandboxError",
        "SandboxPolicy",
        "SandboxTimeout",
        "SettingsError",
        "StorageError",
        "Suspension",
        "TenantRecord",
        "TransitionError",
        "UpgradeError",
        "UpgradePolicy",
        "VersionDiff",
        "VersionError",
        "__version__",
        "check_plugin",
        "hookimpl",
        "manifest_json_schema",
        "pack_plugin",
        "requires",
        "validate_plugin",
    ]


#: Each face's ``__all__``, pinned.
FACES = {
    "admin": ["DEFAULT_UPLOAD_LIMIT", "AdminApp", "AdminRequest", "Authenticate", "HostOrGetter"],
    "errors": [
        "ArchiveError",
        "CompiledModuleRefused",
        "ConfigError",
        "ConfinementError",
        "ConflictError",
        "DependencyError",
        "EgressRefused",
        "ExtraNotInstalled",
        "FrameTooLarge",
        "HookCallError",
        "IntegrityError",
        "ManifestError",
        "NoHostServices",
        "NotSupported",
        "PackageError",
        "PayloadError",
        "PermissionDenied",
        "PluginError",
        "PluginNotFound",
        "Problem",
        "ProblemsError",
        "QuotaExceeded",
        "RateLimited",
        "RecordError",
        "RemoteError",
        "RequestTooLarge",
        "RequirementsError",
        "ResultRefused",
        "SandboxError",
        "SandboxTimeout",
        "SecretKeyError",
        "SettingsError",
        "StorageError",
        "TenantScopeError",
        "TransitionError",
        "UpgradeError",
        "VersionError",
        "WireError",
        "WorkerBusy",
        "WorkerCrashed",
    ],
    "storage": [
        "AccessQuery",
        "AccessRecord",
        "AccessStorage",
        "ArtifactInfo",
        "ArtifactStore",
        "AuditEvent",
        "AuditQuery",
        "Change",
        "ChangeFeed",
        "FailureRecord",
        "HookMetrics",
        "KeptVersion",
        "MemoryStorage",
        "MetricsDelta",
        "PluginRecord",
        "PluginStatus",
        "PostgresStorage",
        "SQLiteStorage",
        "SourceKind",
        "StagedVersion",
        "Storage",
        "StorageArtifacts",
        "StoreUsage",
        "TenantRecord",
        "VersionRecord",
    ],
    "sandbox": [
        "Capabilities",
        "Layer",
        "Limits",
        "Sandbox",
        "SandboxPolicy",
        "SandboxedPlugin",
        "WorkerInfo",
    ],
    "tooling": [
        "ENTRY_POINT_GROUP",
        "ArchiveLimits",
        "CheckProblem",
        "CheckReport",
        "DiscoveredPlugin",
        "Discovery",
        "ExtractedPlugin",
        "HookSummary",
        "LoadedPlugin",
        "PackResult",
        "ScaffoldResult",
        "ValidatedPlugin",
        "check_environment",
        "check_plugins",
        "code_hash",
        "discover_entry_points",
        "discover_folders",
        "example",
        "extract_plugin",
        "from_wire",
        "install_archive",
        "load_order",
        "load_plugin",
        "record_from",
        "register_discovered",
        "scaffold_plugin",
        "to_wire",
        "unload_plugin",
        "validate_settings",
    ],
    "types": [
        "DEFAULT_PERMISSIONS",
        "MAX_MANIFEST_BYTES",
        "AccessLog",
        "ApiLimits",
        "ApiMeter",
        "BoundedExecutor",
        "ClassName",
        "Count",
        "DeferredExecutor",
        "DeniedCall",
        "DisplayName",
        "EmailAddress",
        "EntryPoint",
        "FileChange",
        "FileEntry",
        "FileListing",
        "HookName",
        "HookTrace",
        "HostEvent",
        "HttpResponse",
        "Isolation",
        "JSONValue",
        "LiveHookMetrics",
        "LiveMetrics",
        "NetworkHost",
        "NetworkPolicy",
        "Number",
        "Permission",
        "PermissionCatalogue",
        "PermissionChange",
        "PermissionName",
        "PluginId",
        "PluginOutcome",
        "PluginRoute",
        "Rate",
        "RelativePath",
        "RequestScope",
        "RequirementChange",
        "Risk",
        "SettingChange",
        "SettingName",
        "SettingSpec",
        "SettingType",
        "TenantView",
        "UpgradePlan",
        "Url",
        "VersionSide",
    ],
    "prometheus": ["PREFIX", "PluginCollector"],
    "web": [
        "DEFAULT_MAX_BODY",
        "footer_html",
        "head_html",
        "read_asgi_body",
        "request_from_asgi",
        "request_from_wsgi",
        "widgets_html",
        "write_asgi",
        "write_wsgi",
    ],
}


@pytest.mark.parametrize("face", sorted(FACES))
def test_face_is_pinned(face: str) -> None:
    """Changing a face's API is a deliberate act: its list here changes with it."""
    assert _public(face).__all__ == FACES[face]


def test_modules_are_private_but_the_named_ones() -> None:
    """Every module is private except the public faces, and each face has an ``__all__``."""
    found = set()
    for module in pkgutil.iter_modules(services_ai_plugins.__path__):
        if module.name in FRAMEWORK_PACKAGES:
            found.add(module.name)
            continue
        imported = importlib.import_module(f"services_ai_plugins.{module.name}")
        if module.name in PUBLIC_MODULES:
            assert imported.__all__, module.name
            found.add(module.name)
        else:
            assert module.name.startswith("_"), module.name
    assert found == PUBLIC_MODULES | FRAMEWORK_PACKAGES


def test_errors_share_one_root() -> None:
    """Every exception the SDK raises on purpose is a PluginError."""
    from services_ai_plugins import ManifestError, PackageError, PluginError, SettingsError

    for error in (ManifestError, PackageError, SettingsError):
        assert issubclass(error, PluginError)
    assert issubclass(ManifestError, ValueError)
    assert issubclass(SettingsError, ValueError)


def test_versions_are_pep440() -> None:
    """The SDK and host API versions parse, so plugins can pin against them."""
    from packaging.version import Version

    Version(services_ai_plugins.__version__)
    Version(services_ai_plugins.HOST_API_VERSION)


def test_testing_package_is_importable() -> None:
    """The testing package ships with the SDK."""
    assert services_ai_plugins_testing.__doc__
