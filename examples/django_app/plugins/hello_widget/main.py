"""A framework-neutral plugin: one route and one hook, the same on Django, Flask and Starlette."""

from services_ai_plugins import hookimpl
from services_ai_plugins.events import ApiResponse, Route, Widget


def hello(request, api, settings):
    leads = api.list_leads(limit=1000)
    return ApiResponse.json(
        request.tenant,
        {"greeting": settings["greeting"], "tenant": request.tenant, "leads": len(leads)},
    )


@hookimpl
def register_routes(plugin_id, api):
    return [Route(path="/hello", handler=hello, name="hello")]


@hookimpl
def dashboard_widget(context, api, settings):
    count = len(api.list_leads(limit=1000))
    return Widget(
        tenant=context.tenant, title="Hello", html=f"<p>{settings['greeting']}: {count} leads</p>"
    )
