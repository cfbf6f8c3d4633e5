"""Secret settings at rest: sealed with Fernet under keys the application supplies.

A secret's value is stored as ``{"$fernet": "<token>"}``: a plain secret is
always a string, so a sealed value can never be taken for one, and a string
stored for a secret setting is a plaintext left from before encryption.

The keys come from the ``secret_keys`` argument of :class:`PluginHost` or
:class:`Registry`, else from ``$SERVICES_AI_PLUGINS_SECRET_KEYS`` (Fernet keys,
comma-separated, newest first). The newest key seals; every key opens
(``MultiFernet``), so a key is rotated by putting a new one first, calling
:meth:`Registry.rotate_secrets`, and then dropping the old one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, TypeAlias, final

from ._json import JSONValue
from .errors import SecretKeyError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

__all__ = [
    "SEALED_TAG",
    "SECRET_KEYS_ENV",
    "SecretBox",
    "SecretKeys",
    "is_sealed",
    "throwaway_keys",
]

#: The environment variable the keys are read from when none are given.
SECRET_KEYS_ENV: Final = "SERVICES_AI_PLUGINS_SECRET_KEYS"  # noqa: S105 - a variable name
#: The key of the one-entry object a sealed value is stored as.
SEALED_TAG: Final = "$fernet"

#: Fernet keys (url-safe base64 text of 32 bytes), newest first.
SecretKeys: TypeAlias = Sequence[str | bytes]

_INSTALL_HINT: Final = (
    "secret settings are encrypted with the 'cryptography' package, which is not installed: "
    "pip install 'services-ai-plugins[secrets]'"
)
_HOW_TO_CONFIGURE: Final = (
    f"pass secret_keys=[...] to PluginHost or Registry, or set ${SECRET_KEYS_ENV} to "
    "Fernet keys, comma-separated, newest first (make one with: python -c "
    '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")'
)


def is_sealed(value: object) -> bool:
    """Whether a stored value is a sealed secret (``{"$fernet": "<token>"}``)."""
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(SEALED_TAG), str)


def throwaway_keys() -> list[str] | None:
    """One new key, for a registry whose storage dies with it (``check``'s memory storage);
    None (the environment's keys) without ``cryptography``."""
    try:
        from cryptography.fernet import Fernet  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return [Fernet.generate_key().decode("ascii")]


@final
class SecretBox:
    """Seals and opens secret setting values with the configured keys.

    ``keys`` None reads them from ``$SERVICES_AI_PLUGINS_SECRET_KEYS`` (unset
    or blank: no keys). Keys are checked at once when ``cryptography`` is
    installed; without it, the error comes when a secret is sealed or opened,
    so settings that are not secret keep working.

    :raises SecretKeyError: when a key is not a Fernet key (which one, by
        position, never its text).
    """

    __slots__ = ("_fernets", "_missing", "_multi_fernet", "source")

    def __init__(self, keys: SecretKeys | None = None) -> None:
        #: Where the keys came from, for messages.
        self.source: Final = f"${SECRET_KEYS_ENV}" if keys is None else "secret_keys"
        if keys is None:
            text = os.environ.get(SECRET_KEYS_ENV, "")
            given: list[str | bytes] = [part.strip() for part in text.split(",") if part.strip()]
        else:
            if isinstance(keys, (str, bytes)):
                raise TypeError("secret_keys must be a list of keys, newest first, not one key")
            given = list(keys)
        self._fernets: tuple[Fernet, ...] = ()
        self._multi_fernet: MultiFernet | None = None
        self._missing: ImportError | None = None
        if not given:
            return
        try:
            from cryptography.fernet import Fernet, MultiFernet  # noqa: PLC0415 - optional
        except ImportError as exc:
            self._missing = exc
            return
        fernets = []
        for index, key in enumerate(given, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                raise SecretKeyError(
                    f"{self.source}: key {index} of {len(given)} is not a Fernet key "
                    "(url-safe base64 text of 32 bytes); " + _HOW_TO_CONFIGURE
                ) from None  # the cause would repeat the key text
        self._fernets = tuple(fernets)
        self._multi_fernet = MultiFernet(fernets)

    @property
    def configured(self) -> bool:
        """Whether there are keys (and ``cryptography`` to use them)."""
        return bool(self._fernets)

    def __repr__(self) -> str:
        return f"<SecretBox: {len(self._fernets)} key(s) from {self.source}>"

    def seal(self, plaintext: str, *, plugin_id: str, tenant: str, setting: str) -> JSONValue:
        """Encrypt a secret with the newest key, as the value to store.

        :raises SecretKeyError: when no key is configured, or ``cryptography``
            is not installed.
        """
        token = self._multi(plugin_id, tenant, setting, "cannot be stored").encrypt(
            plaintext.encode("utf-8")
        )
        return {SEALED_TAG: token.decode("ascii")}

    def open(
        self, stored: Mapping[str, JSONValue], *, plugin_id: str, tenant: str, setting: str
    ) -> str:
        """Decrypt a sealed value with whichever configured key sealed it.

        :raises SecretKeyError: when no key opens it (a wrong or removed key,
            or a damaged value), or none is configured.
        """
        multi = self._multi(plugin_id, tenant, setting, "cannot be read")
        from cryptography.fernet import InvalidToken  # noqa: PLC0415 - present once keys are

        try:
            return multi.decrypt(str(stored[SEALED_TAG]).encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                f"none of the {len(self._fernets)} secret key(s) from {self.source} decrypts "
                "it: was it sealed under a key since removed, or is the key wrong?",
                plugin_id=plugin_id,
                tenant=tenant,
                setting=setting,
            ) from None

    def require(self) -> None:
        """Check that secrets can be sealed.

        :raises SecretKeyError: when no key is configured, or ``cryptography``
            is not installed.
        """
        self._multi(None, None, None, "secrets cannot be encrypted")

    def is_current(self, stored: object) -> bool:
        """Whether ``stored`` is a value sealed with the newest key."""
        if not self._fernets or not isinstance(stored, Mapping) or not is_sealed(stored):
            return False
        from cryptography.fernet import InvalidToken  # noqa: PLC0415 - present once keys are

        try:
            self._fernets[0].decrypt(str(stored[SEALED_TAG]).encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def _multi(
        self, plugin_id: str | None, tenant: str | None, setting: str | None, what: str
    ) -> MultiFernet:
        if self._missing is not None:
            raise SecretKeyError(
                f"{what}: {_INSTALL_HINT}", plugin_id=plugin_id, tenant=tenant, setting=setting
            ) from self._missing
        if self._multi_fernet is None:
            try:
                import cryptography  # noqa: F401, PLC0415 - only to name the right fix
            except ImportError as exc:
                raise SecretKeyError(
                    f"{what}: {_INSTALL_HINT}", plugin_id=plugin_id, tenant=tenant, setting=setting
                ) from exc
            raise SecretKeyError(
                f"{what}: no secret keys are configured; {_HOW_TO_CONFIGURE}",
                plugin_id=plugin_id,
                tenant=tenant,
                setting=setting,
            )
        return self._multi_fernet
