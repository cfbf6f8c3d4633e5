"""The plugin admin's forms: an upload, a rejection, a rollback, a tenant, and a plugin's
settings.

The settings form is built from the manifest's settings schema: one field per setting,
of its type, with its choices, bounds, default and whether it is required. Secrets are
write-only: their field is never filled in, and left blank it keeps the stored value.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Final

from django import forms
from django.core.exceptions import ValidationError

from .._json import JSONValue
from .._review import setting_help, setting_unchanged
from .._settings import SettingSpec, SettingType

__all__ = ["RejectForm", "RollbackForm", "SettingsForm", "TenantForm", "UploadForm"]

#: The prefix of every settings field's HTML name (``setting-api_key``).
SETTINGS_PREFIX: Final = "setting"
#: The prefix of a secret's "clear" box (``clear:api_key``: never a setting's name).
_CLEAR: Final = "clear:"


class UploadForm(forms.Form):
    """A plugin ZIP to install: a new plugin pending approval, or a new version of an
    installed one (staged beside a running one until approved)."""

    archive = forms.FileField(label="Plugin ZIP", help_text="A plugin archive (.zip).")
    downgrade = forms.BooleanField(
        required=False,
        label="Allow an older version",
        help_text="Install a version older than the installed one (refused without this box).",
    )

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit
        self.fields["archive"].help_text = f"A plugin archive (.zip), at most {_size(limit)}."


class RejectForm(forms.Form):
    """Why a pending plugin is rejected (required: it is shown and audited)."""

    reason = forms.CharField(
        max_length=2000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Required: the plugin's author and the audit trail see it.",
    )


class RollbackForm(forms.Form):
    """The kept version to roll back to."""

    version = forms.CharField(max_length=200, strip=True)


class TenantForm(forms.Form):
    """A tenant's name."""

    tenant = forms.CharField(max_length=200, strip=True, label="Tenant")


class SettingsForm(forms.Form):
    """A plugin's settings for one tenant, fields built from its settings schema.

    ``values`` are the tenant's settings as the plugin sees them (defaults filled in),
    ``stored`` the names of those the tenant has set. :meth:`changes` answers what to
    give :meth:`~services_ai_plugins.Registry.set_settings`: only what the admin changed,
    so a setting left at its default keeps following the manifest's default.
    """

    def __init__(
        self,
        specs: Sequence[SettingSpec],
        *,
        values: Mapping[str, JSONValue],
        stored: Collection[str],
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(data, prefix=SETTINGS_PREFIX)
        self.specs: Final = tuple(specs)
        self.values: Final = dict(values)
        self.stored: Final = frozenset(stored)
        for spec in self.specs:
            secret = spec.type is SettingType.SECRET
            value = None if secret else values.get(spec.name)
            self.fields[spec.name] = _field(spec, value, stored=spec.name in self.stored)
            if secret and spec.name in self.stored and not spec.required:
                self.fields[_CLEAR + spec.name] = forms.BooleanField(
                    required=False,
                    label=f"Clear {_label(spec)}",
                    help_text="Remove the stored secret.",
                )

    def rows(self) -> Iterator[tuple[SettingSpec, forms.BoundField, forms.BoundField | None]]:
        """Each setting with its field and, for a stored secret, its "clear" box."""
        for spec in self.specs:
            clear = _CLEAR + spec.name
            yield spec, self[spec.name], self[clear] if clear in self.fields else None

    def changes(self) -> dict[str, JSONValue]:
        """The settings the admin changed: new values, None to go back to the default.

        Call it once the form is valid.
        """
        changed: dict[str, JSONValue] = {}
        for spec in self.specs:
            value = self.cleaned_data.get(spec.name)
            if spec.type is SettingType.SECRET:
                if value:
                    changed[spec.name] = value  # the same value again changes nothing
                elif self.cleaned_data.get(_CLEAR + spec.name):
                    changed[spec.name] = None
                continue  # blank: the stored secret stays
            if value is None:
                if spec.name in self.stored:
                    changed[spec.name] = None
            elif not setting_unchanged(spec, value, self.values.get(spec.name)):
                changed[spec.name] = value
        return changed


def _label(spec: SettingSpec) -> str:
    return spec.label or spec.name


def _text(value: JSONValue) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _field(spec: SettingSpec, value: JSONValue, *, stored: bool) -> forms.Field:
    """The form field of one setting, holding ``value`` (None: empty)."""
    # Required in the form when the registry would refuse it blank: no default, and for a
    # secret, none stored yet (a blank secret keeps the stored one).
    required = spec.required and spec.default is None
    options: dict[str, Any] = {
        "label": _label(spec),
        "help_text": setting_help(spec, stored=stored),
        "required": required,
    }
    kind = spec.type
    if kind is SettingType.SECRET:
        options["required"] = required and not stored
        return forms.CharField(
            max_length=spec.max_length,
            strip=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
            **options,
        )
    if kind is SettingType.STRING:
        # Blank is "not set" (the default), as for every other type.
        return forms.CharField(
            max_length=spec.max_length, strip=False, empty_value=None, initial=value, **options
        )
    if kind is SettingType.INTEGER:
        return forms.IntegerField(
            min_value=_bound(spec.min), max_value=_bound(spec.max), initial=value, **options
        )
    if kind is SettingType.NUMBER:
        return forms.FloatField(min_value=spec.min, max_value=spec.max, initial=value, **options)
    if kind is SettingType.BOOLEAN:
        options["required"] = False  # an unticked box is false
        return forms.BooleanField(initial=bool(value), **options)
    if kind is SettingType.CHOICE:
        return _ChoiceField(spec.choices or (), value=value, **options)
    return _JSONField(initial=None if value is None else json.dumps(value, indent=2), **options)


def _bound(limit: float | None) -> int | None:
    return None if limit is None else int(limit)


class _ChoiceField(forms.ChoiceField):
    """One of the setting's choices (strings, numbers or booleans), sent as JSON text."""

    def __init__(self, choices: Sequence[JSONValue], *, value: JSONValue, **options: Any) -> None:
        self.options: Final = {json.dumps(choice): choice for choice in choices}
        listed: list[tuple[str, str]] = [(key, _text(c)) for key, c in self.options.items()]
        if not options["required"]:
            listed.insert(0, ("", "(default)"))
        super().__init__(
            choices=listed,
            initial=json.dumps(value) if value is not None else "",
            **options,
        )

    def clean(self, value: Any) -> JSONValue:
        key = super().clean(value)
        return self.options[key] if key else None


class _JSONField(forms.CharField):
    """Any JSON value, as text."""

    def __init__(self, **options: Any) -> None:
        super().__init__(
            strip=True,
            empty_value=None,
            widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
            **options,
        )

    def clean(self, value: Any) -> JSONValue:
        text = super().clean(value)
        if not text:
            return None
        try:
            parsed: JSONValue = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"is not valid JSON: {exc}") from exc
        return parsed


def _size(count: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"
