# mypy: disable-error-code="empty-body"
# Hook specifications are signatures with a docstring and no body: pluggy reads their
# argument names and never calls them, so "missing return statement" does not apply.
"""The hook specifications: every event a plugin can implement, and how each is called.

A plugin implements a hook by defining a function (or method) of the same name,
marked with :data:`services_ai_plugins.hookimpl`. pluggy matches arguments **by
name**: an implementation may accept any subset of the specification's arguments,
in any order, but a name the specification does not have is refused when the
plugin is registered (:class:`pluggy.PluginValidationError`, naming the hook and
the argument), and an implementation of a hook nobody specified is reported by
:meth:`pluggy.PluginManager.check_pending`::

    class LeadNotifier:
        @hookimpl
        def lead_created(self, lead, api):  # a subset of (lead, context, api)
            api.send_notification(f"New lead: {lead.name}")

**Kinds.** Each hook has a :class:`HookKind` that tells the host how to combine
the implementations' results (:func:`hook_info` returns it with the rest of the
hook's :class:`HookInfo`):

- ``NOTIFY``: every implementation runs; return values are ignored.
- ``COLLECT``: every implementation runs; the results that are not None are
  gathered into a list.
- ``FIRST_RESULT``: implementations run until one returns something other than
  None, which is the result (pluggy's ``firstresult=True``).
- ``FILTER``: WordPress-style. Each implementation receives the current value of
  one parameter (:attr:`HookInfo.filtered`) and returns the new value, which the
  host hands to the next one; the caller gets the last.

**Shared parameters.**

- ``context`` (:class:`~services_ai_plugins.events.Context`): the tenant, the
  acting user and request metadata of the call. Hooks that take it are
  *tenant-scoped*: they run only for the plugins enabled for ``context.tenant``.
- ``api`` (:class:`~services_ai_plugins._api.PluginAPI`): the receiving plugin's
  **own** API, bound to that plugin and the call's tenant. Every method checks
  the plugin's grants.
- ``settings``: the receiving plugin's own settings for ``context.tenant``
  (every setting of its manifest, defaults filled in; read-only).

The host fills ``api``, ``settings`` and ``plugin_id`` for each implementation
with the receiving plugin's own values, where the hook's specification has the
name and the caller did not pass it (``register_routes`` gets the plugin's own
id this way; lifecycle hooks pass the id of the plugin concerned).
As everywhere in pluggy, an implementation asks for the arguments it wants by
naming them; it may leave out any.

**Permissions.** The *Permission* line of each hook names what a plugin needs
to make use of it. Where the payload itself is guarded data or a channel
(a lead, an e-mail, the page's HTML), :attr:`HookInfo.permissions` lists the
permissions a plugin must hold for the call's tenant to receive the hook at
all: the host does not call the implementations of plugins that lack one.

Hooks without a tenant (``register_routes`` and the lifecycle of a plugin as a
whole: installed, approved, upgraded, uninstalled) run for every approved
plugin; their ``api`` is bound to no tenant, and its tenant-scoped methods raise
:class:`~services_ai_plugins.TenantScopeError`. ``plugin_suspended`` is the one
hook plugins never receive (:attr:`HookInfo.host_only`).

Payloads are frozen attrs records from :mod:`services_ai_plugins.events`; a
filter returns a changed copy (``attrs.evolve(email, subject=...)``), never
mutates the one it got.

**Lifecycle hooks** (``plugin_*``) name the plugin concerned in ``plugin_id``.
They go to the plugin concerned once its code may run (a plugin's code never
runs before it is approved, so it never sees its own ``plugin_installed``) and
to the other plugins that would receive a hook of that scope, as observers.
Compare ``plugin_id`` with ``api.plugin_id`` to tell the two apart.

**More hooks.** A host adds its own specifications from a module or class of
functions decorated with :func:`spec` (or the bare :data:`hookspec` marker) to
the manager: ``pm.add_hookspecs(my_host_hooks)``. A plugin can declare hooks
for other plugins the same way: it ships such a module and the host adds it
when it loads the plugin. Prefix the names with the declaring plugin's id in
snake case (``crm_sync_contact_pushed``): adding a name that is already
specified raises ``ValueError``, so do not import built-in specs into your own
spec module either. Plugins implementing a hook of a plugin that may be absent
mark it ``@hookimpl(optionalhook=True)`` so ``check_pending()`` accepts it.

>>> pm = plugin_manager()
>>> hook_info("filter_email").kind
<HookKind.FILTER: 'filter'>
>>> pm.hook.resolve_lead_owner.spec.opts["firstresult"]
True
"""

