"""Where a host and the command line keep the registry and plugin code when told nothing.

One rule for both, so that a plugin installed with the command line is seen by
a host built with its defaults, wherever each was started:

1. ``$SERVICES_AI_PLUGINS_DB`` (a SQLite file, or a ``postgresql://`` URL) and
   ``$SERVICES_AI_PLUGINS_DIR`` (the plugins folder), a relative path made
   absolute against the working folder once, when the configuration is read
   (when the host is created);
2. else the per-user data folder: ``$XDG_DATA_HOME/services-ai-plugins`` when
   ``XDG_DATA_HOME`` is an absolute path, else
   ``~/.local/share/services-ai-plugins`` (on Windows
   ``%LOCALAPPDATA%\\services-ai-plugins`` when set), holding
   ``services-ai-plugins.db`` and ``plugins/``.

Never the working folder of whoever imported the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._kinds import DEFAULT_DB, DEFAULT_PLUGINS_DIR

if TYPE_CHECKING:
    from ._storage._protocol import Storage

__all__ = [
    "APP_FOLDER",
    "DB_ENV",
    "DIR_ENV",
    "HostConfig",
    "data_home",
    "is_database_url",
    "redacted",
]

#: The environment variable naming the registry: a SQLite file or a PostgreSQL URL.
DB_ENV: Final = "SERVICES_AI_PLUGINS_DB"
#: The environment variable naming the folder installed plugin code lives in.
DIR_ENV: Final = "SERVICES_AI_PLUGINS_DIR"
#: The folder's name under the per-user data folder.
APP_FOLDER: Final = "services-ai-plugins"

#: The URL schemes taken for a PostgreSQL database (libpq's own two).
_POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


def is_database_url(value: str) -> bool:
    """Whether a registry value is a PostgreSQL URL rather than a SQLite file."""
    return value.lower().startswith(_POSTGRES_SCHEMES)


def redacted(value: str) -> str:
    """A registry value fit for messages: a URL's password replaced by ``***``."""
    scheme, _, rest = value.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return value
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


def data_home(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user folder the defaults live in (see the module's rule; not created here).

    :raises ValueError: when no home folder can be found (name the places with
        ``$SERVICES_AI_PLUGINS_DB`` and ``$SERVICES_AI_PLUGINS_DIR`` then).
    """
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG rule: a relative value is ignored
        return Path(xdg) / APP_FOLDER
    local = env.get("LOCALAPPDATA", "")
    if os.name == "nt" and local and Path(local).is_absolute():
        return Path(local) / APP_FOLDER
    home = env.get("HOME", "")
    if not home or not Path(home).is_absolute():
        try:
            home = str(Path.home())
        except RuntimeError:
            home = ""
    if not home or not Path(home).is_absolute():
        raise ValueError(
            "no home folder to keep the plugin registry in: set "
            f"${DB_ENV} and ${DIR_ENV} (or $XDG_DATA_HOME) to absolute paths"
        )
    return Path(home) / ".local" / "share" / APP_FOLDER


def _db_value(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not (is_database_url(value) or Path(value).is_absolute()):
        raise ValueError(
            f"HostConfig.db must be an absolute SQLite file path or a postgresql:// URL, "
            f"got {value!r}"
        )


def _absolute_folder(instance: object, attribute: attrs.Attribute[Any], value: Path) -> None:
    if not value.is_absolute():
        raise ValueError(
            f"HostConfig.{attribute.name} must be an absolute path, got {str(value)!r}"
        )


def _absolute(value: str) -> Path:
    return Path(value).expanduser().absolute()


@attrs.frozen(kw_only=True)
class HostConfig:
    """Where a host keeps its registry and plugin code: absolute, decided once.

    ``PluginHost(services)`` with no ``storage`` or ``plugins_dir`` uses
    :meth:`from_env`; pass ``config=HostConfig.at(folder)`` (or your own) to
    choose::

        host = PluginHost(services, config=HostConfig.at(BASE_DIR / "var" / "plugins"))

    The command line follows the same rule (its ``--db`` and ``--plugins-dir``
    come first), so what it installs a host with the defaults sees.

    :raises ValueError: when ``db`` is neither an absolute path nor a
        ``postgresql://`` URL, or ``plugins_dir`` is not absolute.
    """

    #: The registry: an absolute SQLite file path, or a ``postgresql://`` URL.
    db: str = attrs.field(
        converter=os.fspath, validator=_db_value, repr=lambda db: repr(redacted(db))
    )
    #: Where installed plugin code lives (absolute).
    plugins_dir: Path = attrs.field(converter=Path, validator=_absolute_folder)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HostConfig:
        """The configuration the environment gives (``os.environ`` by default).

        ``$SERVICES_AI_PLUGINS_DB`` and ``$SERVICES_AI_PLUGINS_DIR`` when set
        (relative paths made absolute against the working folder now, ``~``
        expanded), else the files in :func:`data_home`.

        :raises ValueError: when a default is needed and no home folder can be found.
        """
        env = os.environ if environ is None else environ
        db = env.get(DB_ENV, "")
        folder = env.get(DIR_ENV, "")
        if db:
            db = db if is_database_url(db) else str(_absolute(db))
        else:
            db = str(data_home(env) / DEFAULT_DB)
        plugins_dir = _absolute(folder) if folder else data_home(env) / DEFAULT_PLUGINS_DIR
        return cls(db=db, plugins_dir=plugins_dir)

    @classmethod
    def at(cls, folder: str | os.PathLike[str]) -> HostConfig:
        """``services-ai-plugins.db`` and ``plugins/`` in ``folder`` (made absolute now)."""
        base = _absolute(os.fspath(folder))
        return cls(db=str(base / DEFAULT_DB), plugins_dir=base / DEFAULT_PLUGINS_DIR)

    @property
    def is_database_url(self) -> bool:
        """Whether :attr:`db` is a PostgreSQL URL (else a SQLite file)."""
        return is_database_url(self.db)

    def open_storage(self) -> Storage:
        """Open the registry :attr:`db` names: a ``PostgresStorage`` for a URL (psycopg is
        imported only then), else a ``SQLiteStorage``, its folder created if missing."""
        if self.is_database_url:
            from ._storage._postgres._storage import PostgresStorage  # noqa: PLC0415 - optional: only for a URL

            return PostgresStorage(self.db)
        from ._storage._sqlite import SQLiteStorage  # noqa: PLC0415 - only when it is opened

        Path(self.db).parent.mkdir(parents=True, exist_ok=True)
        return SQLiteStorage(self.db)
