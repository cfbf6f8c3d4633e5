"""A plugin written for the original in-house system, unchanged.

Its manifest has no ``id`` (derived from the name: ``lead-notes``), its hooks carry the
original pluggy marker, ``register_routes`` returns ``(path, view, name)`` tuples of Django
views, and its view reads the business's leads through the ``api`` it was given, with the
original name ``get_leads``.
"""

import pluggy
from django.http import HttpResponse
from django.utils.html import escape

hookimpl = pluggy.HookimplMarker("services_ai")


class LeadNotesPlugin:
    @hookimpl
    def register_routes(self, plugin_id, api):
        def my_view(request):
            leads = api.get_leads()
            items = "".join(f"<li>{escape(lead.name)}</li>" for lead in leads)
            return HttpResponse(
                f"<h1>Leads of {escape(request.plugin_context.tenant)}</h1><ul>{items}</ul>"
            )

        return [("my-route/", my_view, "my_route_name")]

    @hookimpl
    def lead_created(self, lead, context, api):
        api.send_notification(f"New lead: {lead.name}")

    @hookimpl
    def inject_head(self, context, api):
        return '<meta name="lead-notes" content="on">'
