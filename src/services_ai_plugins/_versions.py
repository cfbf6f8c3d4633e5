"""Versions of one plugin: the upgrade policy, settings migration and what changed between two.

Pure logic over manifests and file listings, used by the registry (staged
upgrades, rollback, diffs) and shown by the CLI and the admins.
"""

from __future__ import annotations

import attrs

__all__ = ["UpgradePolicy"]


def _keep(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a whole number >= 0 (got {value!r})")


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number of seconds > 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class UpgradePolicy:
    """What a new version of an approved plugin needs, and what is kept for rollback.

    ``auto_approve``: approve by itself a new version that asks for nothing new
    (no permission, optional permission or hook it did not have; the same
    requirements), as browser extension stores do; recorded in the audit trail
    with the policy as the approver. Off by default: every new version waits
    for an admin.

    ``keep_versions``: how many earlier versions are kept (code, archive and
    each tenant's settings as they were) for :meth:`Registry.rollback`; older
    ones are forgotten, and their archives collected.

    ``migration_timeout``: the time limit, in seconds, of each tenant's
    ``plugin_upgraded`` call of an in-process plugin (a sandboxed plugin's call
    has its sandbox's time limit).

    .. versionadded:: 0.2.0
    """

    auto_approve: bool = False
    keep_versions: int = attrs.field(default=3, validator=_keep)
    migration_timeout: float = attrs.field(default=30.0, validator=_seconds)
