"""``python manage.py crm_demo``: the example CRM set up with data, staff and both plugins.

Creates the database (migrate), two businesses with a member and a few leads each, a staff
superuser ``admin`` (password ``admin``), and installs the two bundled plugins as uploaded
archives: the original system's ``lead-notes`` (approved, enabled for Acme) and the
sandboxed ``hello-widget`` (approved, enabled for both). Then ``manage.py runserver`` and
open http://acme.localhost:8000/ (and http://localhost:8000/admin/). Running it again
changes nothing that is already there.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from business.models import Business, Lead, Member
from services_ai_plugins import pack_plugin
from services_ai_plugins.django.conf import get_host

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"
SEED = {
    "acme": ("Acme", ["Ada Lovelace", "Alan Turing"]),
    "globex": ("Globex", ["Grace Hopper"]),
}
ENABLED = {"lead_notes": ("acme",), "hello_widget": ("acme", "globex")}


class Command(BaseCommand):
    help = "Set the example CRM up: database, businesses, staff, leads and the two plugins."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0)
        accounts = get_user_model()
        if not accounts.objects.filter(username="admin").exists():
            accounts.objects.create_superuser("admin", "admin@example.com", "admin")
        for slug, (name, leads) in SEED.items():
            business, created = Business.objects.get_or_create(slug=slug, name=name)
            if not created:
                continue
            member = accounts.objects.create_user(f"{slug}-sales", f"sales@{slug}.example", "pw")
            Member.objects.create(user=member, business=business)
            for lead in leads:
                Lead.objects.create(business=business, name=lead)
        host = get_host()
        with tempfile.TemporaryDirectory() as scratch:
            for folder, tenants in ENABLED.items():
                archive = pack_plugin(PLUGINS / folder, Path(scratch) / f"{folder}.zip")
                plugin_id = archive.manifest.id
                if host.registry.tenant(plugin_id, tenants[0]) is not None:
                    continue
                host.install(archive.path, actor="crm_demo", reinstall=True)
                host.registry.approve(plugin_id, actor="crm_demo")
                for tenant in tenants:
                    host.registry.enable(plugin_id, tenant, actor="crm_demo")
                self.stdout.write(f"installed {plugin_id}, enabled for {', '.join(tenants)}")
        self.stdout.write(
            "ready: python manage.py runserver, then open http://acme.localhost:8000/ and "
            "http://localhost:8000/admin/ (admin / admin)"
        )
