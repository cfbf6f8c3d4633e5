"""What the command groups share: the registry options, opening the storage, results.

The registry and plugins folder are ``--db`` and ``--plugins-dir`` (relative to
the working folder), else the host's own defaults (:class:`HostConfig`:
``$SERVICES_AI_PLUGINS_DB`` and ``$SERVICES_AI_PLUGINS_DIR``, else the per-user
data folder), so that what the command line installs a host with its defaults sees.

A framework that runs the commands on its own registry and host (``manage.py
plugins``) gives :func:`~services_ai_plugins._cli._main.main` a :class:`Site`: the
same command code then opens the site's storage, plugins folder and host, acts as
the site's actor, and refuses ``--db`` and ``--plugins-dir`` (the site decides them).

A command returns a :data:`Result` (its JSON fields and its lines for people),
or a :data:`ResultWithCode` when its exit code is not always 0.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import attrs

from .._config import DB_ENV, DIR_ENV, HostConfig, is_database_url, redacted
from .._kinds import DEFAULT_DB, DEFAULT_PLUGINS_DIR
from .._registry import Registry, Suspension
from .._secrets import SecretKeys
from .._storage._protocol import Storage
from .._storage._sqlite import SQLiteStorage
from .._versions import UpgradePolicy
from ..errors import StorageError

if TYPE_CHECKING:
    from .._host import PluginHost

__all__ = [
    "DB_ENV",
    "DIR_ENV",
    "CommandAdder",
    "Handler",
    "Result",
    "ResultWithCode",
    "Site",
    "actor_name",
    "command_adder",
    "current_site",
    "db_path",
    "db_value",
    "duration",
    "is_database_url",
    "open_registry",
    "open_storage",
    "plugins_path",
    "positive",
    "running_at",
    "suspension_document",
]


#: What a command returns: its JSON fields (``ok`` is added) and its lines for people.
Result = tuple[dict[str, Any], list[str]]


@attrs.frozen(kw_only=True)
class Site:
    """Where the commands run when a framework runs them on its own registry and host.

    ``manage.py plugins`` is one: its storage, plugins folder and host are the Django
    project's (the ``SERVICES_AI_PLUGINS`` setting).
    """

    #: How the commands are invoked there, for usage lines and hints (``manage.py plugins``).
    prog: str
    #: Opens the registry's storage; the command closes it when it is done.
    open_storage: Callable[[], Storage]
    #: Where plugin code is kept.
    plugins_dir: Callable[[], Path]
    #: The site's plugin host, for the commands that call plugins; never closed by them.
    host: Callable[[], PluginHost]
    #: Who acts in the audit trail when ``--actor`` is not given.
    actor: str
    #: Why ``--db`` and ``--plugins-dir`` are refused there: who decides the registry and
    #: the plugins folder instead (ends the usage error).
    decided_by: str
    #: The keys of secret settings, as the site's host has them (None: from the environment).
    secret_keys: Callable[[], SecretKeys | None] = lambda: None
    #: The site host's upgrade policy (None: the default), so that ``upgrade`` approves by
    #: itself what the site's policy approves, and ``rollback`` keeps as many versions.
    upgrades: Callable[[], UpgradePolicy | None] = lambda: None


_site: ContextVar[Site | None] = ContextVar("services_ai_plugins_cli_site", default=None)


def current_site() -> Site | None:
    """The site the commands run at now (None: the command line's own registry)."""
    return _site.get()


@contextmanager
def running_at(site: Site | None) -> Iterator[None]:
    """Run the commands inside the block at ``site`` (None: the command line's own)."""
    token = _site.set(site)
    try:
        yield
    finally:
        _site.reset(token)


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
    storage: Storage
    site = current_site()
    if site is not None:
        storage = site.open_storage()
        try:
            yield storage
        finally:
            storage.close()
        return
    value = db_value(args)
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
    if given:
        return Path(given)
    site = current_site()
    return site.plugins_dir() if site is not None else HostConfig.from_env().plugins_dir


def actor_name(args: argparse.Namespace) -> str:
    if getattr(args, "actor", None):
        return str(args.actor)
    site = current_site()
    if site is not None:
        return site.actor
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
    site = current_site()
    if site is not None:
        with open_storage(args) as storage:
            yield Registry(storage, secret_keys=site.secret_keys(), upgrades=site.upgrades())
        return
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
    """A function that adds commands taking ``--db``, ``--plugins-dir`` and ``--actor``.

    At a :class:`Site` ``--db`` and ``--plugins-dir`` are left out of the help and
    refused as usage errors, naming where the site decides them.
    """
    registry_options = argparse.ArgumentParser(add_help=False)
    decided = current_site() is not None  # the site decides them: refused, and not in the help
    registry_options.add_argument(
        "--db",
        action=_Refused if decided else "store",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS
        if decided
        else f"the registry: a SQLite file or a postgresql:// URL (${DB_ENV}; "
        f"default {DEFAULT_DB} in {_DATA_FOLDER})",
    )
    registry_options.add_argument(
        "--plugins-dir",
        action=_Refused if decided else "store",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS
        if decided
        else f"where plugin code is kept (${DIR_ENV}; default {DEFAULT_PLUGINS_DIR}/ in "
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


class _Refused(argparse.Action):
    """``--db`` or ``--plugins-dir`` at a :class:`Site`: a usage error saying who decides them."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> NoReturn:
        site = current_site()
        where = site.prog if site is not None else parser.prog
        decided = f": {site.decided_by}" if site is not None else ""
        raise argparse.ArgumentError(self, f"is not taken by {where}{decided}")


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
