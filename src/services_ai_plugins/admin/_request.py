"""The admin's request, independent of the framework, and its form (URL-encoded or multipart)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

import attrs
import python_multipart

from ..events import ApiRequest

__all__ = ["AdminRequest", "Form", "Upload", "parse_form"]


@attrs.frozen(kw_only=True)
class Upload:
    """A file sent in a multipart form."""

    #: The file's name as the browser sent it (``""`` when none).
    filename: str
    #: Its bytes.
    data: bytes


@attrs.frozen(kw_only=True)
class Form:
    """A POST's fields (the first value of each name) and its files."""

    fields: Mapping[str, str] = attrs.field(factory=dict)
    files: Mapping[str, Upload] = attrs.field(factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)


@attrs.frozen(kw_only=True)
class AdminRequest:
    """What the admin's ``authenticate`` callable sees of a request.

    Not an :class:`~services_ai_plugins.events.ApiRequest`: the admin serves no tenant,
    and an authentication reads cookies. ``path`` is below the admin's mount point,
    ``root`` is the mount point (``""`` at the server's root: ``SCRIPT_NAME`` or ASGI's
    ``root_path``). Header names are lower-case.
    """

    method: str
    path: str
    root: str
    headers: Mapping[str, str] = attrs.field(factory=dict)
    cookies: Mapping[str, str] = attrs.field(factory=dict)
    query: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    #: The raw body (a POST's form, at most the upload limit and a margin).
    body: bytes = attrs.field(default=b"", repr=False)
    #: The framework's own request or the WSGI environ / ASGI scope, for ``authenticate``.
    native: object = attrs.field(default=None, repr=False, eq=False)

    @classmethod
    def of(cls, api: ApiRequest, *, native: object) -> AdminRequest:
        """From the :class:`ApiRequest` that :mod:`services_ai_plugins.web` read."""
        full, below = api.full_path, api.path
        if full.endswith(below):
            root = full[: len(full) - len(below)]
        else:  # the mount itself, without its slash (SCRIPT_NAME "/admin", PATH_INFO "")
            root = full if below == "/" else ""
        return cls(
            method=api.method,
            path=api.path,
            root=root.rstrip("/"),
            headers=dict(api.headers),
            cookies=_cookies(api.headers.get("cookie", "")),
            query=dict(api.query),
            body=api.body,
            native=native,
        )

    def query_value(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def parse_form(request: AdminRequest) -> Form:
    """The POST's form: ``application/x-www-form-urlencoded`` or ``multipart/form-data``.

    :raises ValueError: for another content type, or a body that is not one of them.
    """
    content_type = request.headers.get("content-type", "")
    kind, options = python_multipart.multipart.parse_options_header(content_type)
    if kind == b"application/x-www-form-urlencoded" or (not kind and not request.body):
        try:
            pairs = urllib.parse.parse_qsl(
                request.body.decode("utf-8"), keep_blank_values=True, errors="strict"
            )
        except UnicodeDecodeError:
            raise ValueError("the form is not UTF-8") from None
        fields: dict[str, str] = {}
        for name, value in pairs:
            fields.setdefault(name, value)
        return Form(fields=fields)
    if kind == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ValueError("the multipart form has no boundary")
        return _multipart(request.body, boundary)
    raise ValueError(f"a form cannot be {kind.decode('latin-1')!r}")


class _Part:
    def __init__(self) -> None:
        self.headers: dict[str, bytes] = {}
        self.data = bytearray()
        self.field = b""
        self.value = b""


def _multipart(body: bytes, boundary: bytes) -> Form:
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    parts = [_Part()]

    def on_part_begin() -> None:
        parts[0] = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        parts[0].field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        parts[0].value += data[start:end]

    def on_header_end() -> None:
        part = parts[0]
        part.headers[part.field.decode("latin-1").lower()] = part.value
        part.field = part.value = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[0].data += data[start:end]

    def on_part_end() -> None:
        part = parts[0]
        _, options = python_multipart.multipart.parse_options_header(
            part.headers.get("content-disposition", b"")
        )
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            return
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", "replace")
            files.setdefault(name, Upload(filename=filename, data=bytes(part.data)))
        else:
            try:
                fields.setdefault(name, bytes(part.data).decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"the form's field {name!r} is not UTF-8") from None

    parser = python_multipart.MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except python_multipart.exceptions.FormParserError as exc:
        raise ValueError(f"the multipart form cannot be read: {exc}") from None
    return Form(fields=fields, files=files)
