"""The plugin author's reference, read from the code: hooks, the PluginAPI, permissions.

:func:`build_reference` reads a plugin manager's hook specifications (the SDK's and any
a host added), a :class:`~services_ai_plugins._api.PluginAPI` class (the SDK's or a
host's subclass with methods of its own) and a
:class:`~services_ai_plugins._permissions.PermissionCatalogue`, and returns one frozen
:class:`Reference`. :meth:`Reference.to_dict` gives its JSON form and
:func:`markdown_pages` its Markdown pages (``hooks.md``, ``plugin-api.md``,
``permissions.md``), which ``nox -s docs`` writes to docs/reference/ and the command
line's ``docs`` prints::

    >>> reference = build_reference()
    >>> reference.hook("filter_email").kind
    'filter'
    >>> reference.method("send_email").permission
    'send_email'

Nothing here is written by hand: a hook, method or permission appears because the code
defines it, with the docstring or description the code gives it.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import attrs
import pluggy

from ._api import PluginAPI
from ._examples import FILLED, OPTIONAL, example_values, parameter_types
from ._json import JSONValue
from ._payload_codec import to_wire
from ._permissions import PermissionCatalogue
from .hookspecs import HOOKS, hook_info, plugin_manager

__all__ = [
    "PAGES",
    "ArgumentReference",
    "FieldReference",
    "HookReference",
    "MethodReference",
    "PermissionReference",
    "RecordReference",
    "Reference",
    "attribute_docs",
    "build_reference",
    "markdown_pages",
    "write_pages",
]

#: The generated pages, by file name, in the order :func:`markdown_pages` returns them.
PAGES: Final = ("hooks.md", "plugin-api.md", "permissions.md")

#: Where the SDK's own hook specifications live.
_BUILTIN_MODULE: Final = "services_ai_plugins.hookspecs"
#: The arguments the host fills for each receiving plugin (or the caller fills: ``context``).
_HOST_FILLED: Final = FILLED | OPTIONAL


@attrs.frozen(kw_only=True)
class FieldReference:
    """One field of a payload record."""

    #: The attribute's name, as in Python and in the record's JSON form.
    name: str
    #: Its annotated type, as written in the code (``Decimal | None``).
    type: str
    #: True when the record cannot be built without it (it has no default).
    required: bool
    #: The ``#:`` comment above the field ('' when it has none).
    description: str


@attrs.frozen(kw_only=True)
class RecordReference:
    """A payload record (an attrs class of :mod:`services_ai_plugins.events`, or a host's)."""

    name: str
    #: The first paragraph of its docstring.
    summary: str
    fields: tuple[FieldReference, ...]


@attrs.frozen(kw_only=True)
class ArgumentReference:
    """One argument of a hook specification."""

    name: str
    #: Its annotated type, as written in the specification.
    type: str
    #: True for ``context``, ``api``, ``settings`` and ``plugin_id``: the host (or the
    #: caller, for ``context``) fills them for each receiving plugin.
    filled_by_host: bool
    #: The records the argument holds, its own type first, then the records nested in it.
    records: tuple[RecordReference, ...] = ()


@attrs.frozen(kw_only=True)
class HookReference:
    """One hook specification, as a plugin author needs it."""

    name: str
    #: ``name(arg: Type, ...) -> Return``, the annotations as written.
    signature: str
    #: ``notify``, ``collect``, ``first_result`` or ``filter`` (:class:`~.hookspecs.HookKind`).
    kind: str
    #: For a ``filter`` hook, the argument its implementations transform.
    filtered: str | None
    #: True: it runs only for the plugins enabled for ``context.tenant``.
    tenant_scoped: bool
    #: True: only the host's own implementations receive it, never plugins'.
    host_only: bool
    #: The permissions a plugin must hold for the tenant to receive the hook.
    permissions: tuple[str, ...]
    #: False for a hook a host (or a plugin) added to the manager.
    builtin: bool
    #: The module (or class) that specifies it.
    specified_in: str
    docstring: str
    arguments: tuple[ArgumentReference, ...]
    #: The return annotation as written.
    returns: str
    #: The documented example of each payload argument, in its JSON (wire) form.
    example: Mapping[str, JSONValue]
    #: Payload arguments with no documented example (a plain ``str``, say).
    no_example: tuple[str, ...]


@attrs.frozen(kw_only=True)
class MethodReference:
    """One public method or property of the :class:`PluginAPI` class plugins receive."""

    name: str
    #: ``api.name(arg: Type, ...) -> Return``; a property reads ``api.name -> Type``.
    signature: str
    #: ``method``, ``async method``, ``property`` or ``classmethod``.
    kind: str
    #: True for an ``async def`` method (awaited in a coroutine hook).
    is_async: bool
    #: True: the method is declared with :func:`~._api.requires`: the host checks the
    #: permission (if any), the arguments and records the call. False: a plain helper.
    checked: bool
    #: The permission it needs; None: always allowed (its own data, or a plain helper).
    permission: str | None
    #: The class that defines it (``PluginAPI``, or a host's subclass).
    defined_in: str
    docstring: str


@attrs.frozen(kw_only=True)
class PermissionReference:
    """One permission of the catalogue, and what in the reference needs it."""

    name: str
    description: str
    #: ``low``, ``medium`` or ``high`` (:class:`~._permissions.Risk`).
    risk: str
    #: The hooks a plugin receives only with this permission.
    hooks: tuple[str, ...]
    #: The API methods that need it.
    methods: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Reference:
    """The whole reference: hooks, the API class's methods and the permission catalogue."""

    hooks: tuple[HookReference, ...]
    #: The qualified name of the API class plugins receive.
    api_class: str
    methods: tuple[MethodReference, ...]
    permissions: tuple[PermissionReference, ...]

    def hook(self, name: str) -> HookReference:
        """The hook ``name``. :raises KeyError: when the reference has no such hook."""
        return _find(self.hooks, name, "hook")

    def method(self, name: str) -> MethodReference:
        """The API method ``name``. :raises KeyError: when the API class has no such method."""
        return _find(self.methods, name, "API method")

    def permission(self, name: str) -> PermissionReference:
        """The permission ``name``. :raises KeyError: when the catalogue has no such permission."""
        return _find(self.permissions, name, "permission")

    def to_dict(self) -> dict[str, JSONValue]:
        """The reference as JSON-ready data (what ``docs --format json`` prints)."""
        document = _plain(attrs.asdict(self))
        assert isinstance(document, dict)
        return document


def _plain(value: object) -> JSONValue:
    """``value`` with its tuples as lists and its mappings as dicts (JSON's shapes)."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    assert value is None or isinstance(value, (str, int, float, bool))
    return value


class _Named(typing.Protocol):
    @property
    def name(self) -> str: ...


_N = typing.TypeVar("_N", bound=_Named)


def _find(items: tuple[_N, ...], name: str, what: str) -> _N:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"no {what} {name!r} in the reference")


# -- building ------------------------------------------------------------------------------------


def build_reference(
    pm: pluggy.PluginManager | None = None,
    *,
    api_class: type[PluginAPI] = PluginAPI,
    catalogue: PermissionCatalogue | None = None,
) -> Reference:
    """The reference of every hook specified on ``pm``, every public member of ``api_class``
    and every permission of ``catalogue``.

    :param pm: a plugin manager with the hook specifications (default: the SDK's,
        :func:`~.hookspecs.plugin_manager`); a host's own specifications are those it
        added with ``pm.add_hookspecs``.
    :param api_class: :class:`PluginAPI` or a host's subclass.
    :param catalogue: the host's permissions (default: :data:`~._permissions.DEFAULT_PERMISSIONS`).
    :raises ValueError: when a hook or an API method needs a permission the catalogue
        does not define (naming both), or ``api_class`` is not a ``PluginAPI``.
    """
    candidate: object = api_class  # callers from outside the type checker pass anything
    if not (isinstance(candidate, type) and issubclass(candidate, PluginAPI)):
        raise ValueError(f"api_class: {api_class!r} is not PluginAPI or a subclass of it")
    pm = pm if pm is not None else plugin_manager()
    catalogue = catalogue if catalogue is not None else PermissionCatalogue()
    hooks = tuple(_hooks(pm))
    methods = tuple(_methods(api_class))
    needed = [(f"hook {h.name}", p) for h in hooks for p in h.permissions]
    needed += [(f"API method {m.name}", m.permission) for m in methods if m.permission]
    unknown = [f"{who} needs {name!r}" for who, name in needed if name not in catalogue]
    if unknown:
        raise ValueError(
            f"the permission catalogue does not define what the code needs: {'; '.join(unknown)}"
        )
    permissions = tuple(
        PermissionReference(
            name=permission.name,
            description=permission.description,
            risk=permission.risk.value,
            hooks=tuple(h.name for h in hooks if permission.name in h.permissions),
            methods=tuple(m.name for m in methods if m.permission == permission.name),
        )
        for permission in catalogue
    )
    return Reference(
        hooks=hooks,
        api_class=f"{api_class.__module__}.{api_class.__qualname__}",
        methods=methods,
        permissions=permissions,
    )


def _specified(pm: pluggy.PluginManager) -> Iterator[tuple[str, pluggy.HookCaller]]:
    callers = [
        (name, caller)
        for name, caller in vars(pm.hook).items()
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None
    ]
    # The built-in hooks in the order of hookspecs.py, then the others by name.
    order = {name: index for index, name in enumerate(HOOKS)}
    callers.sort(key=lambda item: (order.get(item[0], len(order)), item[0]))
    yield from callers


def _hooks(pm: pluggy.PluginManager) -> Iterator[HookReference]:
    for name, caller in _specified(pm):
        spec = caller.spec
        assert spec is not None
        info = hook_info(name, pm)
        function = spec.function
        parameters = [p for p in inspect.signature(function).parameters if p != "self"]
        kinds = parameter_types(function, parameters)
        payload = [n for n in parameters if n not in _HOST_FILLED]
        values, problems = example_values(name, {n: kinds[n] for n in payload}, None)
        annotations = getattr(function, "__annotations__", {})
        where = _where(function, spec.namespace)
        yield HookReference(
            name=name,
            signature=_signature(name, function, skip_first=parameters != [*_names(function)]),
            kind=info.kind.value,
            filtered=info.filtered,
            tenant_scoped=info.tenant_scoped,
            host_only=info.host_only,
            permissions=info.permissions,
            builtin=name in HOOKS and where == _BUILTIN_MODULE,
            specified_in=where,
            docstring=inspect.getdoc(function) or "",
            arguments=tuple(
                ArgumentReference(
                    name=argument,
                    type=_annotation(annotations.get(argument, "")),
                    filled_by_host=argument in _HOST_FILLED,
                    records=() if argument in _HOST_FILLED else tuple(_records(kinds[argument])),
                )
                for argument in parameters
            ),
            returns=_annotation(annotations.get("return", "")),
            example={key: _wire(value) for key, value in values.items()},
            no_example=tuple(problem.path for problem in problems),
        )


def _names(function: Callable[..., object]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _where(function: object, namespace: object) -> str:
    if isinstance(namespace, types.ModuleType):
        return namespace.__name__
    if isinstance(namespace, type):
        return f"{namespace.__module__}.{namespace.__qualname__}"
    return str(getattr(function, "__module__", ""))


def _annotation(annotation: object) -> str:
    if isinstance(annotation, str):
        return annotation
    if annotation is inspect.Parameter.empty:
        return ""
    # A resolved type names its module (decimal.Decimal, ...events.InvoiceLine): drop it.
    return _QUALIFIED.sub(r"\1", inspect.formatannotation(annotation))


def _signature(name: str, function: Callable[..., object], *, skip_first: bool = False) -> str:
    parameters = list(inspect.signature(function).parameters.values())
    if skip_first:
        parameters = parameters[1:]
    parts: list[str] = []
    keyword_only = False
    for parameter in parameters:
        if parameter.kind is parameter.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
            keyword_only = True
        text = parameter.name
        if parameter.kind is parameter.VAR_POSITIONAL:
            text, keyword_only = f"*{text}", True
        elif parameter.kind is parameter.VAR_KEYWORD:
            text = f"**{text}"
        if parameter.annotation is not parameter.empty:
            text += f": {_annotation(parameter.annotation)}"
        if parameter.default is not parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    returns = inspect.signature(function).return_annotation
    arrow = "" if returns is inspect.Signature.empty else f" -> {_annotation(returns)}"
    return f"{name}({', '.join(parts)}){arrow}"


def _wire(value: object) -> JSONValue:
    if isinstance(value, tuple):
        return [_wire(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _wire(item) for key, item in value.items()}
    if attrs.has(type(value)):
        return to_wire(value)
    assert value is None or isinstance(value, (str, int, float, bool))
    return value


def _record_types(kind: object) -> Iterator[type]:
    """The attrs classes ``kind`` names: itself, or inside a union, tuple or sequence."""
    if isinstance(kind, type) and attrs.has(kind):
        yield kind
        return
    for argument in typing.get_args(kind):
        yield from _record_types(argument)


def _records(kind: object) -> Iterator[RecordReference]:
    seen: set[type] = set()
    pending = list(_record_types(kind))
    while pending:
        record = pending.pop(0)
        if record in seen:
            continue
        seen.add(record)
        yield _record(record)
        try:
            hints = typing.get_type_hints(record)
        except Exception:  # noqa: BLE001 - a host's record we cannot resolve: its own fields only
            hints = {}
        for hint in hints.values():
            pending.extend(t for t in _record_types(hint) if t not in seen)


def _written(record: type) -> dict[str, object]:
    """The record's annotations as its source wrote them (strings under postponed evaluation).

    Not ``field.type``: ``attrs.resolve_types`` (cattrs calls it when it first converts the
    record) replaces that with the evaluated type in place, whose text expands aliases such as
    ``JSONValue``; the reference must read the same whatever ran before it.
    """
    written: dict[str, object] = {}
    for klass in reversed(record.__mro__):
        written.update(vars(klass).get("__annotations__", {}))
    return written


def _record(record: type) -> RecordReference:
    comments = attribute_docs(record)
    written = _written(record)
    return RecordReference(
        name=record.__name__,
        summary=_summary(inspect.getdoc(record) or ""),
        fields=tuple(
            FieldReference(
                name=field.name,
                type=_annotation(written.get(field.name, field.type))
                if field.type is not None or field.name in written
                else "",
                required=field.default is attrs.NOTHING,
                description=comments.get(field.name, ""),
            )
            for field in attrs.fields(record)
        ),
    )


def _summary(docstring: str) -> str:
    return " ".join(docstring.split("\n\n", 1)[0].split())


def _members(api_class: type[PluginAPI]) -> Iterator[tuple[str, object, type]]:
    for name in sorted(dir(api_class)):
        if name.startswith("_"):
            continue
        for klass in api_class.__mro__:
            if name in vars(klass):
                yield name, vars(klass)[name], klass
                break


def _methods(api_class: type[PluginAPI]) -> Iterator[MethodReference]:
    for name, member, klass in _members(api_class):
        if klass is object:
            continue
        defined_in = klass.__qualname__
        if isinstance(member, property):
            getter = member.fget
            assert getter is not None
            returns = inspect.signature(getter).return_annotation
            arrow = "" if returns is inspect.Signature.empty else f" -> {_annotation(returns)}"
            yield MethodReference(
                name=name,
                signature=f"api.{name}{arrow}",
                kind="property",
                is_async=False,
                checked=False,
                permission=None,
                defined_in=defined_in,
                docstring=inspect.getdoc(member) or "",
            )
            continue
        if isinstance(member, (classmethod, staticmethod)):
            function = member.__func__
            kind = type(member).__name__
            skip = isinstance(member, classmethod)
            prefix = f"{api_class.__name__}."
        elif inspect.isfunction(member):
            function, kind, skip, prefix = member, "method", True, "api."
        else:  # a slot or a plain attribute: not a method
            continue
        is_async = inspect.iscoroutinefunction(inspect.unwrap(function))
        marker = getattr(function, "__services_ai_permission__", _UNCHECKED)
        yield MethodReference(
            name=name,
            signature=prefix + _signature(name, function, skip_first=skip),
            kind=f"async {kind}" if is_async else kind,
            is_async=is_async,
            checked=marker is not _UNCHECKED,
            permission=marker if isinstance(marker, str) else None,
            defined_in=defined_in,
            docstring=inspect.getdoc(function) or "",
        )


_UNCHECKED: Final = object()
_QUALIFIED: Final = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+([A-Za-z_]\w*)")


# -- the ``#:`` comments -------------------------------------------------------------------------


def attribute_docs(owner: type | types.ModuleType | str) -> dict[str, str]:
    """The documentation of the attributes a class or module assigns at its top level.

    An attribute is documented by ``#:`` comment lines just above its assignment (as
    Sphinx reads them) or by a string literal just below it. ``owner`` may also be a
    module's source text. Returns ``{}`` when the source cannot be read.
    """
    if isinstance(owner, str):
        source = owner
    else:
        try:
            source = textwrap.dedent(inspect.getsource(owner))
        except (OSError, TypeError):
            return {}
    tree = ast.parse(source)
    body = tree.body
    if isinstance(owner, type):
        found = next((n for n in body if isinstance(n, ast.ClassDef)), None)
        if found is None:  # pragma: no cover - getsource of a class is its class statement
            return {}
        body = found.body
    lines = source.splitlines()
    docs: dict[str, str] = {}
    for index, node in enumerate(body):
        names = _assigned(node)
        if not names:
            continue
        comment: list[str] = []
        line = node.lineno - 2
        while line >= 0 and lines[line].strip().startswith("#:"):
            comment.insert(0, lines[line].strip()[2:].strip())
            line -= 1
        text = " ".join(comment)
        following = body[index + 1] if index + 1 < len(body) else None
        if (
            not text
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            text = " ".join(following.value.value.split())
        if text:
            docs.update(dict.fromkeys(names, text))
    return docs


def _assigned(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    return []


# -- Markdown ------------------------------------------------------------------------------------

_GENERATED: Final = (
    "<!-- Generated from the code by `nox -s docs` (services_ai_plugins._reference): "
    "do not edit by hand. -->"
)

_ROLE: Final = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`~?([^`]+)`")
_DOUBLE: Final = re.compile(r"``([^`]+)``")
_FIELD: Final = re.compile(r"^:(param|raises|returns?)\s*([^:]*):\s*", re.MULTILINE)


def _markdown_text(docstring: str) -> str:
    """A docstring's reStructuredText habits in Markdown: ``x`` and roles as code, ``::``
    blocks, ``:param x:`` lines, version notes."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        if match.group(0).startswith((":class:`~", ":func:`~", ":meth:`~", ":attr:`~", ":data:`~")):
            target = target.rsplit(".", 1)[-1]
        return f"`{target.lstrip('.')}`"

    def field(match: re.Match[str]) -> str:
        what, name = match.group(1), match.group(2).strip()
        if what == "param":
            return f"- `{name}`: "
        if what == "raises":
            return f"- Raises `{name}`: "
        return "- Returns: "

    text = _ROLE.sub(role, docstring)
    text = _DOUBLE.sub(r"`\1`", text)
    text = _FIELD.sub(field, text)
    text = re.sub(
        r"^\.\. (versionadded|versionchanged|deprecated):: (.*)$", _version, text, flags=re.M
    )
    text = re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)
    text = re.sub(r"^::$", "", text, flags=re.MULTILINE)
    return text.strip()


def _version(match: re.Match[str]) -> str:
    words = {
        "versionadded": "New in",
        "versionchanged": "Changed in",
        "deprecated": "Deprecated in",
    }
    return f"*{words[match.group(1)]} {match.group(2)}:*"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _hooks_page(reference: Reference) -> str:
    lines = [
        _GENERATED,
        "",
        "# Hook reference",
        "",
        "Every hook a plugin can implement, as the code specifies it "
        "(`services_ai_plugins.hookspecs`, and the host's own specifications). A plugin "
        "implements a hook with a function of the same name marked `@hookimpl`, and asks "
        "for the arguments it wants by naming them. The host fills `api`, `settings` and "
        "`plugin_id` for each receiving plugin; `context` carries the tenant. Kinds: "
        "`notify` (every implementation runs, results ignored), `collect` (results that are "
        "not None form a list), `first_result` (the first result that is not None wins), "
        "`filter` (each implementation returns the new value of one argument). "
        "The example payloads are the JSON form of `services_ai_plugins.tooling.example`; "
        "the permissions are described in [the permission reference](permissions.md).",
        "",
        "| Hook | Kind | Tenant | Permission to receive it |",
        "|---|---|---|---|",
    ]
    for hook in reference.hooks:
        lines.append(
            f"| [`{hook.name}`](#{hook.name}) | {hook.kind} | "
            f"{'per tenant' if hook.tenant_scoped else 'none'}"
            f"{' (host only)' if hook.host_only else ''} | "
            f"{', '.join(f'`{p}`' for p in hook.permissions) or 'none'} |"
        )
    for builtin, title in ((True, "Built-in hooks"), (False, "The host's own hooks")):
        chosen = [hook for hook in reference.hooks if hook.builtin is builtin]
        if not chosen:
            continue
        lines += ["", f"## {title}"]
        for hook in chosen:
            lines += ["", *_hook_section(hook)]
    return "\n".join(lines) + "\n"


def _hook_section(hook: HookReference) -> list[str]:
    permissions = ", ".join(f"[`{p}`](permissions.md#{p})" for p in hook.permissions)
    facts = [
        f"- **Kind:** `{hook.kind}`" + (f" (filters `{hook.filtered}`)" if hook.filtered else ""),
        "- **Tenant:** "
        + ("runs per tenant, for the plugins enabled there" if hook.tenant_scoped else "none"),
        f"- **Permission to receive it:** {permissions or 'none'}",
        f"- **Specified in:** `{hook.specified_in}`",
    ]
    if hook.host_only:
        facts.append("- **Host only:** only the host's own implementations receive it")
    lines = [f"### {hook.name}", "", "```text", hook.signature, "```", "", *facts, ""]
    lines += [_markdown_text(hook.docstring) or "*(no docstring)*", ""]
    lines += ["| Argument | Type | |", "|---|---|---|"]
    for argument in hook.arguments:
        note = "filled by the host" if argument.filled_by_host else ""
        lines.append(f"| `{argument.name}` | {_code(_cell(argument.type))} | {note} |")
    shown: set[str] = set()
    for argument in hook.arguments:
        for record in argument.records:
            if record.name in shown:
                continue
            shown.add(record.name)
            lines += [
                "",
                f"**`{record.name}`** ({argument.name}): {_markdown_text(record.summary)}",
            ]
            lines += ["", "| Field | Type | Required | Description |", "|---|---|---|---|"]
            for field in record.fields:
                lines.append(
                    f"| `{field.name}` | {_code(_cell(field.type))} | "
                    f"{'yes' if field.required else 'no'} | "
                    f"{_cell(_markdown_text(field.description))} |"
                )
    if hook.example:
        lines += ["", "Example arguments (JSON):", "", "```json", _json(hook.example), "```"]
    if hook.no_example:
        missing = ", ".join(f"`{name}`" for name in hook.no_example)
        lines += ["", f"No documented example for {missing} (plain values)."]
    return lines


def _json(value: object) -> str:
    import json  # noqa: PLC0415 - only the pages need it

    return json.dumps(value, indent=2, ensure_ascii=False)


def _api_page(reference: Reference) -> str:
    lines = [
        _GENERATED,
        "",
        "# PluginAPI reference",
        "",
        f"Hooks receive `api`, an instance of `{reference.api_class}` bound to the receiving "
        "plugin and the call's tenant. Each method declared with `@requires` checks the "
        "plugin's grants for that tenant before anything runs: without the permission it "
        "raises `PermissionDenied`. The permissions are described in "
        "[the permission reference](permissions.md).",
        "",
        "| Member | Kind | Permission |",
        "|---|---|---|",
    ]
    for method in reference.methods:
        lines.append(
            f"| [`{method.name}`](#{method.name}) | {method.kind} | {_permission_cell(method)} |"
        )
    for method in reference.methods:
        lines += [
            "",
            f"## {method.name}",
            "",
            "```text",
            method.signature,
            "```",
            "",
            f"- **Permission:** {_permission_cell(method, linked=True)}",
            f"- **Kind:** {method.kind}" + (" (await it)" if method.is_async else ""),
            f"- **Defined in:** `{method.defined_in}`",
            "",
            _markdown_text(method.docstring) or "*(no docstring)*",
        ]
    return "\n".join(lines) + "\n"


