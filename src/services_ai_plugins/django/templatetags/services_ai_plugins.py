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

from typing import Any

from django import template
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from ...events import Context, HtmlFragment, Widget
from ..conf import get_host, plugins_settings

register = template.Library()


def _context_of(context: template.Context) -> Context | None:
    request = context.get("request")
    found = getattr(request, "plugins_context", None) if request is not None else None
    return found if isinstance(found, Context) else None


def _trusted(plugin_id: str | None) -> bool:
    if plugin_id is None:
        return False
    return get_host().runs_in_process(plugin_id) or plugins_settings().trust_sandboxed_html


def _fragments(context: template.Context, hook: str) -> SafeString:
    scope = _context_of(context)
    if scope is None:
        return mark_safe("")
    found: list[HtmlFragment] = get_host().call_hook(hook, context=scope)
    parts: list[str] = []
    for fragment in found:
        if _trusted(fragment.plugin_id):
            parts.append(fragment.html)
        elif hook != "inject_head":
            parts.append(escape(fragment.html))
    return mark_safe("".join(parts))  # noqa: S308 - untrusted parts escaped above


def _widget_body(widget: Widget) -> SafeString:
    if _trusted(widget.plugin_id):
        return mark_safe(widget.html)  # noqa: S308 - trusted code (see the module docstring)
    return format_html(
        '<iframe sandbox="" class="plugin-widget-frame" title="{}" srcdoc="{}"></iframe>',
        widget.title,
        widget.html,
    )


@register.simple_tag(takes_context=True)
def plugins_head(context: template.Context) -> SafeString:
    """The plugins' ``<head>`` fragments for the request's tenant."""
    return _fragments(context, "inject_head")


@register.simple_tag(takes_context=True)
def plugins_footer(context: template.Context) -> SafeString:
    """The plugins' fragments for the end of ``<body>``."""
    return _fragments(context, "inject_footer")


@register.simple_tag(takes_context=True)
def plugins_widgets(context: template.Context) -> SafeString:
    """The plugins' dashboard widgets, lowest ``order`` first, each in a ``<section>``."""
    scope = _context_of(context)
    if scope is None:
        return mark_safe("")
    widgets: list[Widget] = get_host().call_hook("dashboard_widget", context=scope)
    ordered = sorted(widgets, key=lambda w: w.order)
    return format_html_join(
        "\n",
        '<section class="plugin-widget plugin-widget-{}" data-plugin="{}"><h2>{}</h2>{}</section>',
        ((w.size, w.plugin_id or "", w.title, _widget_body(w)) for w in ordered),
    )


@register.simple_tag
def plugin_url(plugin_id: str, name: str, **params: Any) -> str:
    """The URL path of a plugin's route (``reverse("plugins:<plugin_id>:<name>")``)."""
    from django.urls import reverse  # noqa: PLC0415

    url: str = reverse(f"plugins:{plugin_id}:{name}", kwargs={k: str(v) for k, v in params.items()})
    return url


__all__ = ["plugin_url", "plugins_footer", "plugins_head", "plugins_widgets"]
