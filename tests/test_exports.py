"""The public API is exactly what ``services_ai_plugins.__all__`` lists."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import services_ai_plugins
import services_ai_plugins_testing


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


def test_importing_the_package_is_cheap() -> None:
    """A plain import loads none of the heavy modules; names load on first use."""
    code = (
        "import sys, services_ai_plugins; "
        "print(sorted(m for m in sys.modules if m.startswith('services_ai_plugins')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = result.stdout.strip()
    for heavy in ("_manifest", "_sqlite", "_registry", "events", "_archive", "cattrs"):
        assert heavy not in loaded, loaded


def test_public_api_is_pinned() -> None:
    """Changing the public API is a deliberate act: this list changes with it."""
    assert services_ai_plugins.__all__ == [
        "DEFAULT_PERMISSIONS",
        "ENTRY_POINT_GROUP",
        "HOST_API_VERSION",
        "MAX_MANIFEST_BYTES",
        "ApiLimits",
        "ApiMeter",
        "ArchiveError",
        "ArchiveLimits",
        "AuditEvent",
        "AuditQuery",
        "BreakerPolicy",
        "Capabilities",
        "Change",
        "ChangeFeed",
        "CheckProblem",
        "CheckReport",
        "ConflictError",
        "DeniedCall",
        "DependencyError",
        "DiscoveredPlugin",
        "Discovery",
        "ExtractedPlugin",
        "FailureRecord",
        "HookMetrics",
        "HookTrace",
        "HostHook",
        "HostServices",
        "IntegrityError",
        "Isolation",
        "Layer",
        "Limits",
        "LoadedPlugin",
        "Manifest",
        "ManifestError",
        "MemoryStorage",
        "MetricsDelta",
        "PackResult",
        "PackageError",
        "Permission",
        "PermissionCatalogue",
        "PermissionDenied",
        "PluginAPI",
        "PluginError",
        "PluginHealth",
        "PluginHost",
        "PluginNotFound",
        "PluginOutcome",
        "PluginRecord",
        "PluginStatus",
        "PostgresStorage",
        "Problem",
        "QuotaExceeded",
        "Rate",
        "RateLimited",
        "Registry",
        "RegistryEvent",
        "RemoteError",
        "RequirementsError",
        "ResultRefused",
        "Risk",
        "SQLiteStorage",
        "Sandbox",
        "SandboxError",
        "SandboxPolicy",
        "SandboxTimeout",
        "SandboxedPlugin",
        "ScaffoldResult",
        "SecretKeyError",
        "SettingSpec",
        "SettingType",
        "SettingsError",
        "SourceKind",
        "Storage",
        "StorageError",
        "StoreUsage",
        "Suspension",
        "TenantRecord",
        "TenantScopeError",
        "TransitionError",
        "ValidatedPlugin",
        "VersionRecord",
        "WorkerCrashed",
        "WorkerInfo",
        "__version__",
        "check_environment",
        "check_plugin",
        "check_plugins",
        "code_hash",
        "discover_entry_points",
        "discover_folders",
        "extract_plugin",
        "hookimpl",
        "install_archive",
        "load_order",
        "load_plugin",
        "manifest_json_schema",
        "pack_plugin",
        "register_discovered",
        "requires",
        "scaffold_plugin",
        "unload_plugin",
        "validate_plugin",
        "validate_settings",
    ]


#: The public modules: named by the interface (``services_ai_plugins.events.example(Lead)``,
#: ``services_ai_plugins.hookspecs``), each with its own ``__all__``.
PUBLIC_MODULES = {"events", "hookspecs", "errors"}


def test_modules_are_private_but_the_named_ones() -> None:
    """Every module is private except the public events and hookspecs modules."""
    for module in pkgutil.iter_modules(services_ai_plugins.__path__):
        imported = importlib.import_module(f"services_ai_plugins.{module.name}")
        if module.name in PUBLIC_MODULES:
            assert imported.__all__, module.name
        else:
            assert module.name.startswith("_"), module.name


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
