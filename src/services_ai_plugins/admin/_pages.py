"""The admin's pages as plain functions over a host: no framework, no HTTP.

Each page method answers a :class:`Page` (a template and its context) or a
:class:`Redirect` (a path below the admin's mount), with the :class:`Notes` to show. Every
step goes through the host's registry with the admin's name as the actor of its audit
event; a step the registry refuses becomes an error note, never an exception.

========================================  =====================================================
Path (below the mount)                    Page
========================================  =====================================================
``/``                                     the plugins, and the upload form
``/plugins/<id>/``                        the review: manifest, permissions, requirements,
                                          where it runs, the check; approve and reject (a
                                          staged version with its diff); roll back
``/plugins/<id>/tenants``                 per tenant: enable, disable, grants, settings
``/plugins/<id>/failures``                failures, metrics per hook, suspensions (resolve, resume)
``/plugins/<id>/audit``                   the plugin's audit trail, newest first
========================================  =====================================================
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._manifest import Manifest
from .._review import (
    audit_line,
    code_to_check,
    json_text,
    kept_rows,
    optional_permissions,
    plugin_facts,
    requested,
    requirements,
    schema_row,
    staged_state,
    upgrade_view,
    upload_error,
    upload_note,
    where_it_runs,
)
from .._storage._protocol import PluginRecord, PluginStatus
from ..errors import (
    ExtraNotInstalled,
    PackageError,
    PluginError,
    PluginNotFound,
    ProblemsError,
)
from ._forms import SettingsForm
from ._request import Form, Upload

if TYPE_CHECKING:
    from .._host import PluginHost

__all__ = [
    "AUDIT_LIMIT",
    "FAILURES_LIMIT",
    "Notes",
    "Page",
    "Pages",
    "Redirect",
    "not_found",
    "plugin_path",
]

#: The most audit events the audit page shows.
AUDIT_LIMIT: Final = 500
#: The most failures of each kind (unresolved, resolved) the failures page shows.
FAILURES_LIMIT: Final = 100


@attrs.frozen
class Page:
    """A page to render: its template (under ``admin/templates``), context and status."""

    template: str
    context: Mapping[str, Any]
    status: int = 200


@attrs.frozen
class Redirect:
    """Go (303) to ``path``, below the admin's mount, with a query."""

    path: str


Outcome = Page | Redirect


