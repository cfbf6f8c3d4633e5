"""The plugin manifest (``manifest.json``): model, parsing and serialisation."""

from __future__ import annotations

import difflib
import enum
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ._converting import is_variadic_tuple, locate, strict_tuple_hooks
from ._fields import (
    RULES,
    ClassName,
    Count,
    DisplayName,
    EmailAddress,
    EntryPoint,
    HookName,
    NetworkHost,
    Number,
    PermissionName,
    PluginId,
    RelativePath,
    Url,
    described,
)
from ._json import MAX_INT_DIGITS, JSONValue, check_int, check_json, json_type_name
from ._kinds import MANIFEST_NAME
from ._settings import SettingSpec, SettingType, validate_settings
from .errors import ManifestError, Problem

__all__ = ["MANIFEST_NAME", "MAX_MANIFEST_BYTES", "Isolation", "Manifest"]

#: The largest manifest accepted, in bytes (256 KiB).
MAX_MANIFEST_BYTES: Final = 256 * 1024

#: Lists whose items must not repeat.
UNIQUE_ITEMS: Final = frozenset({PermissionName, HookName, NetworkHost})

#: Top-level keys that are not fields but are allowed: editors' schema link.
_SCHEMA_KEY: Final = "$schema"
_EXTENSION_PREFIX: Final = "x-"

T = TypeVar("T")


class Isolation(str, enum.Enum):
    """Where a plugin asks to run; the host may override it, only ever more strictly."""

    #: In a sandboxed worker process (the safe choice for uploaded code).
    PROCESS = "process"
    #: In the host's own process (for trusted, operator-installed code).
    INPROCESS = "inprocess"


