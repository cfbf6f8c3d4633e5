"""Hook specifications: their metadata, their documentation, and how pluggy checks plugins
against them."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import pluggy
import pytest

from conftest import EXAMPLE_PLUGIN
from services_ai_plugins import hookimpl, hookspecs
from services_ai_plugins._markers import PROJECT_NAME
from services_ai_plugins.hookspecs import (
    HOOKS,
    HookInfo,
    HookKind,
    hook_info,
    hookspec,
    plugin_manager,
    spec,
)
from services_ai_plugins.tooling import scaffold_plugin

#: The built-in hooks and their kinds: changing them is a change of the plugin API.
EXPECTED_KINDS: dict[str, HookKind] = {
    "lead_created": HookKind.NOTIFY,
    "lead_updated": HookKind.NOTIFY,
    "lead_deleted": HookKind.NOTIFY,
    "resolve_lead_owner": HookKind.FIRST_RESULT,
    "filter_lead_data": HookKind.FILTER,
    "booking_created": HookKind.NOTIFY,
    "booking_updated": HookKind.NOTIFY,
    "booking_confirmed": HookKind.NOTIFY,
    "booking_cancelled": HookKind.NOTIFY,
    "invoice_created": HookKind.NOTIFY,
    "invoice_updated": HookKind.NOTIFY,
    "invoice_paid": HookKind.NOTIFY,
    "filter_invoice_lines": HookKind.FILTER,
    "user_registered": HookKind.NOTIFY,
    "user_login": HookKind.NOTIFY,
    "user_logout": HookKind.NOTIFY,
    "filter_email": HookKind.FILTER,
    "email_sent": HookKind.NOTIFY,
    "filter_sms": HookKind.FILTER,
    "sms_sent": HookKind.NOTIFY,
    "notification_sent": HookKind.NOTIFY,
    "report_generated": HookKind.NOTIFY,
    "dashboard_widget": HookKind.COLLECT,
    "register_routes": HookKind.COLLECT,
    "inject_head": HookKind.COLLECT,
    "inject_footer": HookKind.COLLECT,
    "api_request": HookKind.FILTER,
    "api_response": HookKind.FILTER,
    "plugin_installed": HookKind.NOTIFY,
    "plugin_approved": HookKind.NOTIFY,
    "plugin_enabled": HookKind.NOTIFY,
    "plugin_disabled": HookKind.NOTIFY,
    "plugin_settings_changed": HookKind.NOTIFY,
    "plugin_upgraded": HookKind.NOTIFY,
    "plugin_uninstalled": HookKind.NOTIFY,
    "plugin_suspended": HookKind.NOTIFY,
    "plugin_failing": HookKind.NOTIFY,
}

#: Hooks that run without a tenant.
TENANT_FREE = {
    "register_routes",
    "plugin_installed",
    "plugin_approved",
    "plugin_uninstalled",
    "plugin_suspended",
    "plugin_failing",
}

FILTER_PHRASE = "return the new value; return the value unchanged to pass"


def spec_functions() -> dict[str, Callable[..., object]]:
    """Every function of the module that pluggy recognises as a hook specification."""
    return {
        name: value
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and hasattr(value, f"{PROJECT_NAME}_spec")
    }


SPECS = spec_functions()


def sentinel_args(name: str) -> dict[str, object]:
    """One distinct object for every argument of the hook, as the host passes them."""
    return {arg: object() for arg in inspect.signature(SPECS[name]).parameters}


def one_line(text: str) -> str:
    """Text with runs of whitespace (docstring line breaks) turned into single spaces."""
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def pm() -> pluggy.PluginManager:
    """A fresh manager with the built-in specifications."""
    return plugin_manager()


# The specifications themselves -------------------------------------------------------------


def test_there_are_at_least_thirty_specs() -> None:
    """The module specifies the 30+ hooks of the original system and more."""
    assert len(SPECS) >= 30


def test_the_hooks_and_their_kinds_are_pinned() -> None:
    """Adding, removing or re-kinding a hook is a deliberate act: this table changes with it."""
    assert {name: info.kind for name, info in HOOKS.items()} == EXPECTED_KINDS
    assert {name for name, info in HOOKS.items() if not info.tenant_scoped} == TENANT_FREE


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_is_documented(name: str) -> None:
    """Each docstring says when the hook fires, what it receives and returns, and the permission."""
    doc = inspect.getdoc(SPECS[name])
    assert doc
    assert doc.splitlines()[0].endswith(".")
    for label in ("Fires:", "Receives:", "Returns:", "Permission:"):
        assert re.search(rf"^{label}", doc, re.MULTILINE), f"{name} has no {label!r} section"
    for parameter in inspect.signature(SPECS[name]).parameters:
        assert f"``{parameter}``" in doc, f"{name}'s docstring does not mention {parameter!r}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_is_fully_annotated(name: str) -> None:
    """Every parameter and the return of every spec carry a non-empty annotation."""
    signature = inspect.signature(SPECS[name])
    assert signature.parameters
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name})"
        assert isinstance(parameter.annotation, str)
        assert parameter.annotation.strip()
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert signature.return_annotation is not inspect.Signature.empty, name
    assert str(signature.return_annotation).strip()


def test_annotations_resolve_against_the_payload_records() -> None:
    """Every name the annotations use exists in events, _api or the module (docs resolve them)."""
    from services_ai_plugins import _api, events

    namespace = {**vars(hookspecs), **vars(events), "PluginAPI": _api.PluginAPI}
    for name, function in SPECS.items():
        hints = typing.get_type_hints(function, globalns=namespace)
        assert set(hints) == {*inspect.signature(function).parameters, "return"}, name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_has_consistent_info(name: str) -> None:
    """Each spec has a HookInfo that agrees with its signature and its pluggy options."""
    info = hook_info(name)
    assert info is HOOKS[name]
    assert info.name == name
    parameters = inspect.signature(SPECS[name]).parameters
    options = getattr(SPECS[name], f"{PROJECT_NAME}_spec")
    assert options["firstresult"] is (info.kind is HookKind.FIRST_RESULT)
    assert not options["historic"]
    if info.tenant_scoped:
        assert "context" in parameters
    if info.kind is HookKind.FILTER:
        assert info.filtered in parameters
    else:
        assert info.filtered is None
    if "api" not in parameters:
        assert info.host_only, f"{name} has no api, so no plugin could be called with one"


def test_every_function_with_info_is_a_spec_and_listed() -> None:
    """HOOKS lists exactly the module's specs, in the module's order."""
    assert list(HOOKS) == list(SPECS)


@pytest.mark.parametrize("name", sorted(n for n, i in HOOKS.items() if i.kind is HookKind.FILTER))
def test_filter_docstrings_say_how_to_pass(name: str) -> None:
    """A filter's docstring tells authors to return the value, and how to leave it as it is."""
    assert FILTER_PHRASE in one_line(inspect.getdoc(SPECS[name]) or "").lower()


