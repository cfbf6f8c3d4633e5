"""The plugin admin's pages, served under the ``Plugin`` model's admin URLs.

Every page reads the process's host (:func:`~services_ai_plugins.django.conf.get_host`),
never the app's models: the registry may live in a SQLite file or on a PostgreSQL server
as well as in the project's database. Every step goes through the host's registry, with
the staff user's username as the actor of its audit event.

===================================  ==========================================================
URL (under the model's admin URL)    Page
===================================  ==========================================================
``""``                               the plugins, and the upload form
``<id>/change/``                     the review: manifest, permissions, requirements, check,
                                     approve and reject (a staged version with its diff),
                                     roll back to a kept version
``<id>/tenants/``                    per tenant: enable, disable, grants, settings
``<id>/failures/``                   failures, metrics per hook, suspensions (resolve, resume)
``<id>/audit/``                      the audit trail, newest first
===================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import urlencode

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
from . import conf
from .forms import RejectForm, RollbackForm, SettingsForm, TenantForm, UploadForm

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    from .._host import PluginHost

__all__ = ["PERMISSION", "PluginPages", "may_manage"]

#: The permission that opens the plugin admin (superusers hold every permission).
PERMISSION: Final = "services_ai_plugins.manage_plugins"

#: The most audit events the audit page shows.
AUDIT_LIMIT: Final = 500
#: The most failures of each kind (unresolved, resolved) the failures page shows.
FAILURES_LIMIT: Final = 100

View = Callable[..., HttpResponse]


def _actor(request: HttpRequest) -> str:
    return str(request.user.get_username())


def may_manage(request: HttpRequest) -> bool:
    """Whether the request's user holds :data:`PERMISSION` (a custom user model without
    permissions holds none)."""
    has_perm = getattr(request.user, "has_perm", None)
    return bool(has_perm is not None and has_perm(PERMISSION))


class PluginPages:
    """The pages of one ``Plugin`` model admin (see the module's table of URLs)."""

    def __init__(self, model_admin: ModelAdmin[Any]) -> None:
        self.model_admin: Final = model_admin
        self.opts: Final = model_admin.opts

    # -- wiring ----------------------------------------------------------------------------------

    def urls(self) -> list[URLPattern]:
        """The model admin's URLs: each page behind the admin's login and our permission."""
        pages: list[tuple[str, str, View]] = [
            ("", "changelist", self.plugins),
            ("<slug:plugin_id>/change/", "change", self.review),
            ("<slug:plugin_id>/tenants/", "tenants", self.tenants),
            ("<slug:plugin_id>/failures/", "failures", self.failures),
            ("<slug:plugin_id>/audit/", "audit", self.audit),
        ]
        return [
            path(route, self._guarded(view), name=self.url_name(page))
            for route, page, view in pages
        ]

    def url_name(self, page: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{page}"

    def url(self, page: str, *args: str, query: Mapping[str, str] | None = None) -> str:
        site = self.model_admin.admin_site.name
        address = str(reverse(f"{site}:{self.url_name(page)}", args=args))
        return f"{address}?{urlencode(query)}" if query else address

    def _guarded(self, view: View) -> View:
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            # The admin's own wrapper sends anonymous and non-staff users to its login page;
            # staff without the permission are refused here.
            if not may_manage(request):
                raise PermissionDenied(f"needs the permission {PERMISSION}")
            return view(request, *args, **kwargs)

        guarded.__name__ = guarded.__qualname__ = view.__name__
        wrapped: View = self.model_admin.admin_site.admin_view(guarded)
        return wrapped

    def _page(
        self,
        request: HttpRequest,
        template: str,
        title: str,
        *,
        record: PluginRecord | None = None,
        tab: str | None = None,
        **extra: Any,
    ) -> TemplateResponse:
        context = {
            **self.model_admin.admin_site.each_context(request),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "title": title,
            "plugin": record,
            "tab": tab,
            "changelist_url": self.url("changelist"),
            **extra,
        }
        if record is not None:
            context["review_url"] = self.url("change", record.id)
            context["tabs"] = [
                (name, label, self.url(name, record.id))
                for name, label in (
                    ("change", "Review"),
                    ("tenants", "Tenants"),
                    ("failures", "Failures and metrics"),
                    ("audit", "Audit trail"),
                )
            ]
        request.current_app = self.model_admin.admin_site.name
        return TemplateResponse(request, f"services_ai_plugins/admin/{template}", context)

    @staticmethod
    def _record(host: PluginHost, plugin_id: str) -> PluginRecord:
        try:
            return host.registry.plugin(plugin_id)
        except PluginNotFound as exc:
            raise Http404(str(exc)) from exc

    @staticmethod
    def _step(request: HttpRequest, step: Callable[[], str]) -> bool:
        """Take a registry step: its line as a success message, or its refusal as an error."""
        try:
            done = step()
        except (PluginError, ValueError) as exc:
            messages.error(request, str(exc))
            return False
        messages.success(request, done)
        return True

    # -- the plugins -----------------------------------------------------------------------------

    def plugins(self, request: HttpRequest) -> HttpResponse:
        """Every plugin (by status), and the upload form."""
        host = conf.get_host()
        limit = conf.plugins_settings().admin_upload_limit
        if request.method == "POST":
            form = UploadForm(request.POST, request.FILES, limit=limit)
            installed = self._upload(request, host, form)
            if installed is not None:
                return HttpResponseRedirect(self.url("change", installed))
        else:
            form = UploadForm(limit=limit)
        shown = request.GET.get("status") or None
        try:
            status = PluginStatus(shown) if shown else None
        except ValueError:
            status = None
        health = {row.plugin.id: row for row in host.dashboard(failures_per_plugin=0)}
        storage = host.registry.storage
        rows = []
        for record in host.registry.plugins(status):
            if status is None and record.status is PluginStatus.UNINSTALLED:
                continue
            found = health.get(record.id)
            rows.append(
                {
                    "record": record,
                    "url": self.url("change", record.id),
                    "failures_url": self.url("failures", record.id),
                    "enabled": [t.tenant for t in storage.list_tenants(record.id) if t.enabled],
                    "unresolved": found.unresolved if found is not None else 0,
                    "suspensions": found.suspensions if found is not None else (),
                    "staged": staged_state(record),
                }
            )
        filters = [("All", "", status is None)] + [
            (s.value.capitalize(), s.value, s is status) for s in PluginStatus
        ]
        return self._page(
            request,
            "plugins.html",
            "Plugins",
            rows=rows,
            form=form,
            filters=filters,
            status=status,
        )

    def _upload(self, request: HttpRequest, host: PluginHost, form: UploadForm) -> str | None:
        """Install the uploaded archive as the host installs uploads (a new version of an
        installed plugin staged beside it; an older one only with the form's ``downgrade``
        box); its id, or None."""
        if not form.is_valid():
            sent = request.FILES.get("archive")
            if sent is None:
                messages.error(request, "Choose a plugin ZIP to upload.")
            else:
                problems = " ".join(str(e) for e in form.errors.get("archive", ()))
                messages.error(request, f"{sent.name}: {problems or 'cannot be uploaded'}")
            return None
        upload = form.cleaned_data["archive"]
        name = str(upload.name or "upload.zip")
        if upload.size is not None and upload.size > form.limit:
            messages.error(
                request,
                f"{name}: the archive is {upload.size} bytes, over the upload limit of "
                f"{form.limit} bytes (SERVICES_AI_PLUGINS['ADMIN_UPLOAD_LIMIT'])",
            )
            return None
        data = upload.read(form.limit + 1)
        if len(data) > form.limit:
            messages.error(request, f"{name}: the archive is over the upload limit")
            return None
        try:
            record = host.install(
                data,
                actor=_actor(request),
                reinstall=True,
                downgrade=form.cleaned_data["downgrade"],
            )
        except PluginError as exc:
            messages.error(request, upload_error(exc, name))
            return None
        messages.success(request, upload_note(record, name))
        return record.id

    # -- the review ------------------------------------------------------------------------------

    def review(self, request: HttpRequest, plugin_id: str) -> HttpResponse:
        """What the plugin is and asks for; approve, reject (a staged version first), run the
        check, roll back to a kept version."""
        host = conf.get_host()
        record = self._record(host, plugin_id)
        actor = _actor(request)
        registry = host.registry
        reject = RejectForm()
        report = None
        upgrading = (
            record.staged.version
            if record.staged is not None and record.status is not PluginStatus.PENDING
            else None
        )
        if request.method == "POST":
            action = request.POST.get("action")
            if action == "approve":

                def approve() -> str:
                    registry.approve(plugin_id, actor=actor)
                    if upgrading is not None:
                        return (
                            f"Approved {plugin_id} {upgrading}: the hosts switch to it at "
                            "their next refresh."
                        )
                    return f"Approved {plugin_id}: enable it for tenants on its Tenants page."

                self._step(request, approve)
                return HttpResponseRedirect(self.url("change", plugin_id))
            if action == "reject":
                reject = RejectForm(request.POST)
                if reject.is_valid():
                    reason = reject.cleaned_data["reason"]

                    def rejected() -> str:
                        registry.reject(plugin_id, actor=actor, reason=reason)
                        if upgrading is not None:
                            return f"Rejected {plugin_id} {upgrading}; {record.version} runs on."
                        return f"Rejected {plugin_id}."

                    self._step(request, rejected)
                    return HttpResponseRedirect(self.url("change", plugin_id))
                messages.error(request, "A rejection needs a reason.")
            elif action == "check":
                report = self._check(request, record)
            elif action == "rollback":
                rollback = RollbackForm(request.POST)
                if rollback.is_valid():
                    version = rollback.cleaned_data["version"]

                    def rolled_back() -> str:
                        done = registry.rollback(plugin_id, version, actor=actor)
                        return (
                            f"Rolled {plugin_id} back from {record.version} to {done.version}: "
                            "the hosts load it at their next refresh."
                        )

                    self._step(request, rolled_back)
                    return HttpResponseRedirect(self.url("change", plugin_id))
                messages.error(request, "Name the version to roll back to.")
            else:
                messages.error(request, f"Unknown action {action!r}.")
        try:
            manifest: Manifest | None = registry.manifest_of(record)
        except PluginError as exc:
            manifest = None
            messages.error(request, f"The installed manifest cannot be read: {exc}")
        return self._page(
            request,
            "review.html",
            f"Review {record.name}",
            record=record,
            tab="change",
            manifest=manifest,
            facts=plugin_facts(record, manifest),
            permissions=requested(manifest),
            settings_schema=[schema_row(spec) for spec in manifest.settings] if manifest else [],
            requirements=requirements(host, manifest) if manifest is not None else [],
            runs=where_it_runs(host, record, manifest),
            load_failure=host.registry.load_failure(record),
            history=registry.history(plugin_id),
            reject_form=reject,
            pending=record.status is PluginStatus.PENDING,
            upgrade=upgrade_view(registry, record),
            kept=kept_rows(registry, record),
            report=report,
        )

    def _check(self, request: HttpRequest, record: PluginRecord) -> dict[str, Any] | None:
        """Run :func:`services_ai_plugins.check_plugin` on the code under review (the staged
        version's when there is one), as ``check`` does."""
        from .._check import check_plugin  # noqa: PLC0415 - the test kit, only when asked

        try:
            report = check_plugin(code_to_check(conf.get_host(), record))
        except PackageError as exc:
            messages.error(request, f"There is no code to check here: {exc}")
            return None
        except (ExtraNotInstalled, ProblemsError) as exc:
            messages.error(request, f"The check cannot run: {exc}")
            return None
        document: dict[str, Any] = report.to_dict()
        return document

    # -- per tenant ------------------------------------------------------------------------------

    def tenants(self, request: HttpRequest, plugin_id: str) -> HttpResponse:
        """The tenants that know the plugin, and one tenant's activation, grants and settings."""
        host = conf.get_host()
        record = self._record(host, plugin_id)
        registry = host.registry
        actor = _actor(request)
        tenant = (request.POST.get("tenant") or request.GET.get("tenant") or "").strip()
        settings_form: SettingsForm | None = None
        if request.method == "POST":
            action = request.POST.get("action")
            form = TenantForm(request.POST)
            if not form.is_valid():
                messages.error(request, "Name the tenant.")
                return HttpResponseRedirect(self.url("tenants", plugin_id))
            here = self.url("tenants", plugin_id, query={"tenant": tenant})
            permission = request.POST.get("permission", "")

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
            if action in steps:
                self._step(request, steps[action])
            elif action == "settings":
                settings_form = self._settings_form(host, record, tenant, data=request.POST)
                if settings_form is not None and self._save_settings(
                    request, host, record, tenant, settings_form
                ):
                    return HttpResponseRedirect(here)
            else:
                messages.error(request, f"Unknown action {action!r}.")
            if settings_form is None:
                return HttpResponseRedirect(here)
            record = self._record(host, plugin_id)
        known = registry.storage.list_tenants(plugin_id)
        panel = None
        if tenant:
            panel = self._tenant_panel(host, record, tenant, settings_form)
        return self._page(
            request,
            "tenants.html",
            f"{record.name}: tenants",
            record=record,
            tab="tenants",
            known=[
                {"record": t, "url": self.url("tenants", plugin_id, query={"tenant": t.tenant})}
                for t in known
            ],
            tenant=tenant,
            panel=panel,
            tenant_form=TenantForm(initial={"tenant": tenant}),
        )

    def _settings_form(
        self,
        host: PluginHost,
        record: PluginRecord,
        tenant: str,
        data: Mapping[str, Any] | None = None,
    ) -> SettingsForm | None:
        try:
            manifest = host.registry.manifest_of(record)
        except PluginError:
            return None
        stored = host.registry.tenant(record.id, tenant)
        # Not strict: a secret that cannot be decrypted reads as not set (its value is never shown).
        view = host.registry.tenant_view(tenant, [record], running_only=False)
        return SettingsForm(
            manifest.settings,
            values=view.settings.get(record.id, {}),
            stored=set(stored.settings) if stored is not None else set(),
            data=data,
        )

    def _save_settings(
        self,
        request: HttpRequest,
        host: PluginHost,
        record: PluginRecord,
        tenant: str,
        form: SettingsForm,
    ) -> bool:
        if not form.is_valid():
            messages.error(request, "The settings were not saved: see the errors below.")
            return False
        changes = form.changes()
        if not changes:
            messages.info(request, "No setting changed.")
            return True
        try:
            host.registry.set_settings(record.id, tenant, changes, actor=_actor(request))
        except ProblemsError as exc:
            for problem in exc.problems:
                field = problem.path if problem.path in form.fields else None
                form.add_error(field, problem.message)
            messages.error(request, "The settings were not saved: see the errors below.")
            return False
        except PluginError as exc:
            messages.error(request, str(exc))
            return False
        messages.success(
            request, f"Saved {', '.join(sorted(changes))} of {record.id} for {tenant}."
        )
        return True

    def _tenant_panel(
        self,
        host: PluginHost,
        record: PluginRecord,
        tenant: str,
        form: SettingsForm | None,
    ) -> dict[str, Any]:
        registry = host.registry
        stored = registry.tenant(record.id, tenant)
        return {
            "record": stored,
            "running": record.id in registry.enabled_plugins(tenant),
            "optional": optional_permissions(registry, record, stored),
            "settings": form or self._settings_form(host, record, tenant),
            "active": record.status is PluginStatus.APPROVED,
        }

    # -- failures, metrics, suspensions ----------------------------------------------------------

    def failures(self, request: HttpRequest, plugin_id: str) -> HttpResponse:
        """Failures (resolve them), metrics per hook, suspensions (resume them)."""
        host = conf.get_host()
        record = self._record(host, plugin_id)
        actor = _actor(request)
        if request.method == "POST":
            action = request.POST.get("action")
            tenant = request.POST.get("tenant") or None
            if action == "resume":

                def resume() -> str:
                    host.resume(plugin_id, actor=actor, tenant=tenant)
                    return f"Resumed {plugin_id} {f'for {tenant}' if tenant else 'everywhere'}."

                self._step(request, resume)
            elif action in ("resolve", "resolve-all"):
                ids = None
                if action == "resolve":
                    try:
                        ids = [int(request.POST.get("failure", ""))]
                    except ValueError:
                        messages.error(request, "Name the failure to resolve.")
                        return HttpResponseRedirect(self.url("failures", plugin_id))
                self._step(request, lambda: self._resolve(host, plugin_id, ids, actor))
            else:
                messages.error(request, f"Unknown action {action!r}.")
            return HttpResponseRedirect(self.url("failures", plugin_id))
        metrics = [
            {
                "row": m,
                "rate": m.errors / m.calls if m.calls else 0.0,
                "mean_ms": 1000 * m.total_duration / m.calls if m.calls else 0.0,
                "max_ms": 1000 * m.max_duration,
            }
            for m in host.metrics(plugin_id)
        ]
        return self._page(
            request,
            "failures.html",
            f"{record.name}: failures and metrics",
            record=record,
            tab="failures",
            suspensions=host.suspensions(plugin_id),
            metrics=metrics,
            unresolved=host.failures(plugin_id, resolved=False, limit=FAILURES_LIMIT),
            resolved=host.failures(plugin_id, resolved=True, limit=FAILURES_LIMIT),
            limit=FAILURES_LIMIT,
        )

    @staticmethod
    def _resolve(host: PluginHost, plugin_id: str, ids: list[int] | None, actor: str) -> str:
        """Resolve failures, audited with the staff user as the actor."""
        count = host.resolve_failures(plugin_id, ids=ids, actor=actor)
        return f"Resolved {count} failure{'s' if count != 1 else ''} of {plugin_id}."

    # -- the audit trail -------------------------------------------------------------------------

    def audit(self, request: HttpRequest, plugin_id: str) -> HttpResponse:
        """The plugin's audit trail, newest first."""
        host = conf.get_host()
        record = self._record(host, plugin_id)
        events = host.registry.audit_log(plugin_id=plugin_id, limit=AUDIT_LIMIT)
        return self._page(
            request,
            "audit.html",
            f"{record.name}: audit trail",
            record=record,
            tab="audit",
            events=[
                {
                    "event": event,
                    "line": audit_line(event),
                    "before": json_text(event.before),
                    "after": json_text(event.after),
                }
                for event in events
            ],
            limit=AUDIT_LIMIT,
        )


# -- what the pages show ---------------------------------------------------------------------------
