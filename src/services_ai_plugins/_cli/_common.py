"""What the command groups share: the registry options, opening the storage, results.

A command returns a :data:`Result` (its JSON fields and its lines for people),
or a :data:`ResultWithCode` when its exit code is not always 0.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from .._kinds import DEFAULT_DB, DEFAULT_PLUGINS_DIR
from .._registry import Registry, Suspension
from .._storage._protocol import Storage
from .._storage._sqlite import SQLiteStorage
from ..errors import StorageError

__all__ = [
    "DB_ENV",
    "DIR_ENV",
    "CommandAdder",
    "Handler",
    "Result",
    "ResultWithCode",
    "actor_name",
    "command_adder",
    "db_path",
    "db_value",
    "duration",
    "is_database_url",
    "open_registry",
    "open_storage",
    "plugins_path",
    "positive",
    "suspension_document",
]


DB_ENV: Final = "SERVICES_AI_PLUGINS_DB"


DIR_ENV: Final = "SERVICES_AI_PLUGINS_DIR"


#: What a command returns: its JSON fields (``ok`` is added) and its lines for people.
Result = tuple[dict[str, Any], list[str]]


#: The URL schemes ``--db`` takes for a PostgreSQL database (libpq's own two).
_POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


def db_value(args: argparse.Namespace) -> str:
    """What ``--db`` (else ``$SERVICES_AI_PLUGINS_DB``, else the default) names."""
    return str(getattr(args, "db", None) or os.environ.get(DB_ENV) or DEFAULT_DB)


def is_database_url(value: str) -> bool:
    """Whether a ``--db`` value is a PostgreSQL URL rather than a SQLite file."""
    return value.lower().startswith(_POSTGRES_SCHEMES)


def db_path(args: argparse.Namespace) -> Path:
    """The SQLite file ``--db`` names (meaningless for a URL: see :func:`is_database_url`)."""
    return Path(db_value(args))


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


@contextmanager
def open_storage(args: argparse.Namespace, *, must_exist: bool = False) -> Iterator[Storage]:
    """The storage ``--db`` names: a ``PostgresStorage`` for a ``postgresql://`` URL,
    else a ``SQLiteStorage`` file; closed on leaving.

    ``must_exist`` refuses a SQLite file that does not exist (with a
    ``StorageError`` naming it) instead of creating it. A PostgreSQL database
    always exists: opening it creates the registry's tables if missing.
    psycopg is imported only for a URL; without the ``postgres`` extra the
    URL is refused with a ``StorageError`` saying what to install.
    """
    value = db_value(args)
    storage: Storage
    if is_database_url(value):
        try:
            from .._storage._postgres._storage import PostgresStorage  # noqa: PLC0415 - optional: only for a URL

            storage = PostgresStorage(value)
        except ImportError as exc:
            raise StorageError(f"{_redacted(value)}: {exc}") from exc
    else:
        db = Path(value)
        if must_exist and not db.is_file():
            raise StorageError(
                f"{db}: no such registry database; install a plugin first, or name the "
                f"database with --db or ${DB_ENV}"
            )
        storage = SQLiteStorage(db)
    try:
        yield storage
    finally:
        storage.close()


def plugins_path(args: argparse.Namespace) -> Path:
    return Path(
        getattr(args, "plugins_dir", None) or os.environ.get(DIR_ENV) or DEFAULT_PLUGINS_DIR
    )


def actor_name(args: argparse.Namespace) -> str:
    if getattr(args, "actor", None):
        return str(args.actor)
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment
        return "cli"


@contextmanager
def open_registry(args: argparse.Namespace, *, create: bool = True) -> Iterator[Registry]:
    """The registry in ``--db``; a read (``create=False``) of a missing file creates none.

    Reading a SQLite registry that does not exist shows an empty one (no
    plugins, no events) instead of leaving an empty database file behind.
    """
    value = db_value(args)
    if not create and not is_database_url(value) and not Path(value).exists():
        from .._storage._memory import MemoryStorage  # noqa: PLC0415 - only for a missing database

        yield Registry(MemoryStorage())
        return
    with open_storage(args) as storage:
        yield Registry(storage)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (got {text!r})")
    return value


#: What a command returns when its exit code is not always 0: its Result and the code.
ResultWithCode = tuple[dict[str, Any], list[str], int]


#: A command: its JSON fields and its lines for people (and its exit code, if not always 0).
Handler = Callable[[argparse.Namespace], Result | ResultWithCode]


#: Adds one command that takes the registry options: ``add(name, help, handler)``.
CommandAdder = Callable[[str, str, Handler], Any]


def command_adder(commands: Any, common: argparse.ArgumentParser, prog: str) -> CommandAdder:
    """A function that adds commands taking ``--db``, ``--plugins-dir`` and ``--actor``."""
    registry_options = argparse.ArgumentParser(add_help=False)
    registry_options.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help=f"the SQLite registry (${DB_ENV}; default {DEFAULT_DB})",
    )
    registry_options.add_argument(
        "--plugins-dir",
        default=argparse.SUPPRESS,
        help=f"where plugin code is kept (${DIR_ENV}; default {DEFAULT_PLUGINS_DIR})",
    )
    registry_options.add_argument(
        "--actor", default=argparse.SUPPRESS, help="who is acting, for the audit trail"
    )
    parents = [common, registry_options]

    def add(name: str, help_text: str, handler: Handler) -> Any:
        sub = commands.add_parser(name, parents=parents, help=help_text)
        sub.set_defaults(handler=handler, prog=prog)
        return sub

    return add


def duration(seconds: float) -> str:
    """A duration for people: ``0.850 ms`` below a second, else ``2.50 s``."""
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.3f} ms"


def suspension_document(suspension: Suspension, *, plugin: bool = True) -> dict[str, Any]:
    """A suspension as JSON; ``plugin=False`` leaves out its plugin (shown under the plugin)."""
    document: dict[str, Any] = {"plugin_id": suspension.plugin_id} if plugin else {}
    document.update(
        tenant=suspension.tenant,
        reason=suspension.reason,
        since=suspension.since.isoformat(),
        by=suspension.by,
    )
    return document