def test_lifecycle_hooks_of_a_tenant_take_context() -> None:
    """Enabling, disabling, settings and upgrades are per tenant; install and approve are not."""
    for name in ("plugin_enabled", "plugin_disabled", "plugin_settings_changed", "plugin_upgraded"):
        assert hook_info(name).tenant_scoped
    for name in ("plugin_installed", "plugin_approved", "plugin_uninstalled"):
        assert not hook_info(name).tenant_scoped
        assert "context" not in inspect.signature(SPECS[name]).parameters


def test_at_least_four_filters_and_one_first_result() -> None:
    """The WordPress-style filters and a first-result hook exist."""
    kinds = [info.kind for info in HOOKS.values()]
    assert kinds.count(HookKind.FILTER) >= 4
    assert kinds.count(HookKind.FIRST_RESULT) >= 1


def test_hooks_is_read_only() -> None:
    """Nobody can add to or change the built-in table at run time."""
    with pytest.raises(TypeError):
        HOOKS["mine"] = HOOKS["lead_created"]  # type: ignore[index]  # checking it refuses


# hook_info and HookInfo --------------------------------------------------------------------


def test_hook_info_of_an_unknown_hook_suggests_a_close_name() -> None:
    """A typo in a hook name gets a KeyError with a suggestion."""
    with pytest.raises(KeyError, match=r"unknown hook 'lead_create'; did you mean 'lead_created'"):
        hook_info("lead_create")
    with pytest.raises(KeyError, match=r"unknown hook 'zzz'") as caught:
        hook_info("zzz")
    assert "did you mean" not in str(caught.value)


