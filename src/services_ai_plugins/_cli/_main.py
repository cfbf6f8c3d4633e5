"""The ``services-ai-plugins`` command line.

Exit codes are part of the interface:

* ``0`` — success;
* ``1`` — the input was refused (a manifest, folder or archive broke a rule, a
  file could not be read or written), a plugin failed in ``call``, or ``check``
  found errors;
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
from .._scaffold import scaffold_plugin
from .._schema import manifest_json_schema
from .._sources._package import pack_plugin, validate_plugin
from .._version import HOST_API_VERSION, __version__
from ..errors import PackageError, PluginError, _ProblemsError
from ._check import add_check_command
from ._host import add_host_commands
from ._operator import add_operator_commands
from ._sandbox import add_sandbox_commands

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
        if isinstance(error, _ProblemsError):  # ManifestError, and call's HookCallError
            document["source"] = error.source
            document["problems"] = [{"path": p.path, "message": p.message} for p in error.problems]
        elif isinstance(error, PackageError):
            document["path"] = error.path
            document["member"] = error.member
        if self.as_json:
            self.stdout.write(json.dumps(document, indent=2) + "\n")
        else:
            self.stderr.write(f"error: {error}\n")


def _validate(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    checked = validate_plugin(args.path)
    manifest = checked.manifest
    document = {
        "path": checked.path,
        "kind": checked.kind,
        "id": manifest.id,
        "name": manifest.name,
        "version": str(manifest.version),
        "notes": list(checked.notes),
    }
    lines = [
        f"ok: {manifest.id} {manifest.version} ({manifest.name}), {checked.kind} {checked.path}"
    ]
    lines += [f"note: {note}" for note in checked.notes]
    return document, lines


def _schema(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    schema = manifest_json_schema()
    return {"schema": schema}, [json.dumps(schema, indent=2)]


def _pack(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    packed = pack_plugin(args.folder, args.output)
    manifest = packed.manifest
    document = {
        "path": str(packed.path),
        "sha256": packed.sha256,
        "id": manifest.id,
        "version": str(manifest.version),
        "files": list(packed.files),
        "skipped": list(packed.skipped),
    }
    lines = [
        f"packed {manifest.id} {manifest.version}: {packed.path} ({len(packed.files)} files)",
        f"sha256: {packed.sha256}",
    ]
    if packed.skipped:
        lines.insert(1, f"left out: {', '.join(packed.skipped)}")
    return document, lines


def _new(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    created = scaffold_plugin(args.name, args.directory, author=args.author, email=args.email)
    document = {"path": str(created.path), "id": created.manifest.id, "files": list(created.files)}
    lines = [
        f"created {created.path}/ ({', '.join(created.files)})",
        f"next: cd {created.path} && pytest && {PROG} validate .",
    ]
    return document, lines


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Validate, pack, scaffold and operate services-ai-plugins plugins.",
        epilog="exit codes: 0 success, 1 refused or a plugin failed, 2 usage error",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__} (host API {HOST_API_VERSION})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate", parents=[common], help="check a manifest.json, a plugin folder or a plugin ZIP"
    )
    validate.add_argument("path", help="a manifest.json, a plugin folder or a .zip")
    validate.set_defaults(handler=_validate)

    add_check_command(commands, common)

    schema = commands.add_parser(
        "schema", parents=[common], help="print the manifest's JSON Schema"
    )
    schema.set_defaults(handler=_schema)

    pack = commands.add_parser(
        "pack", parents=[common], help="validate a plugin folder and write a reproducible ZIP"
    )
    pack.add_argument("folder", help="the plugin folder")
    pack.add_argument("-o", "--output", help="the archive to write (default: ID-VERSION.zip)")
    pack.set_defaults(handler=_pack)

    new = commands.add_parser("new", parents=[common], help="create a plugin folder to start from")
    new.add_argument("name", help="the plugin id or display name, e.g. lead-notifier")
    new.add_argument("-d", "--directory", default=".", help="where to create it (default: here)")
    new.add_argument("--author", help="the author's name for the manifest")
    new.add_argument("--email", help="the author's e-mail for the manifest")
    new.set_defaults(handler=_new)

    add_demo_command(commands)
    add_operator_commands(commands, common, PROG)
    add_host_commands(commands, common, PROG)
    add_sandbox_commands(commands, common, PROG)
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the command line and return its exit code (see the module docstring)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = _parser()
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
