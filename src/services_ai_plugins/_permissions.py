"""The permission catalogue: what a plugin may ask for, and how risky each grant is."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ._fields import RULES, PermissionName

__all__ = ["DEFAULT_PERMISSIONS", "Permission", "PermissionCatalogue", "Risk"]


class Risk(str, enum.Enum):
    """How much harm a permission can do in the wrong hands; admins see it when approving."""

    #: Reads or writes only the plugin's own data, or shows something in the UI.
    LOW = "low"
    #: Reads a tenant's business data.
    MEDIUM = "medium"
    #: Changes a tenant's data, reaches people outside the app, or runs in every page.
    HIGH = "high"


@attrs.frozen
class Permission:
    """One entry of the catalogue."""

    #: The name plugins list in ``permissions`` (``read_leads``).
    name: str
    #: What it allows, in words an admin can judge.
    description: str
    risk: Risk

    def __attrs_post_init__(self) -> None:
        problem = RULES[PermissionName].check(self.name)
        if problem is not None:
            raise ValueError(f"permission name {problem}")


#: The permissions every host knows; hosts add their own with :meth:`PermissionCatalogue.add`.
DEFAULT_PERMISSIONS: tuple[Permission, ...] = (
    Permission("read_leads", "Read the tenant's leads.", Risk.MEDIUM),
    Permission("write_leads", "Change the tenant's leads.", Risk.HIGH),
    Permission("read_bookings", "Read the tenant's bookings.", Risk.MEDIUM),
    Permission("write_bookings", "Change the tenant's bookings.", Risk.HIGH),
    Permission("read_invoices", "Read the tenant's invoices.", Risk.MEDIUM),
    Permission(
        "read_users", "Read the tenant's user accounts (names, e-mail, roles).", Risk.MEDIUM
    ),
    Permission("send_notifications", "Send notifications to the tenant's staff.", Risk.LOW),
    Permission("send_email", "Send e-mail on the tenant's behalf.", Risk.HIGH),
    Permission("send_sms", "Send text messages on the tenant's behalf.", Risk.HIGH),
    Permission("dashboard_widgets", "Show widgets on the tenant's dashboard.", Risk.LOW),
    Permission("register_routes", "Serve HTTP routes under the app.", Risk.HIGH),
    Permission("inject_html", "Add HTML to every page's head or footer.", Risk.HIGH),
    Permission("api_hooks", "Observe and change the app's API requests and responses.", Risk.HIGH),
    Permission(
        "http_requests",
        "Send HTTP requests, with any data the plugin holds, to the hosts its manifest lists "
        "under network.",
        Risk.HIGH,
    ),
)


class PermissionCatalogue:
    """The permissions one host knows: the defaults plus the host's own.

    A catalogue belongs to a host (no global state); build one per host::

        catalogue = PermissionCatalogue()
        catalogue.add(Permission("read_tickets", "Read support tickets.", Risk.MEDIUM))
    """

    def __init__(self, permissions: Iterable[Permission] = DEFAULT_PERMISSIONS) -> None:
        self._permissions: dict[str, Permission] = {}
        for permission in permissions:
            self.add(permission)

    def add(self, permission: Permission) -> None:
        """Add a permission; adding the same one twice is harmless.

        :raises ValueError: when another permission already has the name.
        """
        known = self._permissions.get(permission.name)
        if known is not None and known != permission:
            raise ValueError(f"permission {permission.name!r} is already defined as {known}")
        self._permissions[permission.name] = permission

    def __getitem__(self, name: str) -> Permission:
        try:
            return self._permissions[name]
        except KeyError:
            raise KeyError(f"unknown permission {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._permissions

    def __iter__(self) -> Iterator[Permission]:
        return iter(sorted(self._permissions.values(), key=lambda p: p.name))

    def __len__(self) -> int:
        return len(self._permissions)

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names this catalogue does not know, in the order given."""
        return [name for name in names if name not in self._permissions]

    def requested(
        self, permissions: Iterable[str], optional: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """What a plugin asks for, for a reviewer: each name with ``optional`` (granted per
        tenant, not at approval), and this catalogue's ``description`` and ``risk`` (None
        for a name it does not know), permissions first, in the order given.

        >>> PermissionCatalogue().requested(["read_leads"], ["send_email"])[1]
        {'name': 'send_email', 'optional': True, 'description': "Send e-mail on the tenant's behalf.", 'risk': 'high'}
        """  # noqa: E501 - a doctest's output is one line
        found = []
        for names, is_optional in ((permissions, False), (optional, True)):
            for name in names:
                known = self._permissions.get(name)
                found.append(
                    {
                        "name": name,
                        "optional": is_optional,
                        "description": known.description if known else None,
                        "risk": known.risk.value if known else None,
                    }
                )
        return found