def test_hook_info_kind_accepts_its_string_value() -> None:
    """HookInfo converts a kind given as its value, as read from JSON."""
    info = HookInfo(name="x", kind="filter", filtered="value")
    assert info.kind is HookKind.FILTER
    assert HookKind.FIRST_RESULT.value == "first_result"


def test_hook_info_refuses_filtered_on_the_wrong_kind() -> None:
    """Only a FILTER names a filtered parameter, and a FILTER must."""
    with pytest.raises(ValueError, match="must name its filtered parameter"):
        HookInfo(name="x", kind=HookKind.FILTER)
    with pytest.raises(ValueError, match="only a FILTER hook"):
        HookInfo(name="x", kind=HookKind.NOTIFY, filtered="value")


# spec() ------------------------------------------------------------------------------------


def test_spec_refuses_a_tenant_scoped_hook_without_context() -> None:
    """A tenant-scoped spec must take context; the error says how to fix it."""
    with pytest.raises(ValueError, match=r"'orphan' is tenant-scoped but has no 'context'"):

        @spec(HookKind.NOTIFY)
        def orphan(api: object) -> None:
            """No context."""


def test_spec_refuses_a_filter_of_a_missing_parameter() -> None:
    """A FILTER must name one of its own parameters."""
    with pytest.raises(ValueError, match=r"filters 'value', which is not one of its parameters"):

        @spec(HookKind.FILTER, filtered="value")
        def typo(valeu: object, context: object) -> object:
            """Misspelt."""


def test_spec_leaves_the_function_unchanged() -> None:
    """The decorator returns the very function, marked for pluggy and described."""

    def quote_ready(quote: object, context: object) -> object:
        """A quote is ready."""

    marked = spec(HookKind.FIRST_RESULT)(quote_ready)
    assert marked is quote_ready
    assert getattr(marked, f"{PROJECT_NAME}_spec")["firstresult"] is True


# The plugin manager ------------------------------------------------------------------------


def test_plugin_manager_knows_every_hook(pm: pluggy.PluginManager) -> None:
    """A new manager has a caller with a specification for every built-in hook."""
    for name in HOOKS:
        caller = getattr(pm.hook, name)
        assert caller.spec is not None
        assert caller.spec.function is SPECS[name]
        assert caller.spec.opts["firstresult"] is (HOOKS[name].kind is HookKind.FIRST_RESULT)


def test_each_manager_is_separate() -> None:
    """Managers share nothing: specs added to one do not appear in another."""
    first, second = plugin_manager(), plugin_manager()
    assert first is not second

    class Extra:
        @hookspec
        def extra_hook(self, context: object) -> None:
            """Extra."""

    first.add_hookspecs(Extra)
    assert hasattr(first.hook, "extra_hook")
    assert not hasattr(second.hook, "extra_hook")