def _permission_cell(method: MethodReference, *, linked: bool = False) -> str:
    if method.permission is not None:
        name = method.permission
        return f"[`{name}`](permissions.md#{name})" if linked else f"`{name}`"
    return "none (its own data)" if method.checked else "none (no check of its own)"


def _permissions_page(reference: Reference) -> str:
    lines = [
        _GENERATED,
        "",
        "# Permission reference",
        "",
        "The permission catalogue: what a plugin may list under `permissions` (or "
        "`optional_permissions`) in its manifest, what each allows and how risky granting "
        "it is (admins see the risk when approving). A plugin receives a hook only with "
        "the permissions the hook lists ([the hook reference](hooks.md)), and calls an API method "
        "only with the permission the method needs ([the plugin API reference](plugin-api.md)).",
        "",
        "| Permission | Risk | Description |",
        "|---|---|---|",
    ]
    for permission in reference.permissions:
        lines.append(
            f"| [`{permission.name}`](#{permission.name}) | {permission.risk} | "
            f"{_cell(permission.description)} |"
        )
    for permission in reference.permissions:
        hooks = ", ".join(f"[`{h}`](hooks.md#{h})" for h in permission.hooks)
        methods = ", ".join(f"[`{m}`](plugin-api.md#{m})" for m in permission.methods)
        lines += [
            "",
            f"## {permission.name}",
            "",
            permission.description,
            "",
            f"- **Risk:** {permission.risk}",
            f"- **Needed to receive:** {hooks or 'no hook'}",
            f"- **Needed to call:** {methods or 'no API method'}",
        ]
    return "\n".join(lines) + "\n"


def markdown_pages(reference: Reference | None = None) -> dict[str, str]:
    """The reference as Markdown pages, by file name (:data:`PAGES`); default: the SDK's."""
    reference = reference if reference is not None else build_reference()
    return {
        "hooks.md": _hooks_page(reference),
        "plugin-api.md": _api_page(reference),
        "permissions.md": _permissions_page(reference),
    }


def write_pages(folder: str | Path, reference: Reference | None = None) -> list[Path]:
    """Write :func:`markdown_pages` into ``folder`` (created if missing); the paths written.

    :raises OSError: when the folder or a page cannot be written.
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in markdown_pages(reference).items():
        path = target / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