@attrs.frozen(kw_only=True)
class Manifest:
    """A plugin's ``manifest.json``, checked and typed.

    Build one with :meth:`from_file`, :meth:`from_json` or :meth:`from_dict`;
    each raises :class:`ManifestError` listing every problem with its JSON
    path. :meth:`to_dict` and :meth:`to_json` give the document back, so that
    ``Manifest.from_json(m.to_json()) == m``.

    Example::

        >>> m = Manifest.from_dict({"name": "Lead Notifier", "version": "1.0.0"})
        >>> m.id, str(m.version), m.entry_point
        ('lead-notifier', '1.0.0', 'main.py')
    """

    id: PluginId = described(
        "The plugin's unique key (a slug). Derived from `name` when absent, with a note."
    )
    name: DisplayName = described("The display name.")
    version: Version = described("The plugin's version (PEP 440; semver-style versions parse).")
    description: str = described("What the plugin does, in a sentence or two.", default="")
    author: str | None = described("Who wrote the plugin.", default=None)
    email: EmailAddress | None = described("The author's e-mail address.", default=None)
    homepage: Url | None = described("The plugin's web page.", default=None)
    license: str | None = described("The license, ideally an SPDX expression.", default=None)
    entry_point: EntryPoint = described(
        "The module that holds the plugin: 'main.py', 'pkg/main.py' or 'pkg.main'.",
        default=EntryPoint("main.py"),
    )
    plugin_class: ClassName | None = described(
        "The class in the entry point whose instance is registered (else the module itself).",
        default=None,
    )
    permissions: tuple[PermissionName, ...] = described(
        "Permissions the plugin needs, granted when an admin approves it.", default=()
    )
    optional_permissions: tuple[PermissionName, ...] = described(
        "Permissions requested at run time and granted per tenant by an admin.", default=()
    )
    settings: tuple[SettingSpec, ...] = described("The settings schema.", default=())
    network: tuple[NetworkHost, ...] = described(
        "Hosts the plugin may reach with api.http_request (needs the http_requests "
        "permission): 'api.example.com', '*.hooks.example.com', 'http://localhost:8080'.",
        default=(),
    )
    requires_api: SpecifierSet | None = described(
        "The host API versions the plugin works with (PEP 440 specifier, e.g. '>=1.0,<2').",
        default=None,
    )
    requires_python: SpecifierSet | None = described(
        "The Python versions the plugin works with (PEP 440 specifier).", default=None
    )
    dependencies: tuple[Requirement, ...] = described(
        "Python distributions the plugin needs (PEP 508 requirement strings).", default=()
    )
    requires_plugins: Mapping[PluginId, SpecifierSet] = described(
        "Other plugins this one needs: plugin id to version specifier ('' for any version).",
        factory=dict,
    )
    hooks: tuple[HookName, ...] | None = described(
        "The hooks the plugin implements, checked against the host's hook specs.", default=None
    )
    isolation: Isolation | None = described(
        "Where the plugin asks to run; the host may only make it stricter.", default=None
    )
    changelog: str | None = described("What changed in this version.", default=None)
    icon: RelativePath | None = described("An image file inside the plugin.", default=None)
    #: Vendor extensions: the top-level keys starting with ``x-`` (and
    #: ``$schema``), kept as they were given.
    extensions: Mapping[str, JSONValue] = attrs.field(factory=dict)
    #: What the loader noticed and fixed up (such as a derived ``id``). Not part
    #: of the document and not compared.
    notes: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)

    @classmethod
    def from_dict(cls, data: object, *, source: str | None = None) -> Manifest:
        """Check a parsed JSON document and build the manifest.

        :param data: the document, normally a ``dict``.
        :param source: the file name to quote in the error.
        :raises ManifestError: listing every problem, each with its JSON path.
        """
        return _load(data, source)

    @classmethod
    def from_json(
        cls, text: str | bytes, *, source: str | None = None, max_bytes: int = MAX_MANIFEST_BYTES
    ) -> Manifest:
        """Parse and check a manifest from JSON text (``bytes`` are read as UTF-8).

        :raises ManifestError: for text over ``max_bytes``, text that is not
            JSON (naming the line and column where parsing stopped), duplicate
            keys, and every problem :meth:`from_dict` finds.
        """
        return _load(_parse_json(text, source, max_bytes), source)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, max_bytes: int = MAX_MANIFEST_BYTES
    ) -> Manifest:
        """Read and check a ``manifest.json`` file.

        :raises ManifestError: when the file cannot be read, is too large, or
            is refused by :meth:`from_json`; its ``source`` is the path.
        """
        source = os.fspath(path)
        try:
            with Path(source).open("rb") as stream:
                raw = stream.read(max_bytes + 1)
        except OSError as exc:
            raise ManifestError(
                [Problem("", f"cannot read the file: {exc.strerror}")], source=source
            ) from exc
        return cls.from_json(raw, source=source, max_bytes=max_bytes)

    def to_dict(self) -> dict[str, JSONValue]:
        """The manifest as a JSON-ready ``dict``, leaving out fields at their default."""
        document: dict[str, JSONValue] = _converter().unstructure(self, Manifest)
        return document

    def to_json(self, *, indent: int | None = 2) -> str:
        """The manifest as JSON text; :meth:`from_json` reads it back equal."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"

    def validate_settings(self, values: object, *, partial: bool = False) -> dict[str, JSONValue]:
        """Check setting values against this manifest's ``settings``.

        See :func:`services_ai_plugins.validate_settings`.
        """
        return validate_settings(self.settings, values, partial=partial)

    @property
    def entry_module(self) -> str:
        """The entry point as a dotted module name (``pkg/main.py`` -> ``pkg.main``)."""
        if self.entry_point.endswith(".py"):
            return self.entry_point.removesuffix(".py").replace("/", ".")
        return self.entry_point

    @property
    def entry_files(self) -> tuple[str, ...]:
        """The files, relative to the plugin folder, the entry point may be.

        ``main.py`` -> ``("main.py",)``; ``pkg.main`` -> ``("pkg/main.py",
        "pkg/main/__init__.py")``.
        """
        if self.entry_point.endswith(".py"):
            return (self.entry_point,)
        base = self.entry_point.replace(".", "/")
        return (f"{base}.py", f"{base}/__init__.py")


# -- parsing -----------------------------------------------------------------------------------


def _parse_json(text: str | bytes, source: str | None, max_bytes: int) -> object:
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > max_bytes:
        raise ManifestError(
            [
                Problem(
                    "",
                    f"is too large: over {max_bytes} bytes (a manifest holds metadata, not data)",
                )
            ],
            source=source,
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                [Problem("", f"is not UTF-8 text: undecodable byte at offset {exc.start}")],
                source=source,
            ) from exc
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constant,
            parse_int=_bounded_int,
        )
    except json.JSONDecodeError as exc:
        message = f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise ManifestError([Problem("", message)], source=source) from exc
    except _JSONRuleError as exc:
        raise ManifestError([Problem("", f"is not valid: {exc.message}")], source=source) from exc
    except RecursionError as exc:
        raise ManifestError(
            [Problem("", "is not valid: JSON nests too deeply")], source=source
        ) from exc


class _JSONRuleError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JSONRuleError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _JSONRuleError(f"an integer has {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str) -> object:
    raise _JSONRuleError(f"{name} is not a JSON number")


def derive_id(name: str) -> str | None:
    """Turn a display name into a plugin id (``"Plugin Name"`` -> ``"plugin-name"``).

    Names that would give a slug starting with a digit or shorter than three
    characters get a ``plugin-`` prefix. Returns None when nothing usable is
    left (a name with no Latin letters or digits).
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if not slug:
        return None
    if not slug[0].isalpha() or len(slug) < 3:
        slug = f"plugin-{slug}"
    return slug[:64].rstrip("-")