def test_correct_plugin_registers_and_is_called(pm: pluggy.PluginManager) -> None:
    """A plugin whose implementations match the specs registers and its hooks run."""
    seen: list[object] = []

    class Good:
        @hookimpl
        def lead_created(self, lead: object, context: object, api: object) -> None:
            seen.append(lead)

        @hookimpl
        def register_routes(self, plugin_id: str, api: object) -> list[object]:
            return [("stats/", print, "stats")]

        @hookimpl
        def filter_email(self, email: object, context: object, api: object) -> object:
            return email

    pm.register(Good(), name="good")
    pm.check_pending()
    args = sentinel_args("lead_created")
    assert pm.hook.lead_created(**args) == []
    assert seen == [args["lead"]]
    assert pm.hook.register_routes(plugin_id="good", api=object()) == [[("stats/", print, "stats")]]


def test_implementation_may_take_a_subset_of_arguments(pm: pluggy.PluginManager) -> None:
    """An implementation asks only for the arguments it needs, in any order."""

    class Lean:
        @hookimpl
        def lead_updated(self, changes: object, lead: object) -> tuple[object, object]:
            return lead, changes

        @hookimpl
        def dashboard_widget(self) -> str:
            return "widget"

    pm.register(Lean())
    pm.check_pending()
    args = sentinel_args("lead_updated")
    assert pm.hook.lead_updated(**args) == [(args["lead"], args["changes"])]
    assert pm.hook.dashboard_widget(**sentinel_args("dashboard_widget")) == ["widget"]


def test_wrong_argument_name_is_refused_at_registration(pm: pluggy.PluginManager) -> None:
    """A misspelt argument fails at register time, and the message names hook and argument."""

    class Typo:
        @hookimpl
        def lead_created(self, leed: object, context: object, api: object) -> None:
            """Misspelt ``lead``."""

    with pytest.raises(pluggy.PluginValidationError) as caught:
        pm.register(Typo(), name="typo")
    message = str(caught.value)
    assert "'lead_created'" in message
    assert "leed" in message
    assert "typo" in message
    assert pm.get_plugin("typo") is None


def test_unknown_hook_is_reported_by_check_pending(pm: pluggy.PluginManager) -> None:
    """An implementation of a hook nobody specified is reported when pending hooks are checked."""

    class Unknown:
        @hookimpl
        def lead_creatd(self, lead: object) -> None:
            """Misspelt hook name."""

    pm.register(Unknown())
    with pytest.raises(pluggy.PluginValidationError, match=r"unknown hook 'lead_creatd'"):
        pm.check_pending()


def test_optional_implementation_of_an_absent_hook_passes(pm: pluggy.PluginManager) -> None:
    """A hook of another plugin that may be absent is implemented with optionalhook=True."""

    class Optional:
        @hookimpl(optionalhook=True)
        def crm_sync_contact_pushed(self, contact: object) -> None:
            """Only called when crm-sync is there."""

    pm.register(Optional())
    pm.check_pending()


def test_first_result_stops_at_the_first_answer(pm: pluggy.PluginManager) -> None:
    """resolve_lead_owner returns one value: the first that is not None, in pluggy's order."""
    owner = object()

    class Abstains:
        @hookimpl(tryfirst=True)
        def resolve_lead_owner(self, lead: object) -> None:
            return None

    class Answers:
        @hookimpl
        def resolve_lead_owner(self, lead: object) -> object:
            return owner

    class NeverAsked:
        @hookimpl(trylast=True)
        def resolve_lead_owner(self, lead: object) -> object:
            raise AssertionError("called after an earlier answer")  # pragma: no cover

    for plugin in (NeverAsked(), Answers(), Abstains()):
        pm.register(plugin)
    assert pm.hook.resolve_lead_owner(**sentinel_args("resolve_lead_owner")) is owner


def test_the_example_and_scaffolded_plugins_match_the_specs(
    pm: pluggy.PluginManager, tmp_path: Path
) -> None:
    """The shipped example plugin and a freshly scaffolded one register without complaint."""
    scaffolded = scaffold_plugin("Spec Check", tmp_path)
    assert scaffolded.manifest.plugin_class is not None
    plugins = ((EXAMPLE_PLUGIN, "HelloPlugin"), (scaffolded.path, scaffolded.manifest.plugin_class))
    for folder, class_name in plugins:
        with loaded_module(folder / "main.py") as module:
            pm.register(getattr(module, class_name)())
    pm.check_pending()
    assert len(pm.hook.lead_created.get_hookimpls()) == 2