from __future__ import annotations

import difflib
import enum
import inspect
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, TypeVar

import attrs
import pluggy

from ._json import JSONValue
from ._markers import PROJECT_NAME

if TYPE_CHECKING:
    from ._api import PluginAPI
    from .events import (
        ApiRequest,
        ApiResponse,
        Booking,
        Context,
        Email,
        HtmlFragment,
        Invoice,
        InvoiceLine,
        Lead,
        Notification,
        Report,
        Route,
        Sms,
        User,
        Widget,
    )

__all__ = [
    "HOOKS",
    "HookInfo",
    "HookKind",
    "hook_info",
    "hookspec",
    "plugin_manager",
    "spec",
]

#: Marks a function as a hook specification for :data:`PROJECT_NAME`; pluggy's
#: options (``firstresult``, ``historic``, ``warn_on_impl``) apply. :func:`spec`
#: applies it and also records the hook's :class:`HookInfo`, which is what the
#: host's dispatcher reads.
hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)

# Where spec() leaves a hook's HookInfo on its function, next to pluggy's own
# "<project>_spec" attribute.
_INFO_ATTRIBUTE: Final = f"{PROJECT_NAME}_info"

_F = TypeVar("_F", bound=Callable[..., object])


class HookKind(str, enum.Enum):
    """How the host calls a hook's implementations and combines their results."""

    #: Every implementation runs; return values are ignored.
    NOTIFY = "notify"
    #: Every implementation runs; the results that are not None form a list.
    COLLECT = "collect"
    #: The first result that is not None wins and stops the call (pluggy ``firstresult``).
    FIRST_RESULT = "first_result"
    #: Each implementation receives the current value of :attr:`HookInfo.filtered`
    #: and returns the new one; the host chains them in pluggy's call order and the
    #: caller gets the last value. None, or a value the host refuses, passes the
    #: current value on unchanged (a refused value is recorded as the plugin's failure).
    FILTER = "filter"


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class HookInfo:
    """What the host needs to know to call one hook.

    :raises ValueError: when ``filtered`` is given for a hook that is not a
        ``FILTER``, or missing for one that is.
    """

    #: The hook's name, which is also the name of its specification function.
    name: str
    kind: HookKind = attrs.field(converter=HookKind)
    #: True: the hook takes ``context`` and runs only for the plugins enabled for
    #: its tenant. False: it runs for every approved plugin, with an ``api``
    #: bound to no tenant.
    tenant_scoped: bool = True
    #: For a ``FILTER`` hook, the parameter whose value the implementations transform.
    filtered: str | None = None
    #: True for the host's own notices (``plugin_suspended``): only implementations
    #: the host registers itself are called, never plugins' ones.
    host_only: bool = False
    #: The permissions a plugin must hold (for the call's tenant) to receive the
    #: hook at all: its payload is data or a channel those permissions guard. The
    #: host does not call the implementations of plugins that lack one.
    permissions: tuple[str, ...] = attrs.field(default=(), converter=_names)

    def __attrs_post_init__(self) -> None:
        if self.kind is HookKind.FILTER and self.filtered is None:
            raise ValueError(f"hook {self.name!r}: a FILTER hook must name its filtered parameter")
        if self.kind is not HookKind.FILTER and self.filtered is not None:
            raise ValueError(
                f"hook {self.name!r}: only a FILTER hook has a filtered parameter "
                f"(this one is {self.kind.name})"
            )


