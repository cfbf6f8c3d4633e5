"""The manifest's constrained field types and their string rules.

Each constrained string of the manifest is a ``NewType`` over ``str`` with one
:class:`StringRule`.  The rule is the single source of truth for both the
loader (which checks values with it) and the generated JSON Schema (which
exports its pattern), so the two cannot drift apart.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from typing import Any, Final, NewType

import attrs

from ._egress import rule_problem

#: A plugin id: a slug of 3-64 lowercase letters, digits and ``-`` (``lead-notifier``).
PluginId = NewType("PluginId", str)
#: A name shown to people: one non-empty line without surrounding spaces.
DisplayName = NewType("DisplayName", str)
#: A permission name from the host's catalogue (``read_leads``).
PermissionName = NewType("PermissionName", str)
#: A hook name (``lead_created``).
HookName = NewType("HookName", str)
#: A setting's key: an identifier (``api_key``).
SettingName = NewType("SettingName", str)
#: The module that holds a plugin: a file inside it (``main.py``) or a dotted module.
EntryPoint = NewType("EntryPoint", str)
#: A class name defined in a plugin's entry point module (``MyPlugin``).
ClassName = NewType("ClassName", str)
#: A file inside a plugin, as a relative path using ``/``.
RelativePath = NewType("RelativePath", str)
#: An e-mail address.
EmailAddress = NewType("EmailAddress", str)
#: An ``http://`` or ``https://`` URL.
Url = NewType("Url", str)
#: An entry of ``network``: a host a plugin may reach, with optional scheme and port.
NetworkHost = NewType("NetworkHost", str)
#: A JSON number (``int`` or finite ``float``), kept as given.
Number = NewType("Number", float)
#: A non-negative integer.
Count = NewType("Count", int)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


@attrs.frozen
class StringRule:
    """What a constrained string must look like, for checking and for the schema."""

    #: A regular expression in the common subset of Python and ECMA-262 syntax.
    pattern: str
    #: The message given when the value does not match, after "must be ...".
    expected: str
    #: The schema's description of the format.
    description: str
    max_length: int | None = None
    #: An optional JSON Schema ``format`` annotation.
    format: str | None = None
    #: Extra diagnosis for a value that fails: returns a precise message or None.
    diagnose: Callable[[str], str | None] | None = None
    #: Extra check beyond the pattern (returns a message when the value fails).
    also: Callable[[str], str | None] | None = None

    def check(self, value: str) -> str | None:
        """Return why ``value`` breaks the rule, or None when it follows it."""
        if self.max_length is not None and len(value) > self.max_length:
            return f"must be at most {self.max_length} characters long (got {len(value)})"
        if re.fullmatch(self.pattern, value) is None:
            precise = self.diagnose(value) if self.diagnose else None
            return precise or f"must be {self.expected} (got {value!r})"
        return self.also(value) if self.also else None


def _inside_plugin(value: str) -> str | None:
    """Explain why a path does not stay inside the plugin, if it does not."""
    if not value:
        return "must not be empty"
    if "\\" in value:
        return f"must use '/' as the separator, not '\\' (got {value!r})"
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        return f"must be a relative path inside the plugin, not an absolute one (got {value!r})"
    segments = value.split("/")
    if ".." in segments or (value.startswith("..") and "/" not in value):
        return f"must stay inside the plugin: '..' is not allowed (got {value!r})"
    if any(segment.startswith(".") for segment in segments):
        return (
            "must not name a hidden file or folder (starting with '.'): "
            f"those are left out of packed plugins (got {value!r})"
        )
    return None


def _not_a_path(value: str) -> str | None:
    if "/" in value or "." in value or "\\" in value:
        return (
            "must be the name of a class defined in the entry point module, "
            f"not a path or a dotted name (got {value!r})"
        )
    return None


def _no_keyword_parts(value: str) -> str | None:
    parts = value.removesuffix(".py").replace("/", ".").split(".")
    bad = [part for part in parts if keyword.iskeyword(part)]
    if bad:
        return f"{bad[0]!r} is a Python keyword and cannot name a module or class"
    return None


RULES: Final[dict[object, StringRule]] = {
    PluginId: StringRule(
        pattern=r"^[a-z][a-z0-9-]{1,62}[a-z0-9]$",
        expected="a slug of 3-64 lowercase letters, digits and '-', starting with a letter "
        "and not ending with '-'",
        description="The plugin's unique key: storage, CLI and module namespace.",
    ),
    DisplayName: StringRule(
        pattern=r"^\S(?:[^\x00-\x1f\x7f]*\S)?$",
        expected="a non-empty single line without leading or trailing spaces",
        description="The name shown to people.",
        max_length=100,
    ),
    PermissionName: StringRule(
        pattern=r"^[a-z][a-z0-9_]*(?:[.:][a-z][a-z0-9_]*)*$",
        expected="a permission name such as 'read_leads' or 'leads.read'",
        description="A permission name from the host's catalogue.",
        max_length=64,
    ),
    HookName: StringRule(
        pattern=r"^[a-z_][a-z0-9_]*$",
        expected="a hook name such as 'lead_created'",
        description="The name of a hook the plugin implements.",
        max_length=64,
    ),
    SettingName: StringRule(
        pattern=rf"^{_IDENT}$",
        expected="an identifier such as 'api_key'",
        description="The setting's key.",
        max_length=64,
    ),
    EntryPoint: StringRule(
        pattern=rf"^(?:(?:{_IDENT}/)*{_IDENT}\.py|{_IDENT}(?:\.{_IDENT})*)$",
        expected="a module file such as 'main.py' or 'pkg/main.py', or a dotted module "
        "such as 'my_plugin.main', inside the plugin",
        description="The module that holds the plugin: a file path relative to the plugin "
        "folder, or a dotted module name.",
        max_length=200,
        diagnose=_inside_plugin,
        also=_no_keyword_parts,
    ),
    ClassName: StringRule(
        pattern=rf"^{_IDENT}$",
        expected="a class name defined in the entry point module, such as 'MyPlugin'",
        description="The class in the entry point module whose instance is registered; "
        "without it the module itself is registered.",
        max_length=100,
        diagnose=_not_a_path,
        also=_no_keyword_parts,
    ),
    RelativePath: StringRule(
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$",
        expected="a relative path inside the plugin using '/' (letters, digits, '_', '.', '-'; "
        "no segment starting with '.')",
        description="A file inside the plugin.",
        max_length=200,
        diagnose=_inside_plugin,
    ),
    EmailAddress: StringRule(
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        expected="an e-mail address",
        description="Where to reach the author.",
        max_length=254,
        format="email",
    ),
    Url: StringRule(
        pattern=r"^https?://[^\s/?#]+[^\s]*$",
        expected="an http:// or https:// URL",
        description="The plugin's web page.",
        max_length=2000,
        format="uri",
    ),
    NetworkHost: StringRule(
        pattern=r"^(?:[a-z]+://)?(?:\[[0-9A-Fa-f:.]+\]|[a-z0-9*][a-z0-9.*-]*)(?::[0-9]{1,5})?$",
        expected="a host such as 'api.example.com', '*.hooks.example.com' or "
        "'http://localhost:8080' (lowercase; https unless 'http://' is written)",
        description="A host the plugin may reach: a DNS name, '*.' and a domain (one or more "
        "labels in front of it), or an IP address as written; optional 'http://' or "
        "'https://' (the default) and ':port' (the scheme's default otherwise).",
        max_length=260,
        diagnose=rule_problem,
        also=rule_problem,
    ),
}


def described(description: str, **kwargs: Any) -> Any:
    """An attrs field with a description (exported to the JSON Schema and the docs)."""
    return attrs.field(metadata={"description": description}, **kwargs)