# More hooks from hosts and plugins ---------------------------------------------------------


def test_host_adds_its_own_spec_module(pm: pluggy.PluginManager) -> None:
    """A host's module of specs joins the built-ins; its HookInfo is found through the manager."""
    host_hooks = types.ModuleType("host_hooks")

    @spec(HookKind.FILTER, filtered="quote")
    def filter_quote(quote: object, context: object, api: object) -> object:
        """Change a quote before it is sent; return the new value."""

    @hookspec(firstresult=True)
    def pick_currency(context: object) -> str | None:
        """Bare pluggy spec."""

    host_hooks.filter_quote = filter_quote  # type: ignore[attr-defined]  # building a module
    host_hooks.pick_currency = pick_currency  # type: ignore[attr-defined]  # building a module
    pm.add_hookspecs(host_hooks)

    class Quoting:
        @hookimpl
        def filter_quote(self, quote: str) -> str:
            return quote.upper()

    pm.register(Quoting())
    pm.check_pending()
    assert pm.hook.filter_quote(quote="q", context=None, api=None) == ["Q"]
    assert hook_info("filter_quote", pm) == HookInfo(
        name="filter_quote", kind=HookKind.FILTER, filtered="quote"
    )
    assert hook_info("pick_currency", pm) == HookInfo(
        name="pick_currency", kind=HookKind.FIRST_RESULT, tenant_scoped=True
    )
    assert hook_info("lead_created", pm) is HOOKS["lead_created"]
    with pytest.raises(KeyError, match="did you mean 'filter_quote'"):
        hook_info("filter_qoute", pm)
    with pytest.raises(KeyError):
        hook_info("filter_quote")  # without the manager, only the built-ins are known


def test_plugin_declares_hooks_for_other_plugins(pm: pluggy.PluginManager) -> None:
    """A plugin ships a class of specs; once added, other plugins implement them."""

    class CrmSyncHooks:
        """Hooks the crm-sync plugin fires for other plugins."""

        @spec(HookKind.COLLECT, tenant_scoped=False)
        def crm_sync_field_map(self, api: object) -> dict[str, str] | None:
            """Contribute field mappings."""

    pm.add_hookspecs(CrmSyncHooks)

    class Mapper:
        @hookimpl
        def crm_sync_field_map(self) -> dict[str, str]:
            return {"phone": "mobile"}

    class Wrong:
        @hookimpl
        def crm_sync_field_map(self, context: object) -> None:
            """Asks for an argument the spec does not have."""

    pm.register(Mapper())
    pm.check_pending()
    assert pm.hook.crm_sync_field_map(api=None) == [{"phone": "mobile"}]
    info = hook_info("crm_sync_field_map", pm)
    assert (info.kind, info.tenant_scoped) == (HookKind.COLLECT, False)
    with pytest.raises(pluggy.PluginValidationError, match=r"crm_sync_field_map[\s\S]*context"):
        pm.register(Wrong())


def test_redeclaring_a_built_in_hook_is_refused(pm: pluggy.PluginManager) -> None:
    """A spec module cannot replace a built-in hook's specification."""

    class Clash:
        @hookspec
        def lead_created(self, lead: object) -> None:
            """Clashes."""

    with pytest.raises(ValueError, match="lead_created"):
        pm.add_hookspecs(Clash)


# Helpers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def loaded_module(path: Path) -> Iterator[types.ModuleType]:
    """Import a plugin's entry file under a name of its own, and forget it afterwards."""
    name = f"_hookspecs_test_plugin_{path.parent.name.replace('-', '_')}"
    found = importlib.util.spec_from_file_location(name, path)
    assert found is not None
    assert found.loader is not None
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
