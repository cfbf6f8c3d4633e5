"""The ``docs`` command: the hook, PluginAPI and permission reference, from the code.

It prints what :func:`~services_ai_plugins._reference.build_reference` reads: the SDK's
hooks, :class:`~services_ai_plugins._api.PluginAPI` and permissions, plus a host's own
when named as the host passes them to :class:`~services_ai_plugins.PluginHost`
(``--hookspecs``, ``--api-class``) and to its catalogue (``--permissions``). A name
is ``module`` or ``module:attribute`` (``attribute`` may be dotted), imported from the
working folder and ``sys.path``; one that cannot be imported, or names the wrong kind
of object, is a usage error naming the option.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from .._markers import PROJECT_NAME
from .._permissions import Permission, PermissionCatalogue
from .._reference import build_reference, markdown_pages
from ..hookspecs import plugin_manager
from ._common import Result

__all__ = ["add_docs_command"]

#: The attribute pluggy's hookspec marker leaves on a specification function.
_SPEC_ATTRIBUTE: Final = f"{PROJECT_NAME}_spec"


def _resolve(text: str) -> object:
    """The object ``module`` or ``module:attribute`` names, imported with the working
    folder on ``sys.path`` for the import."""
    module_name, _, attribute = text.partition(":")
    if not module_name or (":" in text and not attribute):
        raise argparse.ArgumentTypeError(f"{text!r} is not MODULE or MODULE:ATTRIBUTE")
    here = str(Path.cwd())
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        value: object = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - a host module may raise anything when imported
        raise argparse.ArgumentTypeError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        if added:
            sys.path.remove(here)
    for part in attribute.split(".") if attribute else ():
        try:
            value = getattr(value, part)
        except AttributeError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {module_name} has no {attribute!r}"
            ) from None
    return value


def _hookspecs(text: str) -> types.ModuleType | type:
    value = _resolve(text)
    if not isinstance(value, (types.ModuleType, type)):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a {type(value).__name__}, not a module or class of hook specifications"
        )
    if not any(hasattr(getattr(value, name, None), _SPEC_ATTRIBUTE) for name in dir(value)):
        raise argparse.ArgumentTypeError(f"{text!r} specifies no hooks (no @spec or @hookspec)")
    return value


def _api_class(text: str) -> type:
    from .._api import PluginAPI  # noqa: PLC0415 - the API loads when docs runs

    value = _resolve(text)
    if not (isinstance(value, type) and issubclass(value, PluginAPI)):
        raise argparse.ArgumentTypeError(f"{text!r} is not PluginAPI or a subclass of it")
    return value


def _permissions(text: str) -> tuple[Permission, ...]:
    value = _resolve(text)
    if isinstance(value, Permission):
        return (value,)
    if isinstance(value, (PermissionCatalogue, Iterable)) and not isinstance(value, (str, bytes)):
        items = tuple(value)
        if all(isinstance(item, Permission) for item in items):
            return items
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a PermissionCatalogue, a Permission or a sequence of Permissions"
    )


def _docs(args: argparse.Namespace) -> Result:
    pm = plugin_manager()
    for specs in args.hookspecs:
        pm.add_hookspecs(specs)
    catalogue = PermissionCatalogue()
    for permissions in args.permissions:
        for permission in permissions:
            catalogue.add(permission)
    kwargs: dict[str, Any] = {"catalogue": catalogue}
    if args.api_class is not None:
        kwargs["api_class"] = args.api_class
    reference = build_reference(pm, **kwargs)
    if args.format == "json":
        document = reference.to_dict()
        return {"reference": document}, [json.dumps(document, indent=2, ensure_ascii=False)]
    pages = markdown_pages(reference)
    return {"pages": pages}, ["\n".join(pages.values()).rstrip("\n")]


def add_docs_command(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``docs`` to the CLI's sub-command parser."""
    docs = commands.add_parser(
        "docs",
        parents=[common],
        help="print the hook, PluginAPI and permission reference",
        description="Print the reference of the hooks, the PluginAPI methods and the "
        "permissions, generated from the code: the SDK's, plus a host's own given below.",
    )
    docs.add_argument(
        "--format",
        choices=("markdown", "json"),
        default="markdown",
        help="Markdown pages (default) or one JSON document",
    )
    docs.add_argument(
        "--hookspecs",
        metavar="MODULE[:ATTR]",
        type=_hookspecs,
        action="append",
        default=[],
        help="a module or class of the host's own hook specifications (repeatable)",
    )
    docs.add_argument(
        "--api-class",
        metavar="MODULE:CLASS",
        type=_api_class,
        help="the host's PluginAPI subclass (default: PluginAPI)",
    )
    docs.add_argument(
        "--permissions",
        metavar="MODULE:ATTR",
        type=_permissions,
        action="append",
        default=[],
        help="the host's own permissions, added to the defaults: a PermissionCatalogue, "
        "a Permission or a sequence of them (repeatable)",
    )
    docs.set_defaults(handler=_docs)
