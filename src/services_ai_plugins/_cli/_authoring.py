"""The plugin author's commands: ``validate``, ``schema``, ``pack`` and ``new``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._scaffold import scaffold_plugin
from .._schema import manifest_json_schema
from .._sources._package import pack_plugin, validate_plugin
from ._common import Result

__all__ = ["add_authoring_commands"]


def _validate(args: argparse.Namespace) -> Result:
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


def _schema(args: argparse.Namespace) -> Result:
    schema = manifest_json_schema()
    return {"schema": schema}, [json.dumps(schema, indent=2)]


def _pack(args: argparse.Namespace) -> Result:
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


def _new(args: argparse.Namespace) -> Result:
    created = scaffold_plugin(args.name, args.directory, author=args.author, email=args.email)
    document = {"path": str(created.path), "id": created.manifest.id, "files": list(created.files)}
    lines = [
        f"created {created.path}/ ({', '.join(created.files)})",
        f"next: cd {created.path} && pytest && {args.prog} validate .",
    ]
    return document, lines


def add_authoring_commands(commands: Any, common: argparse.ArgumentParser, prog: str) -> None:
    """Add ``validate``, ``schema``, ``pack`` and ``new`` to the CLI's sub-command parser."""
    validate = commands.add_parser(
        "validate", parents=[common], help="check a manifest.json, a plugin folder or a plugin ZIP"
    )
    validate.add_argument("path", help="a manifest.json, a plugin folder or a .zip")
    validate.set_defaults(handler=_validate)

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
    new.set_defaults(handler=_new, prog=prog)
