"""``manage.py plugins <command> [options]``: the services-ai-plugins command line, run on the
Django project's registry, plugins folder and host.

Every command of ``services-ai-plugins`` is here with its options, ``--json`` and its
exit codes; the same code runs. What differs:

* the registry and the plugins folder are the ones ``SERVICES_AI_PLUGINS`` names
  (``STORAGE``, ``PLUGINS_DIR``): ``--db`` and ``--plugins-dir`` are refused;
* ``call`` fires the hook through the project's host (its ``HostServices``, sandbox
  policy and breaker), so plugins see the project's data;
* the audit trail's actor is ``manage.py:<user>`` unless ``--actor`` is given.

A non-zero exit code of the command line ends the command with a ``CommandError``
whose ``returncode`` is that code: ``manage.py`` exits with it, and
``call_command("plugins", "approve", "crm-sync")`` raises it, its message the reason
the command line gave. ``manage.py plugins --help`` (or ``manage.py help plugins``)
lists the commands, ``manage.py plugins <command> --help`` one command's options.
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db import connections

from ...._cli._common import Site
from ...._cli._main import EXIT_OK, main
from ... import conf

__all__ = ["Command"]

#: How the commands are shown when the command is called from code (``call_command``).
PROG: Final = "manage.py plugins"

#: The exit code when the reader of the output went away (128 + SIGPIPE), as the command line's.
_EXIT_BROKEN_PIPE: Final = 141

#: Django's own options that ``manage.py`` reads before any command runs.
_DJANGO_OPTIONS: Final = ("--settings", "--pythonpath")


def _actor() -> str:
    try:
        return f"manage.py:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment
        return "manage.py"


def _project_site(prog: str = PROG) -> Site:
    """Where ``manage.py plugins`` runs the commands: the ``SERVICES_AI_PLUGINS`` setting's
    storage, plugins folder and host (each opened only when a command needs it)."""
    return Site(
        prog=prog,
        open_storage=lambda: conf.plugins_settings().open_storage(),
        plugins_dir=lambda: conf.plugins_settings().folder(),
        host=conf.get_host,
        actor=_actor(),
        decided_by=f"the registry and the plugins folder are the project's, named by its "
        f"settings ({conf.SETTING}['STORAGE'] and ['PLUGINS_DIR'])",
        # The host's keys, so that a secret set here is one the host can read.
        secret_keys=lambda: conf.plugins_settings().host_options.get("secret_keys"),
        # The host's upgrade policy: what `upgrade` approves by itself, what `rollback` keeps.
        upgrades=lambda: conf.plugins_settings().host_options.get("upgrades"),
    )


class _Stream(io.StringIO):
    """A text stream over a command's ``OutputWrapper``, written as is (no added line ends);
    with ``keep``, it also keeps what was written (:meth:`getvalue`)."""

    def __init__(self, wrapper: OutputWrapper, *, keep: bool = False) -> None:
        super().__init__()
        self._wrapper = wrapper
        self._keep = keep

    def write(self, text: str) -> int:
        self._wrapper.write(text, style_func=_as_is, ending="")
        if self._keep:
            super().write(text)
        return len(text)

    def flush(self) -> None:
        self._wrapper.flush()


def _as_is(text: str) -> str:
    return text


class _Reported(CommandError):
    """The command line refused or failed, and has said why on standard error or as JSON."""


class Command(BaseCommand):
    help = (
        "Install, approve, enable, list, call and check plugins: the services-ai-plugins "
        "command line on this project's registry and host. `manage.py plugins --help` "
        "lists its commands."
    )
    # What the command line does needs no system check (as `manage.py check` itself).
    requires_system_checks: Sequence[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prog = PROG

    def add_arguments(self, parser: CommandParser) -> None:
        # For call_command("plugins", "list", "--json"): the command line's arguments as given.
        parser.add_argument(
            "argv",
            nargs=argparse.REMAINDER,
            metavar="COMMAND ...",
            help="a command of the services-ai-plugins command line and its options",
        )

    def print_help(self, prog_name: str, subcommand: str) -> None:
        """``manage.py help plugins``: the command line's own help, which lists its commands."""
        main(
            ["--help"],
            stdout=_Stream(self.stdout),
            stderr=_Stream(self.stderr),
            site=_project_site(f"{Path(prog_name).name} {subcommand}"),
        )

    def run_from_argv(self, argv: list[str]) -> None:
        """``manage.py plugins ...``: everything after ``plugins`` is the command line's.

        Django's parser is left out, so ``--help`` and every option reach the command
        line as they do ``services-ai-plugins``; ``--settings`` and ``--pythonpath`` were
        read by ``manage.py`` already. The command line has printed its refusals itself:
        only its exit code is added.
        """
        self._called_from_command_line = True
        self._prog = f"{Path(argv[0]).name} {argv[1]}"
        try:
            self.execute(
                argv=_without_django_options(argv[2:]),
                force_color=False,
                no_color=False,
                skip_checks=True,
            )
            self.stdout.flush()
        except _Reported as error:
            sys.exit(error.returncode)
        except CommandError as error:
            self.stderr.write(f"{type(error).__name__}: {error}")
            sys.exit(error.returncode)
        except BrokenPipeError:
            # A reader that stopped early (`manage.py plugins list | head`), as the command
            # line's own run(): Python flushes stdout again at exit, so point it at nothing.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(_EXIT_BROKEN_PIPE)
        finally:
            connections.close_all()

    def handle(self, *args: object, **options: Any) -> None:
        argv = list(options["argv"])
        out, err = _Stream(self.stdout, keep=True), _Stream(self.stderr, keep=True)
        try:
            code = main(argv, stdout=out, stderr=err, site=_project_site(self._prog))
        except ImproperlyConfigured as error:
            raise CommandError(str(error), returncode=1) from error
        if code != EXIT_OK:
            reason = _reason(out.getvalue(), err.getvalue())
            if reason is None:
                command = f" {argv[0]}" if argv else ""
                reason = f"{self._prog}{command} ended with exit code {code}"
            raise _Reported(reason, returncode=code)


def _without_django_options(argv: Sequence[str]) -> list[str]:
    """The arguments without ``--settings``/``--pythonpath`` (and their values)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _DJANGO_OPTIONS)):
            kept.append(arg)
    return kept


def _reason(out: str, err: str) -> str | None:
    """Why the command line refused: its ``error:`` line, argparse's usage error, or the
    message of its JSON refusal (None when it gave no reason: a plugin failed in ``call``,
    ``check`` found problems; its output says which)."""
    for line in reversed(err.splitlines()):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
        if ": error: " in line:  # argparse: "<prog> <command>: error: <what>"
            return line
    try:
        document = json.loads(out)
    except ValueError:
        return None
    refused = isinstance(document, dict) and "error" in document  # _Output.refused's document
    message = document.get("message") if refused else None
    return message if isinstance(message, str) else None
