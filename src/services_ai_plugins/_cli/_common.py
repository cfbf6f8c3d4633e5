"""What the command groups share: the registry options, opening the storage, results.

The registry and plugins folder are ``--db`` and ``--plugins-dir`` (relative to
the working folder), else the host's own defaults (:class:`HostConfig`:
``$SERVICES_AI_PLUGINS_DB`` and ``$SERVICES_AI_PLUGINS_DIR``, else the per-user
data folder), so that what the command line installs a host with its defaults sees.

A command returns a :data:`Result` (its JSON fields and its lines for people),
or a :data:`ResultWithCode` when its exit code is not always 0.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from .._config import DB_ENV, DIR_ENV, HostConfig, is_database_url, redacted
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


#: What a command returns: its JSON fields (``ok`` is added) and its lines for people.
Result = tuple[dict[str, Any], list[str]]


#: Where the defaults are, for ``--help``.
_DATA_FOLDER: Final = "$XDG_DATA_HOME/services-ai-plugins or ~/.local/share/services-ai-plugins"


def db_value(args: argparse.Namespace) -> str:
    """What ``--db`` (else ``$SERVICES_AI_PLUGINS_DB``, else the host's default) names.

    :raises ValueError: when a default is needed and there is no home folder to keep it in.
    """
    given = getattr(args, "db", None)
    return str(given) if given else HostConfig.from_env().db


def db_path(args: argparse.Namespace) -> Path:
    """The SQLite file ``--db`` names (meaningless for a URL: see :func:`is_database_url`)."""
    return Path(db_value(args))


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
            raise StorageError(f"{redacted(value)}: {exc}") from exc
    else:
        db = Path(value)
        if must_exist and not db.is_file():
            raise StorageError(
                f"{db}: no such registry database; install a plugin first, or name the "
                f"database with --db or ${DB_ENV}"
            )
        if not getattr(args, "db", None):  # the host's default (or the environment's) folder
            db.parent.mkdir(parents=True, exist_ok=True)
        storage = SQLiteStorage(db)
    try:
        yield storage
    finally:
        storage.close()


def plugins_path(args: argparse.Namespace) -> Path:
    """What ``--plugins-dir`` (else ``$SERVICES_AI_PLUGINS_DIR``, else the host's default) names."""
    given = getattr(args, "plugins_dir", None)
    return Path(given) if given else HostConfig.from_env().plugins_dir


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
        help=f"the registry: a SQLite file or a postgresql:// URL (${DB_ENV}; "
        f"default {DEFAULT_DB} in {_DATA_FOLDER})",
    )
    registry_options.add_argument(
        "--plugins-dir",
        default=argparse.SUPPRESS,
        help=f"where plugin code is kept (${DIR_ENV}; default {DEFAULT_PLUGINS_DIR}/ in "
        f"{_DATA_FOLDER})",
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
