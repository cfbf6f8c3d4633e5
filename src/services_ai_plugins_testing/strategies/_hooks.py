"""Whole hook calls: the keyword arguments of a hook, for :func:`hook_arguments`."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Union, get_args, get_origin

from hypothesis import strategies as st
from packaging.version import Version

from services_ai_plugins import events
from services_ai_plugins._dispatch import INJECTED
from services_ai_plugins._payload_codec import to_wire
from services_ai_plugins.events import Booking, Invoice, Lead
from services_ai_plugins.hookspecs import hook_info, plugin_manager

from ._base import cached
from ._json import any_json_values
from ._payloads import DRAWERS, PAYLOAD_DIGITS, REASONS, Drawer, json_objects, tenants_of
from ._strings import identifiers, plugin_ids, sampled, versions

if TYPE_CHECKING:
    import pluggy

    from services_ai_plugins.types import JSONValue

__all__ = ["hook_arguments"]


# -- hook arguments ------------------------------------------------------------------------------


class _JSON:
    """Stands for ``JSONValue`` when the specifications' annotations are resolved."""


def _hint_namespace() -> dict[str, Any]:
    from services_ai_plugins._api import PluginAPI  # noqa: PLC0415 - only to read annotations

    namespace: dict[str, Any] = {name: getattr(events, name) for name in events.__all__}
    namespace.update(PluginAPI=PluginAPI, JSONValue=_JSON)
    return namespace


@cached
def _specifications() -> pluggy.PluginManager:
    return plugin_manager()


def _draw_json_object(draw: st.DrawFn, tenant: str) -> dict[str, JSONValue]:
    return draw(json_objects())


def _draw_text(draw: st.DrawFn, tenant: str) -> str:
    return draw(st.text(max_size=40))


def _draw_plugin_id(draw: st.DrawFn, tenant: str) -> str:
    return draw(plugin_ids())


def _draw_version(draw: st.DrawFn, tenant: str) -> str:
    return draw(versions())


def _draw_reason(draw: st.DrawFn, tenant: str) -> str:
    return draw(sampled(REASONS))


def _draw_tenant_or_none(draw: st.DrawFn, tenant: str) -> str | None:
    return tenant if draw(st.booleans()) else None


def _draw_setting_changes(draw: st.DrawFn, tenant: str) -> dict[str, JSONValue]:
    names = draw(st.lists(identifiers(), min_size=1, max_size=4, unique=True))
    values: list[JSONValue] = [
        "********" if draw(st.booleans()) else draw(any_json_values(4, PAYLOAD_DIGITS))
        for _ in names
    ]
    return dict(zip(names, values, strict=True))


#: Fields that change together: taken from one record, they keep another one valid (a booking
#: that ends after it starts) and consistent (an invoice's dates that follow its status).
_TOGETHER: Final[Mapping[type, tuple[frozenset[str], ...]]] = {
    Booking: (frozenset({"starts_at", "ends_at"}),),
    Invoice: (frozenset({"status", "issued_on", "due_on", "paid_at"}),),
}


def _field_values(kind: type) -> Drawer:
    """Field name to wire value, for some fields of a record of ``kind`` (never id or tenant).

    Applied to any record of ``kind``, the values make a valid one: fields that depend on each
    other come together, from one drawn record.
    """

    def draw_values(draw: st.DrawFn, tenant: str) -> dict[str, JSONValue]:
        wire = to_wire(DRAWERS[kind](draw, tenant))
        names = sorted(set(wire) - {"id", "tenant"})
        chosen = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True)))
        for group in _TOGETHER.get(kind, ()):
            if chosen & group:
                chosen |= group
        return {name: wire[name] for name in sorted(chosen)}

    return draw_values


def _optional(drawer: Drawer) -> Drawer:
    def draw_optional(draw: st.DrawFn, tenant: str) -> Any:
        return drawer(draw, tenant) if draw(st.booleans()) else None

    return draw_optional


def _many(drawer: Drawer) -> Drawer:
    def draw_many(draw: st.DrawFn, tenant: str) -> tuple[Any, ...]:
        return tuple(drawer(draw, tenant) for _ in range(draw(st.integers(0, 4))))

    return draw_many