class Notes:
    """The messages a step leaves for the admin: ``("success" | "error" | "info", text)``."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, level: str, text: str) -> None:
        self.items.append((level, text))

    def error(self, text: str) -> None:
        self.add("error", text)

    def success(self, text: str) -> None:
        self.add("success", text)


def plugin_path(plugin_id: str, page: str = "", **query: str) -> str:
    path = f"/plugins/{urllib.parse.quote(plugin_id, safe='')}/{page}"
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


class Pages:
    """The admin's pages for one request: the host, the admin's name, the notes to show."""

    def __init__(self, host: PluginHost, actor: str, notes: Notes) -> None:
        self.host: Final = host
        self.actor: Final = actor
        self.notes: Final = notes

    def _step(self, step: Callable[[], str]) -> bool:
        """Take a registry step: its line as a success note, or its refusal as an error."""
        try:
            done = step()
        except (PluginError, ValueError) as exc:
            self.notes.error(str(exc))
            return False
        self.notes.success(done)
        return True

    def record(self, plugin_id: str) -> PluginRecord:
        """:raises PluginNotFound: (the shell answers 404)."""
        return self.host.registry.plugin(plugin_id)

    def _page(
        self, template: str, title: str, record: PluginRecord | None, tab: str, **extra: Any
    ) -> Page:
        context: dict[str, Any] = {"title": title, "plugin": record, "tab": tab, **extra}
        if record is not None:
            context["tabs"] = [
                (name, label, plugin_path(record.id, name))
                for name, label in (
                    ("", "Review"),
                    ("tenants", "Tenants"),
                    ("failures", "Failures and metrics"),
                    ("audit", "Audit trail"),
                )
            ]
        return Page(template, context)

    # -- the plugins -----------------------------------------------------------------------------

    def plugins(self, shown: str = "", *, status: int = 200) -> Page:
        """Every plugin (by status, uninstalled ones only when asked), and the upload form."""
        try:
            wanted = PluginStatus(shown) if shown else None
        except ValueError:
            wanted = None
        host = self.host
        health = {row.plugin.id: row for row in host.dashboard(failures_per_plugin=0)}
        storage = host.registry.storage
        rows = []
        for record in host.registry.plugins(wanted):
            if wanted is None and record.status is PluginStatus.UNINSTALLED:
                continue
            found = health.get(record.id)
            rows.append(
                {
                    "record": record,
                    "url": plugin_path(record.id),
                    "failures_url": plugin_path(record.id, "failures"),
                    "enabled": [t.tenant for t in storage.list_tenants(record.id) if t.enabled],
                    "unresolved": found.unresolved if found is not None else 0,
                    "suspensions": found.suspensions if found is not None else (),
                    "staged": staged_state(record),
                }
            )
        filters = [("All", "", wanted is None)] + [
            (s.value.capitalize(), s.value, s is wanted) for s in PluginStatus
        ]
        page = self._page(
            "plugins.html", "Plugins", None, "", rows=rows, filters=filters, status=wanted
        )
        return attrs.evolve(page, status=status)

    def upload(self, form: Form, *, limit: int) -> Outcome:
        """Install the uploaded archive as the host installs uploads: a new plugin pending
        approval, a new version of an installed one staged beside it (an older version only
        with the form's ``downgrade`` box)."""
        sent: Upload | None = form.files.get("archive")
        if sent is None or (not sent.filename and not sent.data):
            self.notes.error("Choose a plugin ZIP to upload.")
            return self.plugins(status=400)
        name = sent.filename or "upload.zip"
        if len(sent.data) > limit:
            self.notes.error(
                f"{name}: the archive is {len(sent.data)} bytes, "
                f"over the upload limit of {limit} bytes"
            )
            return self.plugins(status=413)
        if not sent.data:
            self.notes.error(f"{name}: the file is empty")
            return self.plugins(status=400)
        try:
            record = self.host.install(
                sent.data,
                actor=self.actor,
                reinstall=True,
                downgrade=bool(form.get("downgrade")),
            )
        except PluginError as exc:
            self.notes.error(upload_error(exc, name))
            return self.plugins(status=400)
        self.notes.success(upload_note(record, name))
        return Redirect(plugin_path(record.id))

    # -- the review ------------------------------------------------------------------------------

    def review(
        self, plugin_id: str, *, report: dict[str, Any] | None = None, reason: str = ""
    ) -> Page:
        """What the plugin is and asks for; approve, reject, run the check."""
        record = self.record(plugin_id)
        registry = self.host.registry
        try:
            manifest: Manifest | None = registry.manifest_of(record)
        except PluginError as exc:
            manifest = None
            self.notes.error(f"The installed manifest cannot be read: {exc}")
        return self._page(
            "review.html",
            f"Review {record.name}",
            record,
            "",
            manifest=manifest,
            facts=plugin_facts(record, manifest),
            permissions=requested(manifest),
            settings_schema=[schema_row(spec) for spec in manifest.settings] if manifest else [],
            requirements=requirements(self.host, manifest) if manifest is not None else [],
            runs=where_it_runs(self.host, record, manifest),
            load_failure=registry.load_failure(record),
            history=registry.history(plugin_id),
            pending=record.status is PluginStatus.PENDING,
            upgrade=upgrade_view(registry, record),
            kept=kept_rows(registry, record),
            report=report,
            reason=reason,
        )

    def decide(self, plugin_id: str, form: Form) -> Outcome:
        """Approve, reject (with a reason), run the check, or roll back to a kept version.

        Approve and reject act on the staged version of a running plugin first."""
        record = self.record(plugin_id)
        registry = self.host.registry
        action = form.get("action")
        if action == "approve":

            def approve() -> str:
                staged = record.staged
                registry.approve(plugin_id, actor=self.actor)
                if staged is not None and record.status is not PluginStatus.PENDING:
                    return (
                        f"Approved {plugin_id} {staged.version}: the hosts switch to it at "
                        "their next refresh."
                    )
                return f"Approved {plugin_id}: enable it for tenants on its Tenants page."

            self._step(approve)
            return Redirect(plugin_path(plugin_id))
        if action == "reject":
            reason = form.get("reason").strip()
            if not reason:
                self.notes.error("A rejection needs a reason.")
                return attrs.evolve(self.review(plugin_id), status=400)
            if len(reason) > 2000:
                self.notes.error("The reason is over 2000 characters.")
                return attrs.evolve(self.review(plugin_id, reason=reason), status=400)

            def reject() -> str:
                staged = record.staged
                registry.reject(plugin_id, actor=self.actor, reason=reason)
                if staged is not None and record.status is not PluginStatus.PENDING:
                    return f"Rejected {plugin_id} {staged.version}; {record.version} runs on."
                return f"Rejected {plugin_id}."

            self._step(reject)
            return Redirect(plugin_path(plugin_id))
        if action == "check":
            return self.review(plugin_id, report=self._check(record))
        if action == "rollback":
            version = form.get("version").strip()
            if not version:
                self.notes.error("Name the version to roll back to.")
                return attrs.evolve(self.review(plugin_id), status=400)

            def rollback() -> str:
                done = registry.rollback(plugin_id, version, actor=self.actor)
                return (
                    f"Rolled {plugin_id} back from {record.version} to {done.version}: "
                    "the hosts load it at their next refresh."
                )

            self._step(rollback)
            return Redirect(plugin_path(plugin_id))
        self.notes.error(f"Unknown action {action!r}.")
        return attrs.evolve(self.review(plugin_id), status=400)

    def _check(self, record: PluginRecord) -> dict[str, Any] | None:
        """Run :func:`services_ai_plugins.check_plugin` on the code under review (the staged
        version's when there is one), as ``check`` does."""
        from .._check import check_plugin  # noqa: PLC0415 - the test kit, only when asked

        try:
            report = check_plugin(code_to_check(self.host, record))
        except PackageError as exc:
            self.notes.error(f"There is no code to check here: {exc}")
            return None
        except (ExtraNotInstalled, ProblemsError) as exc:
            self.notes.error(f"The check cannot run: {exc}")
            return None
        document: dict[str, Any] = report.to_dict()
        return document

    # -- per tenant ------------------------------------------------------------------------------

    def tenants(
        self,
        plugin_id: str,
        tenant: str = "",
        *,
        form: SettingsForm | None = None,
        status: int = 200,
    ) -> Page:
        """The tenants that know the plugin, and one tenant's activation, grants and settings."""
        record = self.record(plugin_id)
        tenant = tenant.strip()
        known = self.host.registry.storage.list_tenants(plugin_id)
        panel = self._tenant_panel(record, tenant, form) if tenant else None
        page = self._page(
            "tenants.html",
            f"{record.name}: tenants",
            record,
            "tenants",
            known=[
                {"record": t, "url": plugin_path(plugin_id, "tenants", tenant=t.tenant)}
                for t in known
            ],
            tenant=tenant,
            panel=panel,
        )
        return attrs.evolve(page, status=status)

    def tenant_step(self, plugin_id: str, form: Form) -> Outcome:
        """Enable, disable, grant, revoke or save settings for the form's tenant."""
        self.record(plugin_id)
        registry = self.host.registry
        actor = self.actor
        tenant = form.get("tenant").strip()
        action = form.get("action")
        if not tenant:
            self.notes.error("Name the tenant.")
            return attrs.evolve(self.tenants(plugin_id), status=400)
        permission = form.get("permission")

        def enable() -> str:
            registry.enable(plugin_id, tenant, actor=actor)
            return f"Enabled {plugin_id} for {tenant}."

        def disable() -> str:
            registry.disable(plugin_id, tenant, actor=actor)
            return f"Disabled {plugin_id} for {tenant}."

        def grant() -> str:
            registry.grant(plugin_id, tenant, permission, actor=actor)
            return f"Granted {permission} to {plugin_id} for {tenant}."

        def revoke() -> str:
            registry.revoke(plugin_id, tenant, permission, actor=actor)
            return f"Revoked {permission} of {plugin_id} for {tenant}."

        steps = {"enable": enable, "disable": disable, "grant": grant, "revoke": revoke}
        here = plugin_path(plugin_id, "tenants", tenant=tenant)
        if action in steps:
            self._step(steps[action])
            return Redirect(here)
        if action == "settings":
            return self._save_settings(plugin_id, tenant, form, here)
        self.notes.error(f"Unknown action {action!r}.")
        return self.tenants(plugin_id, tenant, status=400)

    def _settings_form(self, record: PluginRecord, tenant: str) -> SettingsForm | None:
        registry = self.host.registry
        try:
            manifest = registry.manifest_of(record)
        except PluginError:
            return None
        stored = registry.tenant(record.id, tenant)
        # Not strict: a secret that cannot be decrypted reads as not set (its value is never shown).
        view = registry.tenant_view(tenant, [record], running_only=False)
        return SettingsForm(
            manifest.settings,
            values=view.settings.get(record.id, {}),
            stored=set(stored.settings) if stored is not None else set(),
        )

    def _save_settings(self, plugin_id: str, tenant: str, form: Form, here: str) -> Outcome:
        record = self.record(plugin_id)
        settings = self._settings_form(record, tenant)
        if settings is None:
            self.notes.error(f"The installed manifest of {plugin_id} cannot be read: no settings.")
            return self.tenants(plugin_id, tenant, status=400)
        changes = settings.changes(form.fields)
        if changes is None:
            self.notes.error("The settings were not saved: see the errors below.")
            return self.tenants(plugin_id, tenant, form=settings, status=400)
        if not changes:
            self.notes.add("info", "No setting changed.")
            return Redirect(here)
        try:
            self.host.registry.set_settings(plugin_id, tenant, changes, actor=self.actor)
        except ProblemsError as exc:
            for problem in exc.problems:
                settings.add_error(problem.path, problem.message)
            self.notes.error("The settings were not saved: see the errors below.")
            return self.tenants(plugin_id, tenant, form=settings, status=400)
        except (PluginError, ValueError) as exc:
            self.notes.error(str(exc))
            return self.tenants(plugin_id, tenant, form=settings, status=400)
        self.notes.success(f"Saved {', '.join(sorted(changes))} of {plugin_id} for {tenant}.")
        return Redirect(here)

    def _tenant_panel(
        self, record: PluginRecord, tenant: str, form: SettingsForm | None
    ) -> dict[str, Any]:
        registry = self.host.registry
        stored = registry.tenant(record.id, tenant)
        return {
            "record": stored,
            "running": record.id in registry.enabled_plugins(tenant),
            "optional": optional_permissions(registry, record, stored),
            "settings": form or self._settings_form(record, tenant),
            "active": record.status is PluginStatus.APPROVED,
        }

    # -- failures, metrics, suspensions ----------------------------------------------------------

    def failures(self, plugin_id: str, *, status: int = 200) -> Page:
        """Failures (resolve them), metrics per hook, suspensions (resume them)."""
        record = self.record(plugin_id)
        host = self.host
        metrics = [
            {
                "row": m,
                "rate": m.errors / m.calls if m.calls else 0.0,
                "mean_ms": 1000 * m.total_duration / m.calls if m.calls else 0.0,
                "max_ms": 1000 * m.max_duration,
            }
            for m in host.metrics(plugin_id)
        ]
        page = self._page(
            "failures.html",
            f"{record.name}: failures and metrics",
            record,
            "failures",
            suspensions=host.suspensions(plugin_id),
            metrics=metrics,
            unresolved=host.failures(plugin_id, resolved=False, limit=FAILURES_LIMIT),
            resolved=host.failures(plugin_id, resolved=True, limit=FAILURES_LIMIT),
            limit=FAILURES_LIMIT,
        )
        return attrs.evolve(page, status=status)

    def failure_step(self, plugin_id: str, form: Form) -> Outcome:
        """Resume (everywhere or for a tenant), resolve one failure or all."""
        self.record(plugin_id)
        host = self.host
        actor = self.actor
        action = form.get("action")
        tenant = form.get("tenant").strip() or None
        if action == "resume":

            def resume() -> str:
                host.resume(plugin_id, actor=actor, tenant=tenant)
                return f"Resumed {plugin_id} {f'for {tenant}' if tenant else 'everywhere'}."

            self._step(resume)
        elif action in ("resolve", "resolve-all"):
            ids: list[int] | None = None
            if action == "resolve":
                try:
                    ids = [int(form.get("failure"))]
                except ValueError:
                    self.notes.error("Name the failure to resolve.")
                    return self.failures(plugin_id, status=400)

            def resolve() -> str:
                count = host.resolve_failures(plugin_id, ids=ids, actor=actor)
                return f"Resolved {count} failure{'s' if count != 1 else ''} of {plugin_id}."

            self._step(resolve)
        else:
            self.notes.error(f"Unknown action {action!r}.")
            return self.failures(plugin_id, status=400)
        return Redirect(plugin_path(plugin_id, "failures"))

    # -- the audit trail -------------------------------------------------------------------------

    def audit(self, plugin_id: str) -> Page:
        """The plugin's audit trail, newest first."""
        record = self.record(plugin_id)
        events = self.host.registry.audit_log(plugin_id=plugin_id, limit=AUDIT_LIMIT)
        return self._page(
            "audit.html",
            f"{record.name}: audit trail",
            record,
            "audit",
            events=[
                {
                    "event": e,
                    "line": audit_line(e),
                    "before": json_text(e.before),
                    "after": json_text(e.after),
                }
                for e in events
            ],
            limit=AUDIT_LIMIT,
        )


def not_found(error: PluginNotFound) -> Page:
    return Page("error.html", {"title": "Not found", "message": str(error)}, 404)


# -- what the pages show (as the Django admin's pages show it) -----------------------------------
