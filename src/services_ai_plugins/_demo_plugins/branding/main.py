"""Branding: a signature under every e-mail, a brand colour in every page's head.

It shows a ``FILTER`` hook (it returns a changed copy of the e-mail, made with
``attrs.evolve``: payloads are frozen) and HTML injection, which needs the
high-risk ``inject_html`` permission.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from services_ai_plugins import PluginAPI, hookimpl
from services_ai_plugins.events import Context, Email, HtmlFragment

#: The brand colours a tenant chooses from, as CSS colours.
COLOURS = {"blue": "#0a7cff", "green": "#2e7d32", "orange": "#e4572e", "purple": "#6a1b9a"}


class Branding:
    """Signs e-mails and colours pages with the tenant's settings."""

    @hookimpl
    def filter_email(self, email: Email, settings: Mapping[str, Any]) -> Email:
        """Append the signature, once."""
        signature = f"\n\n-- \n{settings['signature']}"
        if email.body.endswith(signature):
            return email
        return attrs.evolve(email, body=email.body + signature)

    @hookimpl
    def inject_head(
        self, context: Context, api: PluginAPI, settings: Mapping[str, Any]
    ) -> HtmlFragment:
        """The brand colour for the browser's toolbar."""
        return HtmlFragment(
            tenant=context.tenant,
            html=f'<meta name="theme-color" content="{COLOURS[settings["colour"]]}">',
            placement="head",
            plugin_id=api.plugin_id,
        )