#: Arguments drawn by their name, whatever their type.
_BY_NAME: Final[Mapping[str, Drawer]] = {
    "plugin_id": _draw_plugin_id,
    "version": _draw_version,
    "from_version": _draw_version,
    "to_version": _draw_version,
    "reason": _draw_reason,
    "tenant": _draw_tenant_or_none,
    "changed": _draw_setting_changes,
}


def _argument_drawer(hook: str, name: str, hint: Any, subject: type | None) -> Drawer:
    """How to draw the argument ``name`` of ``hook``, annotated ``hint``.

    ``subject`` is the record the hook is about (the lead of ``lead_updated``), if any.
    """
    if name in _BY_NAME:
        return _BY_NAME[name]
    if hint in DRAWERS:
        return DRAWERS[hint]
    origin, arguments = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in arguments:
        members = [member for member in arguments if member is not type(None)]
        if len(members) == 1:
            return _optional(_argument_drawer(hook, name, members[0], subject))
    if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        return _many(_argument_drawer(hook, name, arguments[0], subject))
    if origin is Mapping and arguments == (str, _JSON):
        if name == "changes" and subject is not None:
            return _field_values(subject)  # each changed field's value before the update
        if name == "data" and hook == "filter_lead_data":
            return _field_values(Lead)  # the fields about to be saved
        return _draw_json_object
    if hint is str:
        return _draw_text
    raise TypeError(f"hook {hook!r}: cannot generate argument {name!r} of type {hint!r}")


@cached
def _hook_plan(hook: str) -> tuple[tuple[str, Drawer], ...]:
    info = hook_info(hook)  # KeyError, with a close name, for an unknown hook
    caller = getattr(_specifications().hook, hook)
    function = caller.spec.function
    hints = typing.get_type_hints(function, localns=_hint_namespace())
    injected = () if info.host_only else INJECTED
    names = [name for name in caller.spec.argnames if name not in injected]
    records = [hints[name] for name in names if hints[name] in (Lead, Booking, Invoice)]
    subject = records[0] if len(records) == 1 else None
    return tuple((name, _argument_drawer(hook, name, hints[name], subject)) for name in names)


def _version_key(text: str) -> Version:
    return Version(text)


@st.composite
def _hook_arguments(
    draw: st.DrawFn, plan: tuple[tuple[str, Drawer], ...], tenants: st.SearchStrategy[str]
) -> dict[str, Any]:
    tenant = draw(tenants)
    values = {name: drawer(draw, tenant) for name, drawer in plan}
    invoice = values.get("invoice")
    if "lines" in values and isinstance(invoice, Invoice):
        values["lines"] = invoice.lines  # a filter chain starts from the invoice's own lines
    if "from_version" in values and "to_version" in values:
        low, high = sorted((values["from_version"], values["to_version"]), key=_version_key)
        values["from_version"], values["to_version"] = low, high
    return values


def hook_arguments(
    hook_name: str, *, tenant: str | st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for a call of the built-in hook ``hook_name``, as the host makes it.

    Each dict holds every argument of the hook's specification
    (:mod:`services_ai_plugins.hookspecs`) but those the host fills in for each
    plugin (``api``, ``settings`` and ``plugin_id``), so
    ``host.hook.<hook_name>(**arguments)`` is a valid call. The host-only
    ``plugin_suspended`` gets all of its arguments, ``plugin_id`` included.
    Records come from the payload strategies, all of one tenant: pinned by
    ``tenant`` as for :func:`contexts`, else drawn from :func:`tenants`.

    Arguments are drawn to match: ``changes`` maps some fields of the hook's
    record to their values before the update, in wire form
    (:func:`~services_ai_plugins.events.to_wire`), such that the record with
    them applied is valid (a booking's times change together, an invoice's
    status with its dates); ``filter_lead_data``'s ``data`` maps lead fields to
    wire values; ``filter_invoice_lines``' ``lines`` are the invoice's own;
    ``from_version`` is never above ``to_version``; ``plugin_settings_changed``'s
    ``changed`` maps setting names to values (some masked as ``"********"``)::

        @given(sais.hook_arguments("lead_updated", tenant="acme"))
        def test_lead_updated(arguments):
            plugin.lead_updated(**arguments, api=api, settings={})

    :raises KeyError: when no built-in hook has that name (the message suggests a close one).
    :raises ValueError: when ``tenant`` is a blank string.
    """
    plan = _hook_plan(hook_name)
    return _hook_arguments(plan, tenants_of(tenant))
