"""Hypothesis strategies for event payloads, hook calls, manifests, settings and JSON.

Plugin authors can property-test their hooks with every kind of payload, and
host adapters the code that reads manifests or setting values::

    from hypothesis import given
    from services_ai_plugins_testing import strategies as sais


    @given(sais.leads(tenant="acme"))
    def test_every_lead_with_an_address_is_welcomed(lead):
        services = FakeHostServices()
        api = PluginAPI("welcome", services, tenant="acme", grants=frozenset({"send_email"}))
        Welcome().lead_created(lead=lead, api=api)
        assert len(services.emails("acme")) == (1 if lead.email else 0)


    @given(sais.manifests())
    def test_my_admin_screen_renders_every_manifest(manifest):
        render(manifest)

Three kinds of strategy live here:

* *event payloads*: one strategy per type of
  :mod:`services_ai_plugins.events` (:func:`contexts`, :func:`users`,
  :func:`leads`, :func:`bookings`, :func:`invoices`, :func:`invoice_lines`,
  :func:`emails`, :func:`sms`, :func:`notifications`, :func:`reports`,
  :func:`widgets`, :func:`html_fragments`, :func:`api_requests`,
  :func:`api_responses`, :func:`routes`), :func:`payloads` by type, and
  :func:`hook_arguments` for a whole hook call. Every record is valid and
  realistic (names, addresses at example domains, money as
  :class:`~decimal.Decimal` with two places, timezone-aware times, bookings
  that end after they start, invoices whose dates follow their status), and
  the records inside one (a context's user, an invoice's lines) belong to its
  tenant. ``tenant=`` pins the tenant: one name or a strategy of names; by
  default :func:`tenants`;
* *valid* manifest input: :func:`manifest_dicts` and :func:`manifests` load
  without a :class:`~services_ai_plugins.ManifestError`; :func:`setting_specs` are
  consistent; :func:`setting_values` pass
  :func:`~services_ai_plugins.validate_settings`; the strings (:func:`plugin_ids`,
  :func:`versions`, :func:`specifiers`, :func:`dependencies`, ...) follow the
  manifest's rules;
* *fuzzing* input, mostly invalid: :func:`json_values`,
  :func:`manifest_like_dicts`, :func:`mutated_manifest_dicts`,
  :func:`json_texts` and :func:`json_bytes`, for checking that a loader
  refuses bad input with its own error and nothing else.
"""

from __future__ import annotations

from ._base import MANIFEST_KEYS, SETTING_KEYS
from ._fuzzing import json_bytes, json_texts, manifest_like_dicts, mutated_manifest_dicts
from ._hooks import hook_arguments
from ._json import json_values
from ._manifests import manifest_dicts, manifests
from ._payloads import (
    api_requests,
    api_responses,
    bookings,
    contexts,
    emails,
    html_fragments,
    invoice_lines,
    invoices,
    leads,
    notifications,
    payloads,
    reports,
    routes,
    sms,
    tenants,
    users,
    widgets,
)
from ._settings import setting_specs, setting_values
from ._strings import (
    dependencies,
    display_names,
    entry_points,
    hook_names,
    permission_names,
    plugin_ids,
    setting_names,
    specifiers,
    versions,
)

__all__ = [
    "MANIFEST_KEYS",
    "SETTING_KEYS",
    "api_requests",
    "api_responses",
    "bookings",
    "contexts",
    "dependencies",
    "display_names",
    "emails",
    "entry_points",
    "hook_arguments",
    "hook_names",
    "html_fragments",
    "invoice_lines",
    "invoices",
    "json_bytes",
    "json_texts",
    "json_values",
    "leads",
    "manifest_dicts",
    "manifest_like_dicts",
    "manifests",
    "mutated_manifest_dicts",
    "notifications",
    "payloads",
    "permission_names",
    "plugin_ids",
    "reports",
    "routes",
    "setting_names",
    "setting_specs",
    "setting_values",
    "sms",
    "specifiers",
    "tenants",
    "users",
    "versions",
    "widgets",
]

#: The keys a manifest document may have, besides ``$schema`` and ``x-`` keys.
