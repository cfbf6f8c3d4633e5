"""The ready-made ``plugin_failing`` listener: an e-mail to the admin per failure notice."""

from __future__ import annotations

import html
import logging
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Final, final

from ._api import HostServices
from ._json import JSONValue
from ._markers import hookimpl
from .events import Email

_logger = logging.getLogger("services_ai_plugins")

#: The most characters of one line the e-mail shows (a plugin's message, a tenant list).
MAX_LINE: Final = 300


def _printable(value: object) -> str:
    """``value`` as one line: control and format characters shown as ``\\uXXXX``, cut short."""
    text = str(value)
    shown = "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
        for c in text[: MAX_LINE * 2]
    )
    return shown if len(shown) <= MAX_LINE else shown[: MAX_LINE - 1] + "…"


def _items(value: JSONValue) -> list[str]:
    return [_printable(v) for v in value] if isinstance(value, list) else []


@final
class FailureMailer:
    """Mails the admin a digest of each ``plugin_failing`` notice, once across processes.

    Register it on the host: ``host.add_listener(FailureMailer(services, to=[...],
    tenant="ops"))``. Every process hears a notice; only the one that wrote it
    (``origin``) mails, and exactly one process writes each notice, so one e-mail
    goes out per notice. The plugin's messages are the plugin's own words: the
    e-mail shows them as text, control characters made visible, each cut to
    :data:`MAX_LINE` characters, and escaped in its HTML part.

    :param services: the app's :class:`HostServices`; its ``send_email`` sends.
    :param to: the admins' addresses.
    :param tenant: the tenant the e-mail is sent on behalf of (the app's own, say).
    :param subject: the subject's start; the plugin's id follows.
    """

    def __init__(
        self,
        services: HostServices,
        *,
        to: Iterable[str],
        tenant: str,
        subject: str = "Plugin failing",
    ) -> None:
        self.services: Final = services
        self.to: Final = tuple(to)
        if not self.to:
            raise ValueError("FailureMailer needs at least one address in to")
        self.tenant: Final = tenant
        self.subject: Final = subject

    @hookimpl
    def plugin_failing(
        self, plugin_id: str, digest: Mapping[str, JSONValue], notice: int, origin: bool
    ) -> None:
        if not origin:
            return  # another process wrote this notice: it mails
        self.services.send_email(self.tenant, self.email(plugin_id, digest, notice))

    def email(self, plugin_id: str, digest: Mapping[str, JSONValue], notice: int) -> Email:
        """The e-mail of one notice (plain text, and the same escaped as HTML)."""
        plugin = _printable(plugin_id)
        lines = [
            f"Plugin {plugin} failed {_printable(digest.get('count'))} time(s)"
            + (f" since {_printable(digest['since'])}." if digest.get("since") else "."),
            "",
            f"Hooks: {_printable(', '.join(_items(digest.get('hooks'))))}",
            f"Tenants: {_printable(', '.join(_items(digest.get('tenants'))) or '(none)')}",
            "",
            "Newest messages:",
            *(f"- {m}" for m in _items(digest.get("messages"))),
            "",
            f"Notice {notice}. See the plugin's failures in the admin.",
        ]
        body = "\n".join(lines)
        markup = "".join(f"<p>{html.escape(line)}</p>" for line in lines if line)
        return Email(
            tenant=self.tenant,
            to=self.to,
            subject=f"{self.subject}: {plugin}",
            body=body,
            html=markup,
        )
