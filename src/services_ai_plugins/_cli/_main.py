"""The ``services-ai-plugins`` command line.

Exit codes are part of the interface:

* ``0`` — success;
* ``1`` — the input was refused (a manifest, folder or archive broke a rule, a
  file could not be read or written, the registry refused the step: an older
  version without ``--downgrade``, a version that is not kept, ...), a plugin
  failed in ``call``, or ``check`` found errors;
* ``2`` — usage error (unknown command or option, missing argument).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn, TextIO

from .._demo import add_demo_command
from .._version import HOST_API_VERSION, __version__
from ..errors import PackageError, PluginError, ProblemsError
from ._authoring import add_authoring_commands
from ._check import add_check_command
from ._common import Site, running_at
from ._docs import add_docs_command
from ._host import add_host_commands
from ._lifecycle import add_lifecycle_commands
from ._sandbox import add_sandbox_commands
from ._settings import add_settings_commands

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "main"]

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2

PROG: Final = "services-ai-plugins"


class _Output:
    """Writes results for people, or as one JSON document with ``--json``."""

    def __init__(self, as_json: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.as_json = as_json
        self.stdout = stdout
        self.stderr = stderr

    def result(self, document: dict[str, Any], lines: Sequence[str], *, ok: bool = True) -> None:
        if self.as_json:
            self.stdout.write(json.dumps({"ok": ok, **document}, indent=2) + "\n")
        else:
            for line in lines:
                self.stdout.write(line + "\n")

    def refused(self, error: Exception) -> None:
        document: dict[str, Any] = {
            "ok": False,
            "error": type(error).__name__,
            "message": str(error),
        }
        if isinstance(error, ProblemsError):  # ManifestError, and call's HookCallError
            document["source"] = error.source
            document["problems"] = [{"path": p.path, "message": p.message} for p in error.problems]
        elif isinstance(error, PackageError):
            document["path"] = error.path
            document["member"] = error.member
        if self.as_json:
            self.stdout.write(json.dumps(document, indent=2) + "\n")
        else:
            self.stderr.write(f"error: {error}\n")


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document")
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Validate, pack, scaffold and operate services-ai-plugins plugins.",
        epilog="exit codes: 0 success, 1 refused or a plugin failed, 2 usage error",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__} (host API {HOST_API_VERSION})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_authoring_commands(commands, common, prog)
    add_check_command(commands, common)
    add_docs_command(commands, common)
    add_demo_command(commands)
    add_lifecycle_commands(commands, common, prog)
    add_settings_commands(commands, common, prog)
    add_host_commands(commands, common, prog)
    add_sandbox_commands(commands, common, prog)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    site: Site | None = None,
) -> int:
    """Run the command line and return its exit code (see the module docstring).

    With a ``site`` (``manage.py plugins``) the commands run on the site's registry,
    plugins folder and host, under its name (see :class:`~._common.Site`).
    """
    with running_at(site):
        return _run(argv, stdout or sys.stdout, stderr or sys.stderr, site)


def _run(argv: Sequence[str] | None, out: TextIO, err: TextIO, site: Site | None) -> int:
    parser = _parser(site.prog if site is not None else PROG)
    try:
        # argparse prints --help, --version and usage errors itself.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    output = _Output(args.json, out, err)
    try:
        # What a command (or a plugin it runs) writes to standard error goes to ``err``.
        with contextlib.redirect_stderr(err):
            document, lines, *code = args.handler(args)
    except PluginError as exc:
        output.refused(exc)
        return EXIT_REFUSED
    except ValueError as exc:  # a bad argument value the library refused (an empty reason, ...)
        output.refused(exc)
        return EXIT_REFUSED
    except OSError as exc:
        output.refused(PackageError(exc.strerror or str(exc), path=str(exc.filename or "")))
        return EXIT_REFUSED
    exit_code = code[0] if code else EXIT_OK
    output.result(document, lines, ok=exit_code == EXIT_OK)
    return int(exit_code)


def run() -> NoReturn:
    """Console-script entry point.

    A reader that stops early (``services-ai-plugins list | head``) ends the
    command quietly, as other Unix tools do, instead of with a traceback.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, what a shell reports for such a pipe
    sys.exit(code)