def _load(data: object, source: str | None) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError(
            [Problem("", f"must be a JSON object (got {json_type_name(data)})")], source=source
        )
    problems: list[Problem] = []
    notes: list[str] = []
    fields: dict[str, Any] = {}
    extensions: dict[str, JSONValue] = {}
    known = {field.name for field in attrs.fields(Manifest)} - {"extensions", "notes"}
    for key, value in data.items():
        if not isinstance(key, str):
            problems.append(Problem(f"[{key!r}]", "keys must be strings"))
        elif key in known:
            fields[key] = value
        elif key == _SCHEMA_KEY and not isinstance(value, str):
            problems.append(
                Problem(_join("", key), f"must be a string (got {json_type_name(value)})")
            )
        elif key == _SCHEMA_KEY or key.startswith(_EXTENSION_PREFIX):
            try:
                extensions[key] = check_json(value)
            except ValueError as exc:
                problems.append(Problem(_join("", key), str(exc)))
        else:
            problems.append(Problem(_join("", key), _unknown_key_message(key, known)))
    if "id" not in fields and isinstance(fields.get("name"), str):
        derived = derive_id(fields["name"])
        if derived is not None:
            fields["id"] = derived
            notes.append(
                f"id: derived {derived!r} from name {fields['name']!r}; "
                f'add "id": "{derived}" to the manifest to keep it stable'
            )
        else:
            problems.append(
                Problem("id", f"is missing and cannot be derived from name {fields['name']!r}")
            )
    manifest: Manifest | None = None
    try:
        manifest = _converter().structure(fields, Manifest)
    except (ClassValidationError, IterableValidationError, ValueError) as exc:
        problems.extend(_problems(exc, ""))
    except RecursionError as exc:  # pragma: no cover - check_json bounds depth first
        problems.append(Problem("", "nests too deeply"))
        raise ManifestError(problems, source=source) from exc
    if problems or manifest is None:
        if "id" not in fields:  # optional: derived from name, whose problems are reported
            problems = [p for p in problems if p != Problem("id", "is required")]
        raise ManifestError(_dedupe(problems), source=source)
    return attrs.evolve(manifest, extensions=extensions, notes=tuple(notes))


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _unknown_key_message(key: str, known: set[str]) -> str:
    near = difflib.get_close_matches(key.lower().replace("-", "_"), sorted(known), n=1, cutoff=0.75)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown key (vendor extensions must start with 'x-'){hint}"


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*", part):
        return f"{path}.{part}" if path else part
    return f"{path}[{part!r}]"


