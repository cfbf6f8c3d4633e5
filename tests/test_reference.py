"""The reference generated from the code: complete, current, linked, and every part documented."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

import services_ai_plugins
from conftest import ROOT
from reference_kit import write_extras
from services_ai_plugins import PluginAPI
from services_ai_plugins._examples import parameter_types
from services_ai_plugins._payload_codec import from_wire
from services_ai_plugins._reference import (
    PAGES,
    Reference,
    attribute_docs,
    build_reference,
    markdown_pages,
    write_pages,
)
from services_ai_plugins.events import PAYLOAD_TYPES
from services_ai_plugins.hookspecs import HOOKS, hook_info, plugin_manager
from services_ai_plugins.types import DEFAULT_PERMISSIONS, PermissionCatalogue
from test_exports import PUBLIC_MODULES

REFERENCE = build_reference()
PACKAGE = ROOT / "src" / "services_ai_plugins"


def _specified(pm: pluggy.PluginManager) -> dict[str, pluggy.HookCaller]:
    return {
        name: caller
        for name, caller in vars(pm.hook).items()
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None
    }


def _public_members(cls: type) -> set[str]:
    """The public methods and properties of ``cls``, read from the class itself."""
    found = set()
    for name in dir(cls):
        if name.startswith("_"):
            continue
        member = inspect.getattr_static(cls, name)
        if isinstance(member, (property, classmethod, staticmethod)) or inspect.isfunction(member):
            found.add(name)
    return found


@pytest.fixture
def extras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A host's extras module (see reference_kit), imported from a folder of its own."""
    name = write_extras(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


# -- complete ------------------------------------------------------------------------------------


def test_every_hookspec_is_in_the_reference() -> None:
    """Every hook the plugin manager specifies is listed once, with its HookInfo's kind,
    scope, host-only flag and permissions, and the specification's arguments in order."""
    pm = plugin_manager()
    specified = _specified(pm)
    assert {hook.name for hook in REFERENCE.hooks} == set(specified)
    # In the order hookspecs.py specifies them.
    assert [hook.name for hook in REFERENCE.hooks] == list(HOOKS)
    assert len(REFERENCE.hooks) == len(specified)
    for hook in REFERENCE.hooks:
        info = hook_info(hook.name, pm)
        assert hook.kind == info.kind.value
        assert hook.tenant_scoped is info.tenant_scoped
        assert hook.host_only is info.host_only
        assert hook.filtered == info.filtered
        assert hook.permissions == info.permissions
        assert hook.builtin
        spec = specified[hook.name].spec
        assert spec is not None
        assert [a.name for a in hook.arguments] == list(spec.argnames)
        assert hook.signature.startswith(f"{hook.name}(")


def test_every_plugin_api_method_is_in_the_reference() -> None:
    """Every public method and property of PluginAPI is listed, each @requires method with
    the permission PluginAPI.permissions() gives it, async methods marked."""
    assert {m.name for m in REFERENCE.methods} == _public_members(PluginAPI)
    table = PluginAPI.permissions()
    assert set(table) <= {m.name for m in REFERENCE.methods}
    for method in REFERENCE.methods:
        if method.name in table:
            assert method.checked
            assert method.permission == table[method.name]
        else:
            assert not method.checked
            assert method.permission is None
        function = inspect.getattr_static(PluginAPI, method.name)
        function = getattr(function, "__func__", function)
        if inspect.isfunction(function):
            assert method.is_async is inspect.iscoroutinefunction(inspect.unwrap(function))
    assert REFERENCE.method("ahttp_request").kind == "async method"
    assert REFERENCE.method("tenant").kind == "property"


def test_every_permission_is_in_the_reference() -> None:
    """Every permission of the default catalogue is listed with its description and risk,
    and with the hooks and methods that need it."""
    assert [p.name for p in REFERENCE.permissions] == sorted(p.name for p in DEFAULT_PERMISSIONS)
    for permission in DEFAULT_PERMISSIONS:
        entry = REFERENCE.permission(permission.name)
        assert entry.description == permission.description
        assert entry.risk == permission.risk.value
        assert set(entry.methods) == {
            name for name, needed in PluginAPI.permissions().items() if needed == permission.name
        }
        assert set(entry.hooks) == {
            hook.name for hook in REFERENCE.hooks if permission.name in hook.permissions
        }


def test_payload_fields_are_the_records_attrs_fields() -> None:
    """A record argument lists its record's fields (and those of records nested in it),
    with their types and the ``#:`` comments of events.py."""
    lines = REFERENCE.hook("filter_invoice_lines").arguments[0]
    assert [r.name for r in lines.records] == ["InvoiceLine"]
    hook = REFERENCE.hook("invoice_created")
    invoice = hook.arguments[0]
    assert [r.name for r in invoice.records] == ["Invoice", "InvoiceLine"]
    fields = {f.name: f for f in invoice.records[0].fields}
    assert fields["lines"].type == "tuple[InvoiceLine, ...]"
    assert fields["id"].required
    assert not fields["paid_at"].required
    assert fields["currency"].description.startswith("The ISO 4217 currency code")
    assert [a.records for a in hook.arguments if a.filled_by_host] == [(), (), ()]


def test_example_payloads_read_back_as_the_hooks_arguments() -> None:
    """Each hook's example is the wire form of a value of the argument's type; only plain
    values have none, and they are named."""
    pm = plugin_manager()
    for hook in REFERENCE.hooks:
        spec = _specified(pm)[hook.name].spec
        assert spec is not None
        kinds = parameter_types(spec.function, list(hook.example))
        for name, wire in hook.example.items():
            kind = kinds[name]
            if kind in PAYLOAD_TYPES:
                assert isinstance(from_wire(kind, wire), kind), (hook.name, name)
        payload = {a.name for a in hook.arguments if not a.filled_by_host}
        assert set(hook.example) | set(hook.no_example) == payload, hook.name
        for name in hook.no_example:
            assert parameter_types(spec.function, [name])[name] in (str, int, bool), name
    assert "lead" in REFERENCE.hook("lead_created").example


def test_the_json_form_is_plain_json() -> None:
    """to_dict() is JSON as it is (no tuples, records or enums left)."""
    document = REFERENCE.to_dict()
    assert json.loads(json.dumps(document)) == document
    assert set(document) == {"hooks", "api_class", "methods", "permissions"}
    assert document["api_class"] == "services_ai_plugins._api.PluginAPI"


# -- a host's own extras ---------------------------------------------------------------------------


def test_a_hosts_extra_hook_method_and_permission_are_in_the_reference(
    extras: types.ModuleType,
) -> None:
    """A host's hook specification, PluginAPI subclass and permissions are listed with the
    SDK's, marked as the host's."""
    pm = plugin_manager()
    pm.add_hookspecs(extras.HostHooks)
    catalogue = PermissionCatalogue()
    catalogue.add(extras.TICKETS)
    for permission in extras.MORE:
        catalogue.add(permission)
    reference = build_reference(pm, api_class=extras.TicketAPI, catalogue=catalogue)

    hook = reference.hook("crm_ticket_opened")
    assert not hook.builtin
    assert hook.kind == "collect"
    assert hook.permissions == ("read_tickets",)
    assert hook.specified_in == f"{extras.__name__}.HostHooks"
    assert hook.signature.startswith("crm_ticket_opened(lead: Lead, context: Context")
    assert hook.example == {"lead": reference.hook("lead_created").example["lead"]}
    assert {h.name for h in reference.hooks} == set(_specified(pm))

    assert {m.name for m in reference.methods} == _public_members(extras.TicketAPI)
    listed = reference.method("list_tickets")
    assert (listed.permission, listed.defined_in, listed.kind) == (
        "read_tickets",
        "TicketAPI",
        "method",
    )
    assert reference.method("close_ticket").kind == "async method"
    assert reference.method("get_lead").defined_in == "PluginAPI"

    tickets = reference.permission("read_tickets")
    assert (tickets.risk, tickets.hooks, tickets.methods) == (
        "medium",
        ("crm_ticket_opened",),
        ("list_tickets",),
    )
    pages = markdown_pages(reference)
    assert "## The host's own hooks" in pages["hooks.md"]
    assert "### crm_ticket_opened" in pages["hooks.md"]
    assert "## list_tickets" in pages["plugin-api.md"]
    assert "## close_tickets" in pages["permissions.md"]


def test_a_permission_the_catalogue_lacks_is_refused(extras: types.ModuleType) -> None:
    """A method or hook needing a permission the catalogue does not define is a ValueError
    naming both, not a reference with a dangling name."""
    with pytest.raises(ValueError, match="API method list_tickets needs 'read_tickets'"):
        build_reference(api_class=extras.NoTicketsAPI)
    pm = plugin_manager()
    pm.add_hookspecs(extras.HostHooks)
    with pytest.raises(ValueError, match="hook crm_ticket_opened needs 'read_tickets'"):
        build_reference(pm)
    with pytest.raises(ValueError, match="is not PluginAPI or a subclass"):
        build_reference(api_class=dict)  # type: ignore[arg-type]  # the check under test


# -- current and linked ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_the_committed_pages_are_current(page: str) -> None:
    """docs/reference/<page> is what the code generates (`nox -s docs`)."""
    committed = (ROOT / "docs" / "reference" / page).read_text(encoding="utf-8")
    assert committed == markdown_pages(REFERENCE)[page], (
        f"docs/reference/{page} no longer matches the code: run `nox -s docs` and commit it"
    )


def test_the_pages_do_not_depend_on_what_resolved_the_records_types() -> None:
    """The reference reads the records' annotations as written, never ``field.type``, which
    ``attrs.resolve_types`` replaces in place with the evaluated type (its text expands
    ``JSONValue``): a fresh interpreter that resolved every record, and this one, agree with the
    committed pages (CI's workers once generated `JSONValue` expanded)."""
    script = (
        "import attrs, sys\n"
        "from services_ai_plugins.events import PAYLOAD_TYPES\n"
        "for record in PAYLOAD_TYPES:\n"
        "    if attrs.has(record): attrs.resolve_types(record)\n"
        "from services_ai_plugins._reference import markdown_pages\n"
        "sys.stdout.write(markdown_pages()['hooks.md'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == markdown_pages()["hooks.md"]
    assert "ForwardRef" not in done.stdout
    assert "| `data` | `Mapping[str, JSONValue]` |" in done.stdout


def test_write_pages_writes_what_markdown_pages_gives(tmp_path: Path) -> None:
    """write_pages (what `nox -s docs` runs) writes exactly the three pages."""
    written = write_pages(tmp_path / "reference")
    assert [p.name for p in written] == list(PAGES)
    pages = markdown_pages()
    for path in written:
        assert path.read_text(encoding="utf-8") == pages[path.name]


def _anchors(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#+ (\S+)$", text, flags=re.MULTILINE)}


def test_every_link_in_the_pages_has_its_target() -> None:
    """Each link between the pages (page.md#name, #name) names a heading that exists, and
    every hook, method and permission has a heading."""
    pages = markdown_pages(REFERENCE)
    anchors = {name: _anchors(text) for name, text in pages.items()}
    assert {h.name for h in REFERENCE.hooks} <= anchors["hooks.md"]
    assert {m.name for m in REFERENCE.methods} <= anchors["plugin-api.md"]
    assert {p.name for p in REFERENCE.permissions} <= anchors["permissions.md"]
    checked = 0
    for name, text in pages.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            page, _, anchor = target.partition("#")
            page = page or name
            assert page in pages, (name, target)
            if anchor:
                assert anchor in anchors[page], (name, target)
            checked += 1
    assert checked > 100


def test_the_pages_hold_no_python_blocks() -> None:
    """Signatures are ``text`` blocks and examples ``json``: the docs' test that runs every
    Python block in docs/ has nothing here to run."""
    for text in markdown_pages(REFERENCE).values():
        fences = re.findall(r"^```(\w*)$", text, flags=re.MULTILINE)
        assert set(fences) <= {"text", "json", ""}
        assert "```python" not in text


# -- documented ------------------------------------------------------------------------------------


def _documented_data() -> dict[str, str]:
    """Every module-level name the package's sources document with ``#:`` (or a string below)."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, text in attribute_docs(path.read_text(encoding="utf-8")).items():
            found.setdefault(name, text)
    return found


def _undocumented_public_names() -> list[str]:
    data = _documented_data()
    missing = []
    for face in ["", *sorted(PUBLIC_MODULES)]:
        module_name = f"services_ai_plugins.{face}" if face else "services_ai_plugins"
        module = importlib.import_module(module_name)
        if not (module.__doc__ or "").strip():
            missing.append(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type):
                doc = vars(value).get("__doc__")  # its own, not one inherited
            elif inspect.isfunction(value) or inspect.ismodule(value):
                doc = value.__doc__
            else:  # a constant, alias, NewType or marker: a ``#:`` comment where it is set
                doc = data.get(name)
            if not (doc or "").strip():
                missing.append(f"{module_name}.{name}")
    return missing


def _undocumented(reference: Reference) -> list[str]:
    missing = [f"hook {h.name}" for h in reference.hooks if not h.docstring.strip()]
    missing += [f"API method {m.name}" for m in reference.methods if not m.docstring.strip()]
    missing += [f"permission {p.name}" for p in reference.permissions if not p.description.strip()]
    return missing


def test_every_public_name_has_a_docstring() -> None:
    """Every name of every public face's __all__ (and the faces themselves) is documented:
    a class or function by its own docstring, anything else by a ``#:`` comment."""
    assert _undocumented_public_names() == []


def test_every_hook_method_and_permission_is_documented() -> None:
    """Every hookspec and PluginAPI method has a docstring; every permission a description."""
    assert _undocumented(REFERENCE) == []


def test_the_documentation_checks_catch_what_is_missing(extras: types.ModuleType) -> None:
    """The checks above can fail: a hook and a method without a docstring are named."""

    class Bare:
        def crm_bare(self, context: Any) -> None:
            pass

    from services_ai_plugins.hookspecs import hookspec

    hookspec(Bare.crm_bare)

    class BareAPI(PluginAPI):
        def undocumented(self) -> None:
            pass

    pm = plugin_manager()
    pm.add_hookspecs(Bare)
    assert _undocumented(build_reference(pm, api_class=BareAPI)) == [
        "hook crm_bare",
        "API method undocumented",
    ]
    assert "NAME" in attribute_docs("#: A name.\nNAME = 1\nOTHER = 2\n")
    assert "OTHER" not in attribute_docs("#: A name.\nNAME = 1\nOTHER = 2\n")


def test_the_top_level_is_covered() -> None:
    """The coverage check reads the top level's names too (a sanity check of the walk)."""
    assert "PluginHost" in services_ai_plugins.__all__
    assert vars(services_ai_plugins.PluginHost).get("__doc__")