def spec(
    kind: HookKind,
    *,
    tenant_scoped: bool = True,
    filtered: str | None = None,
    host_only: bool = False,
    permissions: Iterable[str] = (),
) -> Callable[[_F], _F]:
    """Declare a hook specification of the given kind.

    Applies :data:`hookspec` (with ``firstresult=True`` for ``FIRST_RESULT``) and
    records the hook's :class:`HookInfo` on the function, where
    :func:`hook_info` finds it. Hosts and plugins use it for their own hooks::

        @spec(HookKind.FILTER, filtered="quote")
        def quotes_filter_quote(
            quote: Quote, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
        ) -> Quote: ...

    :raises ValueError: when the declaration contradicts the signature: a
        tenant-scoped hook without a ``context`` parameter, a ``FILTER`` without
        ``filtered`` or whose ``filtered`` is not a parameter, or ``filtered`` on
        another kind.
    """

    def mark(function: _F) -> _F:
        name = function.__name__
        info = HookInfo(
            name=name,
            kind=kind,
            tenant_scoped=tenant_scoped,
            filtered=filtered,
            host_only=host_only,
            permissions=tuple(permissions),
        )
        parameters = inspect.signature(function).parameters
        if tenant_scoped and "context" not in parameters:
            raise ValueError(
                f"hook {name!r} is tenant-scoped but has no 'context' parameter; "
                "add one or declare it with tenant_scoped=False"
            )
        if filtered is not None and filtered not in parameters:
            raise ValueError(
                f"hook {name!r} filters {filtered!r}, which is not one of its parameters "
                f"({', '.join(parameters)})"
            )
        hookspec(function, firstresult=info.kind is HookKind.FIRST_RESULT)
        setattr(function, _INFO_ATTRIBUTE, info)
        return function

    return mark


def plugin_manager() -> pluggy.PluginManager:
    """Return a new plugin manager for :data:`PROJECT_NAME` that knows the built-in hooks.

    Each call builds a separate manager (there is no global one). Add more
    specifications with ``pm.add_hookspecs(module_or_class)``.

    >>> pm = plugin_manager()
    >>> pm.project_name
    'services_ai'
    >>> "lead_created" in pm.hook.__dict__
    True
    """
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(sys.modules[__name__])
    return manager


def hook_info(name: str, pm: pluggy.PluginManager | None = None) -> HookInfo:
    """Return what the host needs to know to call the hook ``name``.

    Without ``pm``, only the built-in hooks (:data:`HOOKS`) are known. With it,
    any hook specified on that manager is, including those a host or plugin
    added. A hook specified with the bare :data:`hookspec` marker, not
    :func:`spec`, is described from its pluggy options: ``FIRST_RESULT`` if it
    is ``firstresult``, else ``COLLECT``; tenant-scoped if it takes ``context``.

    >>> info = hook_info("register_routes")
    >>> info.kind, info.tenant_scoped
    (<HookKind.COLLECT: 'collect'>, False)

    :raises KeyError: when no such hook is specified (the message suggests close names).
    """
    if pm is None:
        info = HOOKS.get(name)
        if info is None:
            raise KeyError(_unknown(name, HOOKS))
        return info
    specified = {
        hook_name: caller
        for hook_name, caller in vars(pm.hook).items()
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None
    }
    caller = specified.get(name)
    if caller is None or caller.spec is None:
        raise KeyError(_unknown(name, specified))
    recorded = getattr(caller.spec.function, _INFO_ATTRIBUTE, None)
    if isinstance(recorded, HookInfo):
        return recorded
    return HookInfo(
        name=name,
        kind=HookKind.FIRST_RESULT if caller.spec.opts.get("firstresult") else HookKind.COLLECT,
        tenant_scoped="context" in caller.spec.argnames,
    )