class _Problems(ValueError):
    """Raised by hooks to report located problems (paths relative to the value)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems


def _problems(exc: BaseException, path: str) -> Iterator[Problem]:
    """Flatten a cattrs validation error into located problems."""
    if isinstance(exc, IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, index_note in with_notes:
            yield from _problems(sub, _join(path, index_note.index))
        for sub in without:
            yield from _problems(sub, path)
    elif isinstance(exc, ClassValidationError):
        attribute_notes, others = exc.group_exceptions()
        for sub, attribute_note in attribute_notes:
            yield from _problems(sub, _join(path, attribute_note.name))
        for sub in others:
            yield from _problems(sub, path)
    elif isinstance(exc, _Problems):
        for problem in exc.problems:
            yield Problem(_join_path(path, problem.path), problem.message)
    elif isinstance(exc, KeyError):
        yield Problem(path, "is required")
    elif isinstance(exc, (ValueError, TypeError)):
        yield Problem(path, str(exc))
    else:  # pragma: no cover - a bug in a hook: let it surface
        raise exc


def _join_path(path: str, relative: str) -> str:
    if not relative:
        return path
    if relative.startswith("["):
        return path + relative
    return f"{path}.{relative}" if path else relative


# -- the converter -----------------------------------------------------------------------------


def _strict(kind: type[T], name: str) -> Callable[[object, Any], T]:
    def hook(value: object, _: Any) -> T:
        if isinstance(value, bool) and kind is not bool:
            raise ValueError(f"must be {name} (got boolean)")
        if not isinstance(value, kind):
            raise ValueError(f"must be {name} (got {json_type_name(value)})")
        return value

    return hook


def _rule_hook(new_type: Any) -> Callable[[object, Any], str]:
    rule = RULES[new_type]

    def hook(value: object, _: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string (got {json_type_name(value)})")
        message = rule.check(value)
        if message is not None:
            raise ValueError(message)
        return value

    return hook


def _number(value: object, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number (got {json_type_name(value)})")
    return check_json(value)  # type: ignore[return-value]  # a checked finite int or float


def _count(value: object, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a non-negative integer (got {json_type_name(value)})")
    if value < 0:
        raise ValueError(f"must be a non-negative integer (got {value})")
    return check_int(value)


def _version(value: object, _: Any) -> Version:
    if not isinstance(value, str):
        raise ValueError(f"must be a version string such as '1.0.0' (got {json_type_name(value)})")
    try:
        return Version(value)
    except InvalidVersion:
        raise ValueError(
            f"{value!r} is not a valid version: use PEP 440 or semantic versioning, "
            "such as '1.2.0', '1.2.0-beta.1' or '2.0.0rc1'"
        ) from None


def _specifier(value: object, _: Any) -> SpecifierSet:
    if not isinstance(value, str):
        raise ValueError(
            f"must be a version specifier string such as '>=1.0,<2' (got {json_type_name(value)})"
        )
    if not value.strip():
        raise ValueError("must not be empty (leave the key out to accept every version)")
    try:
        return SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"{value!r} is not a valid version specifier such as '>=1.0,<2'") from None


def _plugin_specifier(value: object, _: Any) -> SpecifierSet:
    if isinstance(value, str) and value.strip() in ("", "*"):
        return SpecifierSet()
    return _specifier(value, _)


def _requirement(value: object, _: Any) -> Requirement:
    if not isinstance(value, str):
        raise ValueError(
            f"must be a requirement string such as 'requests>=2' (got {json_type_name(value)})"
        )
    try:
        return Requirement(value)
    except InvalidRequirement as exc:
        first_line = str(exc).splitlines()[0]
        raise ValueError(f"{value!r} is not a valid PEP 508 requirement: {first_line}") from None


def _json(value: object, _: Any) -> JSONValue:
    return check_json(value)


def _enum_hook(kind: type[enum.Enum]) -> Callable[[object, Any], enum.Enum]:
    names = ", ".join(repr(member.value) for member in kind)

    def hook(value: object, _: Any) -> enum.Enum:
        for member in kind:
            if isinstance(value, str) and member.value == value:
                return member
        raise ValueError(f"must be one of {names} (got {_brief(value)})")

    return hook


def _brief(value: object) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return json_type_name(value)


def _repeated_items(item_kind: Any, value: list[Any]) -> list[Exception]:
    """Repeats in the arrays whose items must be unique (permissions, hooks)."""
    return _repeats(value) if item_kind in UNIQUE_ITEMS else []


def _repeats(value: list[Any]) -> list[Exception]:
    seen: set[Any] = set()
    errors: list[Exception] = []
    for index, item in enumerate(value):
        if isinstance(item, str) and item in seen:
            errors.append(locate(ValueError(f"repeats {item!r}"), index, str))
        seen.add(item if isinstance(item, str) else None)
    return errors


def _requires_plugins(
    converter: cattrs.Converter,
) -> Callable[[object, Any], dict[str, SpecifierSet]]:
    def hook(value: object, _: Any) -> dict[str, SpecifierSet]:
        if not isinstance(value, dict):
            raise ValueError(
                f"must be an object of plugin id to version specifier (got {json_type_name(value)})"
            )
        result: dict[str, SpecifierSet] = {}
        errors: list[Exception] = []
        for key, item in value.items():
            try:
                converter.structure(key, PluginId)
                result[key] = _plugin_specifier(item, None)
            except ValueError as exc:
                errors.append(locate(exc, key, SpecifierSet))
        if errors:
            raise IterableValidationError("invalid plugin requirements", errors, dict)
        return result

    return hook


def _settings_hook(converter: cattrs.Converter) -> Callable[[object, Any], tuple[SettingSpec, ...]]:
    generated = make_dict_structure_fn(
        SettingSpec,
        converter,
        _cattrs_forbid_extra_keys=True,
        default=override(struct_hook=_json),
        choices=override(struct_hook=_choices),
    )

    def spec_hook(value: object, _: Any) -> SettingSpec:
        if not isinstance(value, dict):
            raise ValueError(
                f"must be an object describing a setting (got {json_type_name(value)})"
            )
        known = {field.name for field in attrs.fields(SettingSpec)}
        problems = [Problem(_join("", key), "unknown key") for key in value if key not in known]
        try:
            spec = generated({k: v for k, v in value.items() if k in known}, SettingSpec)
        except (ClassValidationError, IterableValidationError, ValueError) as exc:
            raise _Problems([*problems, *_problems(exc, "")]) from exc
        problems.extend(spec.problems())
        if problems:
            raise _Problems(problems)
        return spec.normalised()

    def hook(value: object, _: Any) -> tuple[SettingSpec, ...]:
        if not isinstance(value, list):
            raise ValueError(f"must be an array of settings (got {json_type_name(value)})")
        specs: list[SettingSpec] = []
        problems: list[Problem] = []
        errors: list[Exception] = []
        names: dict[str, int] = {}
        for index, item in enumerate(value):
            try:
                specs.append(spec_hook(item, SettingSpec))
            except Exception as exc:  # noqa: BLE001 - collected and reported by path
                errors.append(locate(exc, index, SettingSpec))
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                if name in names:
                    problems.append(
                        Problem(f"[{index}].name", f"repeats the name of settings[{names[name]}]")
                    )
                names.setdefault(name, index)
        if problems:
            errors.append(_Problems(problems))
        if errors:
            raise IterableValidationError("invalid settings", errors, tuple)
        return tuple(specs)

    return hook


def _choices(value: object, _: Any) -> tuple[JSONValue, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"must be an array of choices (got {json_type_name(value)})")
    return tuple(check_json(item) for item in value)


def _manifest_hooks(converter: cattrs.Converter) -> None:
    generated = make_dict_structure_fn(
        Manifest,
        converter,
        _cattrs_forbid_extra_keys=True,
        extensions=override(omit=True),
        notes=override(omit=True),
        settings=override(struct_hook=_settings_hook(converter)),
        requires_plugins=override(struct_hook=_requires_plugins(converter)),
    )

    def structure(value: object, _: Any) -> Manifest:
        manifest = generated(value, Manifest)  # type: ignore[arg-type]  # _load passes a dict
        overlap = set(manifest.permissions) & set(manifest.optional_permissions)
        if overlap:
            index = next(
                i for i, name in enumerate(manifest.optional_permissions) if name in overlap
            )
            raise _Problems(
                [
                    Problem(
                        f"optional_permissions[{index}]", "is already in permissions; list it once"
                    )
                ]
            )
        return manifest

    converter.register_structure_hook(Manifest, structure)
    spec_unstructure = make_dict_unstructure_fn(
        SettingSpec, converter, _cattrs_omit_if_default=True
    )
    converter.register_unstructure_hook(SettingSpec, spec_unstructure)
    unstructure = make_dict_unstructure_fn(
        Manifest,
        converter,
        _cattrs_omit_if_default=True,
        extensions=override(omit=True),
        notes=override(omit=True),
        # The identity fields are written even when they equal a default.
        id=override(omit_if_default=False),
        entry_point=override(omit_if_default=False),
    )

    def unstructure_manifest(manifest: Manifest) -> dict[str, Any]:
        document: dict[str, Any] = unstructure(manifest)
        document.update(manifest.extensions)
        return document

    converter.register_unstructure_hook(Manifest, unstructure_manifest)


def make_converter() -> cattrs.Converter:
    """Build the converter that reads and writes manifests (never cattrs' global one)."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(bool, _strict(bool, "true or false"))
    converter.register_structure_hook(int, _strict(int, "an integer"))
    for new_type in RULES:
        converter.register_structure_hook(new_type, _rule_hook(new_type))
    converter.register_structure_hook(Number, _number)
    converter.register_structure_hook(Count, _count)
    converter.register_structure_hook(Version, _version)
    converter.register_structure_hook(SpecifierSet, _specifier)
    converter.register_structure_hook(Requirement, _requirement)
    # Registered per class: the enums are str subclasses, so the str hook would catch them.
    for enum_kind in (Isolation, SettingType):
        converter.register_structure_hook(enum_kind, _enum_hook(enum_kind))
        converter.register_unstructure_hook(enum_kind, _enum_value)
    converter.register_structure_hook_factory(
        is_variadic_tuple, strict_tuple_hooks(converter, _repeated_items)
    )
    for text_kind in (Version, SpecifierSet, Requirement):
        converter.register_unstructure_hook(text_kind, str)
    _manifest_hooks(converter)
    return converter


def _enum_value(member: enum.Enum) -> object:
    return member.value


_CONVERTER: cattrs.Converter | None = None


def _converter() -> cattrs.Converter:
    global _CONVERTER  # noqa: PLW0603 - built once, on first use, so import stays cheap
    if _CONVERTER is None:
        _CONVERTER = make_converter()
    return _CONVERTER
