"""The one view behind every plugin route: the Django request in, ``host.serve``, Django out."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ..events import ApiRequest, ApiResponse
from ..web import write_wsgi
from .conf import get_host
from .middleware import request_scope

__all__ = ["serve"]


@csrf_exempt  # a plugin route is an API: it decides itself how callers authenticate
def serve(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Serve a plugin route below the mount point, for the request's tenant only.

    No tenant (the request is not for a business): 404. Neutral routes get an
    ``ApiRequest`` through the ``api_request`` filter and answer an ``ApiResponse``
    through ``api_response``; a native Django view of the original system gets
    the Django request, with ``request.plugin_api``, ``request.plugin_settings``
    and ``request.plugin_context`` set, and its response is sent as it is.
    """
    scope = request_scope(request)
    if scope is None:
        return _json(404, b'{"error": "not found"}')
    context = scope
    tenant = context.tenant
    try:
        # No Content-Length is no body for Django (it reads none): no stream to set up.
        body = request.body if request.META.get("CONTENT_LENGTH") not in (None, "", "0") else b""
    except RequestDataTooBig:
        return _json(413, b'{"error": "request too large"}')
    try:
        api_request = ApiRequest(
            tenant=tenant,
            method=request.method or "GET",
            path="/" + rest,
            full_path=request.path,
            headers=request.headers,  # names lower-cased by ApiRequest
            query={name: request.GET.getlist(name) for name in request.GET} if request.GET else {},
            body=body,
            user=context.user,
        )
    except (TypeError, ValueError) as exc:
        return _json(400, json.dumps({"error": str(exc)}).encode())
    host = get_host()
    hook = host.hook
    api_request = hook.api_request(request=api_request, context=context)
    answer = host.serve(api_request, native=_native(request))
    if not isinstance(answer, ApiResponse):
        return answer if isinstance(answer, HttpResponse) else _bad_gateway()
    answer = hook.api_response(request=api_request, response=answer, context=context)
    return _django_response(answer, head=request.method == "HEAD")


def _native(request: HttpRequest) -> Callable[[Callable[..., Any], Mapping[str, str]], Any]:
    def call(view: Callable[..., Any], params: Mapping[str, str]) -> Any:
        values = get_host().native_values() or {}
        request.plugin_api = values.get("api")
        request.plugin_settings = values.get("settings")
        request.plugin_context = values.get("context")
        return view(request, **params)

    return call


def _django_response(answer: ApiResponse, *, head: bool) -> HttpResponse:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.extend((status, headers))

    try:
        body = write_wsgi(answer, start_response, head=head)
    except ValueError:  # a header or status that cannot be sent as it is
        return _bad_gateway()
    response = HttpResponse(b"".join(body), status=answer.status)
    del response.headers["Content-Type"]  # only the plugin's own
    for name, value in started[1]:
        response.headers[name] = value
    return response


def _json(status: int, body: bytes) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="application/json")


def _bad_gateway() -> HttpResponse:
    return _json(502, b'{"error": "bad gateway"}')
