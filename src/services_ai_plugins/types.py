"""The types that public signatures use: JSON values, manifest fields, permissions, limits.

Nothing here is needed to write a plugin or run a host; these are the names
to annotate with, construct for ``PluginHost`` options, or ``isinstance``-check:

- JSON: :data:`JSONValue`, any value JSON can carry (settings, stores, payloads);
- manifest fields: :class:`Isolation`, :class:`SettingSpec`, :class:`SettingType`,
  :data:`MAX_MANIFEST_BYTES`, and the constrained strings of ``Manifest`` and
  ``SettingSpec`` fields (``NewType`` over ``str``, ``int`` or ``float``:
  :data:`PluginId`, :data:`DisplayName`, :data:`PermissionName`, :data:`HookName`,
  :data:`SettingName`, :data:`EntryPoint`, :data:`ClassName`, :data:`RelativePath`,
  :data:`EmailAddress`, :data:`Url`, :data:`NetworkHost`, :data:`Number`, :data:`Count`);
- permissions: :class:`Permission`, :class:`PermissionCatalogue`, :class:`Risk`,
  :data:`DEFAULT_PERMISSIONS` (``PluginHost(permissions=...)``);
- API limits: :class:`ApiLimits`, :class:`Rate`, :class:`ApiMeter`, and the
  :class:`DeniedCall` a host's ``on_denied`` callback receives;
- outbound HTTP: :class:`NetworkPolicy` (``ApiLimits.network``) and the
  :class:`HttpResponse` that ``api.http_request`` returns;
- tracing: :class:`HookTrace` and :class:`PluginOutcome` (``PluginHost.trace_hook``);
- registry: :class:`TenantView` (``Registry.tenant_view``: a tenant's grants and settings);
- the host's own events: :class:`HostEvent` (``PluginHost.host_events``: busy workers, full queues);
- live metrics: :class:`LiveMetrics` and :class:`LiveHookMetrics` (``PluginHost.live_metrics``);
- routes: :class:`PluginRoute` (``PluginHost.routes()``: the route table the host serves);
- requests and deferred calls: :class:`RequestScope` (``PluginHost.request_context``),
  :class:`DeferredExecutor` and the default :class:`BoundedExecutor` (``PluginHost(deferred=...)``).

Names are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from ._access import AccessLog
    from ._api import ApiLimits, ApiMeter, DeniedCall, Rate
    from ._context import RequestScope
    from ._deferred import BoundedExecutor, DeferredExecutor
    from ._dispatch import HookTrace, PluginOutcome
    from ._egress import HttpResponse, NetworkPolicy
    from ._fields import (
        ClassName,
        Count,
        DisplayName,
        EmailAddress,
        EntryPoint,
        HookName,
        NetworkHost,
        Number,
        PermissionName,
        PluginId,
        RelativePath,
        SettingName,
        Url,
    )
    from ._host_events import HostEvent
    from ._json import JSONValue
    from ._manifest import MAX_MANIFEST_BYTES, Isolation
    from ._permissions import DEFAULT_PERMISSIONS, Permission, PermissionCatalogue, Risk
    from ._registry import TenantView, UpgradePlan
    from ._routing import PluginRoute
    from ._settings import SettingSpec, SettingType
    from ._telemetry import LiveHookMetrics, LiveMetrics
    from ._versions import (
        FileChange,
        FileEntry,
        FileListing,
        PermissionChange,
        RequirementChange,
        SettingChange,
        VersionSide,
    )


# Where each lazily imported name lives.
_LAZY: dict[str, str] = {
    "AccessLog": "._access",
    "ApiLimits": "._api",
    "ApiMeter": "._api",
    "BoundedExecutor": "._deferred",
    "ClassName": "._fields",
    "Count": "._fields",
    "DEFAULT_PERMISSIONS": "._permissions",
    "DeferredExecutor": "._deferred",
    "DeniedCall": "._api",
    "DisplayName": "._fields",
    "EmailAddress": "._fields",
    "EntryPoint": "._fields",
    "FileChange": "._versions",
    "FileEntry": "._versions",
    "FileListing": "._versions",
    "HookName": "._fields",
    "HookTrace": "._dispatch",
    "HostEvent": "._host_events",
    "LiveHookMetrics": "._telemetry",
    "LiveMetrics": "._telemetry",
    "HttpResponse": "._egress",
    "Isolation": "._manifest",
    "JSONValue": "._json",
    "MAX_MANIFEST_BYTES": "._manifest",
    "NetworkHost": "._fields",
    "NetworkPolicy": "._egress",
    "Number": "._fields",
    "Permission": "._permissions",
    "PermissionCatalogue": "._permissions",
    "PermissionChange": "._versions",
    "PermissionName": "._fields",
    "PluginId": "._fields",
    "PluginOutcome": "._dispatch",
    "PluginRoute": "._routing",
    "Rate": "._api",
    "RelativePath": "._fields",
    "RequestScope": "._context",
    "RequirementChange": "._versions",
    "Risk": "._permissions",
    "SettingChange": "._versions",
    "SettingName": "._fields",
    "SettingSpec": "._settings",
    "SettingType": "._settings",
    "TenantView": "._registry",
    "UpgradePlan": "._registry",
    "Url": "._fields",
    "VersionSide": "._versions",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
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
]
