"""The admin's signed values: CSRF tokens bound to the admin, and the messages of a redirect."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Final

__all__ = ["FLASH_COOKIE", "SESSION_COOKIE", "Signer"]

#: The random per-browser value a CSRF token is bound to (SameSite=Strict, HttpOnly).
SESSION_COOKIE: Final = "sap_admin_session"
#: The messages a POST leaves for the page it redirects to (signed).
FLASH_COOKIE: Final = "sap_admin_flash"
#: The most characters of the messages kept across a redirect (a cookie holds about 4 KiB).
_FLASH_CHARS: Final = 2000


class Signer:
    """HMAC-SHA256 with the admin's ``secret``, one purpose per call."""

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(key) < 16:
            raise ValueError("AdminApp: secret must be at least 16 bytes (a random string)")
        self._key: Final = key

    def _mac(self, purpose: str, *parts: str) -> str:
        message = "\x00".join((purpose, *parts)).encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(32)

    def csrf_token(self, session: str, admin: str) -> str:
        """The token every POST form carries: the session cookie and the admin's name, signed."""
        return self._mac("csrf", session, admin)

    def csrf_ok(self, session: str, admin: str, token: str) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.csrf_token(session, admin), token)

    def flash(self, session: str, notes: list[tuple[str, str]]) -> str:
        kept: list[tuple[str, str]] = []
        room = _FLASH_CHARS
        for level, text in notes:
            if room <= 0:
                break
            kept.append((level, text if len(text) <= room else text[: room - 1] + "…"))
            room -= len(text)
        payload = base64.urlsafe_b64encode(json.dumps(kept).encode("utf-8")).decode("ascii")
        return f"{payload}.{self._mac('flash', session, payload)}"

    def unflash(self, session: str, value: str) -> list[tuple[str, str]]:
        payload, _, mac = value.partition(".")
        if not payload or not hmac.compare_digest(self._mac("flash", session, payload), mac):
            return []
        try:
            notes = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
        except ValueError:
            return []
        return [(str(level), str(text)) for level, text in notes]
