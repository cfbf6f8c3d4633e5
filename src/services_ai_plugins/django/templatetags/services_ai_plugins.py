"""Template tags: ``{% load services_ai_plugins %}``.

``{% plugins_head %}`` in ``<head>``, ``{% plugins_footer %}`` before ``</body>``,
``{% plugins_widgets %}`` where the dashboard's boxes go, and ``{% plugin_url "crm-sync"
"lead" lead_id=lead.pk %}`` for a link to a plugin route. Each renders for the request's
tenant (``request.plugins_context``, set by the middleware; the ``request`` context
processor must be on) and renders nothing without one.

What is trusted HTML and what is not:

- A plugin running in the web process (an entry point, a folder the operator placed, a
  plugin named in ``SANDBOX["trusted"]``): its HTML is inserted as it is. That code can
  already do anything the app can.
- A sandboxed (uploaded) plugin: its HTML never reaches the app's pages as markup. Its
  widget is shown in an ``<iframe sandbox srcdoc=...>`` (the HTML renders, with no script
  and no access to the page, its cookies or its origin); its footer fragment is escaped
  (shown as text); its head fragment is left out (text has no place in ``<head>``).
- Widget titles are always escaped.

``"TRUST_SANDBOXED_HTML": True`` in ``SERVICES_AI_PLUGINS`` inserts sandboxed plugins'
HTML as it is too: only with a sanitiser or a review you trust.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from ...events import Context
from ...web import footer_html, head_html, widgets_html
from ..conf import get_host, plugins_settings

register = template.Library()


def _context_of(context: template.Context) -> Context | None:
    request = context.get("request")
    found = getattr(request, "plugins_context", None) if request is not None else None
    return found if isinstance(found, Context) else None


def _html(context: template.Context, render: Callable[..., str]) -> SafeString:
    scope = _context_of(context)
    if scope is None:
        return mark_safe("")
    trust = plugins_settings().trust_sandboxed_html
    # The web module's rules: untrusted HTML escaped, framed or left out there.
    return mark_safe(render(get_host(), scope, trust_sandboxed=trust))  # noqa: S308


@register.simple_tag(takes_context=True)
def plugins_head(context: template.Context) -> SafeString:
    """The plugins' ``<head>`` fragments for the request's tenant."""
    return _html(context, head_html)


@register.simple_tag(takes_context=True)
def plugins_footer(context: template.Context) -> SafeString:
    """The plugins' fragments for the end of ``<body>``."""
    return _html(context, footer_html)


@register.simple_tag(takes_context=True)
def plugins_widgets(context: template.Context) -> SafeString:
    """The plugins' dashboard widgets, lowest ``order`` first, each in a ``<section>``."""
    return _html(context, widgets_html)


@register.simple_tag
def plugin_url(plugin_id: str, name: str, **params: Any) -> str:
    """The URL path of a plugin's route (``reverse("plugins:<plugin_id>:<name>")``)."""
    from django.urls import reverse  # noqa: PLC0415

    url: str = reverse(f"plugins:{plugin_id}:{name}", kwargs={k: str(v) for k, v in params.items()})
    return url


__all__ = ["plugin_url", "plugins_footer", "plugins_head", "plugins_widgets"]
