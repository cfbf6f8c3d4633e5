"""A plugin's settings form, built from its manifest's settings schema, without a framework.

One field per setting, of its type, with its choices, bounds, default and whether it is
required. Secrets are write-only: their field is never filled in, and left blank it keeps
the stored value (a "clear" box removes an optional one). The same rules as the Django
admin's settings form (services_ai_plugins.django.forms).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import attrs

from .._json import JSONValue
from .._review import setting_help, setting_unchanged
from .._settings import SettingSpec, SettingType

__all__ = ["SETTINGS_PREFIX", "SettingField", "SettingsForm"]

#: The prefix of every settings field's HTML name (``setting-api_key``).
SETTINGS_PREFIX: Final = "setting-"
#: The prefix of a secret's "clear" box (``clear:api_key``: never a setting's name).
_CLEAR: Final = "clear:"


@attrs.define(kw_only=True)
class SettingField:
    """One input of the form, as the template draws it."""

    spec: SettingSpec
    #: ``text``, ``number``, ``checkbox``, ``select``, ``textarea`` or ``password``.
    widget: str
    #: The HTML name.
    name: str
    label: str
    #: The text in the input ("" for a secret, always).
    value: str
    required: bool
    help: str
    #: For a select: (value, label, selected).
    choices: list[tuple[str, str, bool]] = attrs.field(factory=list)
    #: A stored optional secret: the name of its "clear" box.
    clear: str | None = None
    errors: list[str] = attrs.field(factory=list)


class SettingsForm:
    """A plugin's settings for one tenant: ``values`` as the plugin sees them (defaults in),
    ``stored`` the names the tenant has set; :meth:`changes` reads a POST."""

    def __init__(
        self,
        specs: Sequence[SettingSpec],
        *,
        values: Mapping[str, JSONValue],
        stored: Collection[str],
    ) -> None:
        self.specs: Final = tuple(specs)
        self.values: Final = dict(values)
        self.stored: Final = frozenset(stored)
        self.fields: Final[dict[str, SettingField]] = {
            spec.name: self._field(spec) for spec in self.specs
        }
        #: Problems that belong to no field.
        self.errors: list[str] = []

    def _field(self, spec: SettingSpec, sent: str | None = None) -> SettingField:
        secret = spec.type is SettingType.SECRET
        stored = spec.name in self.stored
        value = None if secret else self.values.get(spec.name)
        required = spec.required and spec.default is None and not (secret and stored)
        shown = sent if sent is not None else ("" if value is None else _text(spec, value))
        field = SettingField(
            spec=spec,
            widget=_WIDGETS[spec.type],
            name=SETTINGS_PREFIX + spec.name,
            label=spec.label or spec.name,
            value="" if secret else shown,
            required=required and spec.type is not SettingType.BOOLEAN,
            help=setting_help(spec, stored=stored),
            clear=_CLEAR + spec.name if secret and stored and not spec.required else None,
        )
        if spec.type is SettingType.CHOICE:
            keys = [json.dumps(choice) for choice in spec.choices or ()]
            chosen = shown if sent is not None else ("" if value is None else json.dumps(value))
            field.choices = [
                (key, _text(spec, choice), key == chosen)
                for key, choice in zip(keys, spec.choices or (), strict=True)
            ]
            if not field.required:
                field.choices.insert(0, ("", "(default)", chosen == ""))
        if spec.type is SettingType.BOOLEAN:
            field.value = "on" if (sent == "on" if sent is not None else bool(value)) else ""
        return field

    def changes(self, data: Mapping[str, str]) -> dict[str, JSONValue] | None:
        """The settings the admin changed (None: back to the default), or None when a field
        is wrong (its error is on the field, and the field keeps what was sent)."""
        changed: dict[str, JSONValue] = {}
        ok = True
        for spec in self.specs:
            sent = data.get(SETTINGS_PREFIX + spec.name, "")
            field = self.fields[spec.name] = self._field(
                spec, sent if spec.type is not SettingType.BOOLEAN else ("on" if sent else "")
            )
            try:
                value = _parse(spec, sent, field.required)
            except ValueError as exc:
                field.errors.append(str(exc))
                ok = False
                continue
            if spec.type is SettingType.SECRET:
                if value:
                    changed[spec.name] = value
                elif field.clear and data.get(field.clear):
                    changed[spec.name] = None
                continue
            if value is None:
                if spec.name in self.stored:
                    changed[spec.name] = None
            elif not setting_unchanged(spec, value, self.values.get(spec.name)):
                changed[spec.name] = value
        return changed if ok else None

    def add_error(self, name: str, message: str) -> None:
        if name in self.fields:
            self.fields[name].errors.append(message)
        else:
            self.errors.append(f"{name}: {message}" if name else message)


_WIDGETS: Final = {
    SettingType.SECRET: "password",
    SettingType.STRING: "text",
    SettingType.INTEGER: "number",
    SettingType.NUMBER: "number",
    SettingType.BOOLEAN: "checkbox",
    SettingType.CHOICE: "select",
    SettingType.JSON: "textarea",
}


def _parse(spec: SettingSpec, sent: str, required: bool) -> JSONValue:
    """The value a field's text stands for (None: blank), or ValueError saying why not."""
    kind = spec.type
    if kind is SettingType.BOOLEAN:
        return bool(sent)
    text = sent if kind in (SettingType.SECRET, SettingType.STRING) else sent.strip()
    if not text:
        if required:
            raise ValueError("This field is required.")
        return None
    textual = kind in (SettingType.SECRET, SettingType.STRING)
    if textual and spec.max_length is not None and len(text) > spec.max_length:
        raise ValueError(f"At most {spec.max_length} characters (it has {len(text)}).")
    if kind in (SettingType.SECRET, SettingType.STRING):
        return text
    if kind is SettingType.CHOICE:
        for choice in spec.choices or ():
            if json.dumps(choice) == text:
                return choice
        raise ValueError("Select one of the choices.")
    if kind is SettingType.JSON:
        try:
            parsed: JSONValue = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"is not valid JSON: {exc}") from None
        return parsed
    number: Any
    try:
        number = int(text) if kind is SettingType.INTEGER else float(text)
    except ValueError:
        raise ValueError(
            "Enter a whole number." if kind is SettingType.INTEGER else "Enter a number."
        ) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError("Enter a number.")
    if spec.min is not None and number < spec.min:
        raise ValueError(f"At least {spec.min}.")
    if spec.max is not None and number > spec.max:
        raise ValueError(f"At most {spec.max}.")
    result: JSONValue = number
    return result


def _text(spec: SettingSpec, value: JSONValue) -> str:
    if spec.type is SettingType.JSON:
        return json.dumps(value, indent=2)
    return value if isinstance(value, str) else json.dumps(value)