def _unknown(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown hook {name!r}{hint}"


# Leads ---------------------------------------------------------------------------------


@spec(HookKind.NOTIFY, permissions=("read_leads",))
def lead_created(
    lead: Lead, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A lead was created.

    Fires: after a new lead is saved, once per lead (after ``filter_lead_data`` and
    ``resolve_lead_owner``).

    Receives: the saved ``lead``, the ``context`` of the call and the plugin's ``api``
    and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_leads``.
    """


@spec(HookKind.NOTIFY, permissions=("read_leads",))
def lead_updated(
    lead: Lead,
    changes: Mapping[str, JSONValue],
    context: Context,
    api: PluginAPI,
    settings: Mapping[str, JSONValue],
) -> None:
    """A lead was changed.

    Fires: after a change to a lead is saved, once per save that changed something.

    Receives: the ``lead`` as saved; ``changes``, which maps the name of each changed
    field to its value *before* the update (the new values are on ``lead``); the
    ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_leads``.
    """


@spec(HookKind.NOTIFY, permissions=("read_leads",))
def lead_deleted(
    lead: Lead, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A lead was deleted.

    Fires: after the lead is deleted; it can no longer be read through ``api``.

    Receives: the ``lead`` as it was last saved, the ``context`` and the plugin's
    ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_leads``.
    """


@spec(HookKind.FIRST_RESULT, permissions=("read_leads", "read_users"))
def resolve_lead_owner(
    lead: Lead, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> User | None:
    """Choose who owns a new lead.

    Fires: when a new lead is saved without an owner, before ``lead_created``.
    Implementations are asked in pluggy's order until one answers.

    Receives: the saved ``lead`` (no owner yet), the ``context`` and the plugin's
    ``api`` and ``settings``.

    Returns: the :class:`~services_ai_plugins.events.User` who will own the lead (a
    user of ``context.tenant``; the host refuses anyone else and records the
    plugin's failure), or None to leave the choice to the next plugin and, if no
    plugin answers, to the host's own rule.

    Permission: ``read_leads`` and ``read_users`` (to pick among the tenant's users).
    """


@spec(HookKind.FILTER, filtered="data", permissions=("write_leads",))
def filter_lead_data(
    data: Mapping[str, JSONValue],
    context: Context,
    api: PluginAPI,
    settings: Mapping[str, JSONValue],
) -> Mapping[str, JSONValue]:
    """Change a lead's fields before it is saved.

    Fires: before a lead is created or updated, with the field values the host is
    about to save (from a form, an import or the API), before they are validated.

    Receives: ``data``, field name to value as JSON (the current value of the
    chain); the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: return the new value; return the value unchanged to pass. The host
    validates the final value like any other input, so a filter cannot save what
    a person could not.

    Permission: ``write_leads``.
    """


# Bookings ------------------------------------------------------------------------------


@spec(HookKind.NOTIFY, permissions=("read_bookings",))
def booking_created(
    booking: Booking, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A booking was created.

    Fires: after a new booking is saved, once per booking.

    Receives: the saved ``booking``, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_bookings``.
    """


@spec(HookKind.NOTIFY, permissions=("read_bookings",))
def booking_updated(
    booking: Booking,
    changes: Mapping[str, JSONValue],
    context: Context,
    api: PluginAPI,
    settings: Mapping[str, JSONValue],
) -> None:
    """A booking was changed.

    Fires: after a change to a booking is saved, including a change of status (which
    then also fires ``booking_confirmed`` or ``booking_cancelled``, after this hook).

    Receives: the ``booking`` as saved; ``changes``, which maps the name of each changed
    field to its value before the update; the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_bookings``.
    """


@spec(HookKind.NOTIFY, permissions=("read_bookings",))
def booking_confirmed(
    booking: Booking, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A booking was confirmed.

    Fires: after a booking's confirmation is saved (after ``booking_updated``).

    Receives: the confirmed ``booking``, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_bookings``.
    """


@spec(HookKind.NOTIFY, permissions=("read_bookings",))
def booking_cancelled(
    booking: Booking, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A booking was cancelled.

    Fires: after a booking's cancellation is saved (after ``booking_updated``), whoever
    cancelled it (``context.user`` says who, when a person did).

    Receives: the cancelled ``booking``, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_bookings``.
    """


# Invoices ------------------------------------------------------------------------------


@spec(HookKind.NOTIFY, permissions=("read_invoices",))
def invoice_created(
    invoice: Invoice, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """An invoice was created.

    Fires: after a new invoice is saved with its lines and totals (after
    ``filter_invoice_lines``).

    Receives: the saved ``invoice``, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_invoices``.
    """


@spec(HookKind.NOTIFY, permissions=("read_invoices",))
def invoice_updated(
    invoice: Invoice,
    changes: Mapping[str, JSONValue],
    context: Context,
    api: PluginAPI,
    settings: Mapping[str, JSONValue],
) -> None:
    """An invoice was changed.

    Fires: after a change to an invoice is saved, including a payment (which then
    also fires ``invoice_paid``, after this hook).

    Receives: the ``invoice`` as saved; ``changes``, which maps the name of each changed
    field to its value before the update; the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_invoices``.
    """


@spec(HookKind.NOTIFY, permissions=("read_invoices",))
def invoice_paid(
    invoice: Invoice, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """An invoice was paid in full.

    Fires: after the payment that settles the invoice is saved (after
    ``invoice_updated``), once per invoice.

    Receives: the paid ``invoice``, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_invoices``.
    """


@spec(HookKind.FILTER, filtered="lines", permissions=("read_invoices",))
def filter_invoice_lines(
    lines: tuple[InvoiceLine, ...],
    invoice: Invoice,
    context: Context,
    api: PluginAPI,
    settings: Mapping[str, JSONValue],
) -> tuple[InvoiceLine, ...]:
    """Change an invoice's lines before its totals are computed.

    Fires: when an invoice is created or its lines change, before the host computes
    taxes and totals from the lines; use it to add a fee, a discount or a note line.

    Receives: ``lines``, the current value of the chain; the ``invoice`` they belong
    to (its totals are not final yet); the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: return the new value; return the value unchanged to pass. The host
    computes the totals from the final lines.

    Permission: ``read_invoices``; the lines decide what a customer pays, so hosts
    may require a stronger permission of their own.
    """


# Users ---------------------------------------------------------------------------------


@spec(HookKind.NOTIFY, permissions=("read_users",))
def user_registered(
    user: User, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A user account was created for the tenant.

    Fires: after the account is saved, whether the person signed up or an admin
    added them (``context.user`` is whoever acted).

    Receives: the new ``user``, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_users``.
    """


@spec(HookKind.NOTIFY, permissions=("read_users",))
def user_login(
    user: User, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A user logged in.

    Fires: after a successful login, once the session exists.

    Receives: the ``user`` who logged in, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_users``.
    """


@spec(HookKind.NOTIFY, permissions=("read_users",))
def user_logout(
    user: User, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A user logged out.

    Fires: after the user's session ended by logging out (not when it expired).

    Receives: the ``user`` who logged out, the ``context`` and the plugin's ``api`` and
    ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``read_users``.
    """


# Messaging and reports -----------------------------------------------------------------


@spec(HookKind.FILTER, filtered="email", permissions=("send_email",))
def filter_email(
    email: Email, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> Email:
    """Change an e-mail before it is sent.

    Fires: for every e-mail the app sends on the tenant's behalf, before it is handed
    to the mail service (and before ``email_sent``).

    Receives: ``email``, the current value of the chain; the ``context`` and the
    plugin's ``api`` and ``settings``.

    Returns: return the new value; return the value unchanged to pass. A filter
    cannot stop an e-mail; the host sends the final value.

    Permission: ``send_email``.
    """


@spec(HookKind.NOTIFY, permissions=("send_email",))
def email_sent(
    email: Email, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """An e-mail was sent.

    Fires: after the mail service accepted the e-mail (delivery is not confirmed).

    Receives: the ``email`` as sent (after ``filter_email``), the ``context`` and the
    plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``send_email`` (the payload is a message sent on the tenant's behalf).
    """


@spec(HookKind.FILTER, filtered="sms", permissions=("send_sms",))
def filter_sms(
    sms: Sms, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> Sms:
    """Change a text message before it is sent.

    Fires: for every text message the app sends on the tenant's behalf, before it is
    handed to the SMS gateway (and before ``sms_sent``).

    Receives: ``sms``, the current value of the chain; the ``context`` and the
    plugin's ``api`` and ``settings``.

    Returns: return the new value; return the value unchanged to pass. A filter
    cannot stop a message; the host sends the final value.

    Permission: ``send_sms``.
    """


@spec(HookKind.NOTIFY, permissions=("send_sms",))
def sms_sent(sms: Sms, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]) -> None:
    """A text message was sent.

    Fires: after the SMS gateway accepted the message (delivery is not confirmed).

    Receives: the ``sms`` as sent (after ``filter_sms``), the ``context`` and the
    plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``send_sms`` (the payload is a message sent on the tenant's behalf).
    """


@spec(HookKind.NOTIFY, permissions=("send_notifications",))
def notification_sent(
    notification: Notification, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A notification was sent to the tenant's staff.

    Fires: after the host delivered an in-app notification, including those plugins
    send through ``api``; a plugin that sends one from this hook must not loop.

    Receives: the ``notification``, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: ``send_notifications``.
    """


@spec(HookKind.NOTIFY)
def report_generated(
    report: Report, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A report was generated.

    Fires: after the host generated a report for the tenant, on request or on schedule
    (a scheduled run has no ``context.user``).

    Receives: the ``report``, the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: nothing; a return value is ignored.

    Permission: the ``read_*`` permission of the data behind the report
    (``read_leads``, ``read_bookings`` or ``read_invoices``).
    """


# User interface and HTTP ---------------------------------------------------------------


@spec(HookKind.COLLECT, permissions=("dashboard_widgets",))
def dashboard_widget(
    context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> Widget | None:
    """Add a widget to the dashboard.

    Fires: each time the dashboard is shown to ``context.user``, so keep it quick
    (a plugin in the process sandbox has a time limit; one that times out shows
    nothing).

    Receives: the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: a :class:`~services_ai_plugins.events.Widget` to show, or None to show
    nothing; the host lays out the widgets it collects.

    Permission: ``dashboard_widgets``, plus the ``read_*`` permission of whatever the
    widget shows.
    """


@spec(HookKind.COLLECT, tenant_scoped=False, permissions=("register_routes",))
def register_routes(
    plugin_id: str, api: PluginAPI
) -> Iterable[Route | tuple[str, object, str]] | None:
    """Add HTTP routes to the app.

    Fires: when the host builds its URL table: at start-up and after a plugin is
    approved, upgraded or uninstalled; not per request and not per tenant. A route
    answers only for tenants that have the plugin enabled.

    Receives: ``plugin_id``, the receiving plugin's own id (to build its URLs), and
    the plugin's ``api``, bound to no tenant: use it for setup, never keep it for a
    view.

    Returns: the plugin's routes, as :class:`~services_ai_plugins.events.Route`
    records or as the original system's ``(path, view, name)`` tuples, which the
    host accepts and normalises into ``Route`` records
    (:func:`~services_ai_plugins.events.normalise_routes`); None for no routes.
    The host mounts the paths under the plugin's own prefix and refuses routes
    that clash.

    Permission: ``register_routes``.
    """


@spec(HookKind.COLLECT, permissions=("inject_html",))
def inject_head(
    context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> HtmlFragment | str | None:
    """Add HTML to the ``<head>`` of every page.

    Fires: each time the app renders a page for ``context.tenant``, so keep it quick.

    Receives: the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: an :class:`~services_ai_plugins.events.HtmlFragment`, or a ``str`` of
    HTML as in the original system, which the host wraps in a fragment placed in the
    head (either is inserted as is, not escaped); or None to add nothing.
    Fragments appear in pluggy's call order.

    Permission: ``inject_html``.
    """


@spec(HookKind.COLLECT, permissions=("inject_html",))
def inject_footer(
    context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> HtmlFragment | str | None:
    """Add HTML at the end of the ``<body>`` of every page.

    Fires: each time the app renders a page for ``context.tenant``, so keep it quick.

    Receives: the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: an :class:`~services_ai_plugins.events.HtmlFragment`, or a ``str`` of
    HTML as in the original system, which the host wraps in a fragment placed in the
    footer (either is inserted as is, not escaped); or None to add nothing.
    Fragments appear in pluggy's call order.

    Permission: ``inject_html``.
    """


@spec(HookKind.FILTER, filtered="request", permissions=("api_hooks",))
def api_request(
    request: ApiRequest, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> ApiRequest | None:
    """Change a request to the app's API before it is handled.

    Fires: for every request to the app's API, after authentication (so ``context``
    names the tenant and user) and before the host handles it.

    Receives: ``request``, the current value of the chain; the ``context`` and the
    plugin's ``api`` and ``settings``.

    Returns: return the new value; return the value unchanged to pass (None also
    passes it on unchanged). A filter cannot refuse a request.

    Permission: ``api_hooks``.
    """


@spec(HookKind.FILTER, filtered="response", permissions=("api_hooks",))
def api_response(
    request: ApiRequest,
    response: ApiResponse,
    context: Context,
    api: PluginAPI,
    settings: Mapping[str, JSONValue],
) -> ApiResponse | None:
    """Change a response of the app's API before it is sent.

    Fires: for every request to the app's API that the host handled, after it built
    the response and before it is sent.

    Receives: the ``request`` as handled (after ``api_request``); ``response``, the
    current value of the chain; the ``context`` and the plugin's ``api`` and ``settings``.

    Returns: return the new value; return the value unchanged to pass (None also
    passes it on unchanged).

    Permission: ``api_hooks``.
    """


# Plugin lifecycle ----------------------------------------------------------------------


@spec(HookKind.NOTIFY, tenant_scoped=False)
def plugin_installed(plugin_id: str, version: str, api: PluginAPI) -> None:
    """A plugin was installed (this version of it), and is now approved.

    Fires: once per install, when the plugin's code can first run: its code does not
    run while it is pending, so the process that approved that install fires it once
    it has loaded the plugin (at its next refresh), just before ``plugin_approved``.
    Only the installed plugin receives it.

    Receives: the plugin's ``plugin_id`` and its installed ``version``, and its
    ``api``, bound to no tenant.

    Returns: nothing; a return value is ignored.

    Permission: none.
    """


@spec(HookKind.NOTIFY, tenant_scoped=False)
def plugin_approved(plugin_id: str, api: PluginAPI) -> None:
    """A plugin was approved by an admin.

    Fires: once, after the approval is saved, in the process that approved it, once
    it has loaded the plugin, right after ``plugin_installed``: prepare what the
    plugin needs for every tenant. Only the approved plugin receives it.

    Receives: the approved plugin's ``plugin_id`` and its ``api``, bound to no tenant.

    Returns: nothing; a return value is ignored.

    Permission: none.
    """


@spec(HookKind.NOTIFY)
def plugin_enabled(
    plugin_id: str, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A plugin was enabled for a tenant.

    Fires: once, after the plugin's activation for ``context.tenant`` is saved, in the
    process that enabled it (not while it is suspended for the tenant). It is the
    plugin's first call for the tenant: prepare the tenant's data. Only the enabled
    plugin receives it. Raising does not undo the change.

    Receives: the enabled plugin's ``plugin_id``, the ``context`` (``context.user`` is
    None: the registry knows who enabled it only by name, in its audit trail) and the
    plugin's ``api`` and ``settings`` for the tenant.

    Returns: nothing; a return value is ignored.

    Permission: none.
    """


@spec(HookKind.NOTIFY)
def plugin_disabled(
    plugin_id: str, context: Context, api: PluginAPI, settings: Mapping[str, JSONValue]
) -> None:
    """A plugin was disabled for a tenant.

    Fires: once, after the plugin's deactivation for ``context.tenant`` is saved, in
    the process that disabled it. The disabled plugin receives it, as its last call for
    the tenant (the one exception to "only enabled plugins"), to tidy up; no other
    plugin does. A plugin that is not approved (nor loaded), or is suspended for the
    tenant, receives nothing. Raising does not undo the change.

    Receives: the disabled plugin's ``plugin_id``, the ``context`` and the plugin's
    ``api`` and ``settings`` for the tenant.

    Returns: nothing; a return value is ignored.

    Permission: none.
    """


@spec(HookKind.NOTIFY)
def plugin_settings_changed(
    plugin_id: str,
    changed: Mapping[str, JSONValue],
    context: Context,
    api: PluginAPI,
    settings: Mapping[str, JSONValue],
) -> None:
    """A plugin's settings were changed for a tenant.

    Fires: once, after new setting values for ``context.tenant`` are validated and
    saved, in the process that saved them, when a value the plugin sees changed. Only
    that plugin receives it, and only where it runs (enabled for the tenant). Raising
    does not undo the change.

    Receives: the plugin's ``plugin_id``; ``changed``, which maps each changed setting
    to its new value (its default when it was reset), with the values of ``secret``
    settings masked as ``"********"`` (a plugin reads its own secrets with
    ``api.get_setting``, or in ``settings``); the ``context`` and the plugin's ``api``
    and ``settings`` for the tenant.

    Returns: nothing; a return value is ignored.

    Permission: none.
    """


@spec(HookKind.NOTIFY)
def plugin_upgraded(  # noqa: PLR0917 - a hook's arguments are passed by name
    plugin_id: str,
    from_version: str,
    to_version: str,
    context: Context,
    api: PluginAPI,
    settings: Mapping[str, JSONValue],
) -> Mapping[str, JSONValue] | None:
    """A plugin is being upgraded for a tenant: its migration hook.

    Fires: at the switch to an approved new version (see docs/upgrades.md), once for
    each tenant the plugin is enabled for (and not suspended for), before the new
    version handles any event. Only the upgraded plugin receives it, running its NEW
    code (in its sandbox, with its sandbox's time limit, when it runs sandboxed; in
    process with the upgrade policy's ``migration_timeout``), while the previous
    version goes on serving every call.

    Receives: the upgraded plugin's ``plugin_id``, ``from_version`` (the version that
    serves until the switch) and ``to_version`` (the one running this), the ``context`` of
    the tenant (``context.user`` is None), the new version's ``api`` for the tenant,
    and ``settings``: the tenant's settings migrated to the new schema (values kept
    where the new fields take them, defaults for new fields).

    Returns: None, or a mapping of settings to change for the tenant (checked against
    the new schema; ``None`` resets one to its default); they are stored with the
    switch, in one transaction.

    Raising, timing out, or returning settings the schema refuses aborts the upgrade
    for every tenant: the previous version keeps serving with its settings untouched,
    and the failure is recorded with its traceback in the plugin's failure log and
    the audit trail (``upgrade failed``). What the migration wrote elsewhere (its
    key-value store, the app through its ``api``) is not undone, and a host that dies
    during the switch leaves the migration to run again in the next one: write
    migrations that can run again. One host makes each switch (it claims it first).

    Permission: none.
    """


@spec(HookKind.NOTIFY, tenant_scoped=False)
def plugin_uninstalled(plugin_id: str, api: PluginAPI) -> None:
    """A plugin is being uninstalled.

    Fires: once, after the uninstall is saved (its tenants' activations and settings
    are gone, its history and audit trail stay), in the process that uninstalled it,
    before its code is unloaded there. Only the plugin receives it, as its last call,
    to remove what it keeps outside the host (webhooks at other services, say), with
    the permissions it was approved with. Raising does not undo the uninstall.

    Receives: the plugin's ``plugin_id`` and its ``api``, bound to no tenant.

    Returns: nothing; a return value is ignored.

    Permission: none.
    """


@spec(HookKind.NOTIFY, tenant_scoped=False, host_only=True)
def plugin_suspended(
    plugin_id: str, reason: str, tenant: str | None, context: Context | None
) -> None:
    """A plugin was suspended (a host notification).

    Fires: for every suspension, whoever made it: the circuit breaker after
    repeated failures, an admin (``host.suspend``, ``Registry.suspend``, the CLI,
    the admin pages) or the host finding that the plugin's code changed since it
    was installed. Its code then runs no more for ``tenant`` (or for any tenant,
    when ``tenant`` is None) until an admin resumes it. It fires in every process
    of the app, once, from the suspension's audit event: at once in the process
    whose breaker tripped or whose worker start found changed code, at their next
    refresh in the others. A host started later does not hear older suspensions;
    resuming fires nothing.

    Receives: the suspended plugin's ``plugin_id``; ``reason``, a sentence saying
    why (the failures that tripped the breaker, the admin's reason, the code
    change); ``tenant``, the tenant it is suspended for, or None when it is
    suspended everywhere; ``context``, the call in which the last failure
    happened, only in the process whose breaker tripped; else None.

    Returns: nothing; a return value is ignored.

    Only the host's own implementations (alerts, dashboards) are called, never
    plugins': ``context`` belongs to one tenant, and plugins never see another
    tenant's calls. That is why the hook has no ``api``.

    Permission: none (plugins do not receive it).
    """


@spec(HookKind.NOTIFY, tenant_scoped=False, host_only=True)
def plugin_failing(
    plugin_id: str, digest: Mapping[str, JSONValue], notice: int, origin: bool
) -> None:
    """A plugin started failing: new failures since its last notice (a host notification).

    Fires: in every process of the app, once per notice, at the host's refresh after
    a host recorded the plugin's new failures and wrote a ``failing`` audit event for
    them; at most one notice per plugin per ``notice_interval`` (15 minutes unless
    the host is told otherwise). A host started later does not hear older notices.

    Receives: the plugin's ``plugin_id``; ``digest``, what failed since the last
    notice (``count``, ``hooks``, ``tenants``, ``messages``: the newest few, each
    cut short; ``since``); ``notice``, the audit event's id (the same in every
    process); ``origin``, True only in the process that wrote the notice (so one
    process acts once for all, as :class:`~services_ai_plugins.FailureMailer` does).

    Returns: nothing; a return value is ignored.

    The messages are what the plugin's exceptions said: a hostile plugin writes
    them. Escape them wherever they are shown.

    Permission: none (plugins do not receive it).
    """


def _collect(namespace: Mapping[str, object]) -> dict[str, HookInfo]:
    found: dict[str, HookInfo] = {}
    for value in namespace.values():
        info = getattr(value, _INFO_ATTRIBUTE, None)
        if isinstance(info, HookInfo):
            found[info.name] = info
    return found


#: The built-in hooks by name, in the order of this module (read-only).
HOOKS: Final[Mapping[str, HookInfo]] = types.MappingProxyType(_collect(dict(globals())))
