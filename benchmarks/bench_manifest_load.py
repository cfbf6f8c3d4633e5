"""Question "manifest_load": what does validating a manifest cost over parsing its JSON?

SDK: ``Manifest.from_json(text)`` -- parse (refusing duplicate keys), check
every rule and build the typed, frozen manifest. Baseline: ``json.loads(text)``
on the same text, the least any loader must do. The ratio is the price of
validation.

Run: ``python benchmarks/bench_manifest_load.py --fast`` (see benchmarks/README.md).
"""

from __future__ import annotations

import json
from typing import Final

from _harness import Contender, compare
from services_ai_plugins import Manifest

#: A realistic manifest: a CRM plugin with permissions, typed settings,
#: dependencies, a plugin requirement and a vendor extension.
MANIFEST: Final[dict[str, object]] = {
    "$schema": "https://example.com/schemas/services-ai-plugin-manifest.json",
    "id": "lead-notifier",
    "name": "Lead Notifier",
    "version": "2.3.1",
    "description": "Sends a message to a Slack channel or an e-mail list when a lead is "
    "created or changes stage, with per-tenant routing and quiet hours.",
    "author": "Acme Integrations",
    "email": "plugins@acme.example.com",
    "homepage": "https://acme.example.com/plugins/lead-notifier",
    "license": "MIT",
    "entry_point": "lead_notifier/main.py",
    "plugin_class": "LeadNotifier",
    "permissions": [
        "leads.read",
        "leads.watch",
        "contacts.read",
        "companies.read",
        "users.read",
        "notifications.send",
        "http:outbound",
        "audit.write",
    ],
    "optional_permissions": ["leads.write", "tasks.create"],
    "settings": [
        {
            "name": "channel",
            "type": "choice",
            "label": "Channel",
            "description": "Where notifications go.",
            "choices": ["slack", "email", "teams"],
            "default": "slack",
            "required": True,
        },
        {
            "name": "webhook_url",
            "type": "secret",
            "label": "Webhook URL",
            "description": "The incoming-webhook address of the Slack or Teams channel.",
            "max_length": 500,
        },
        {
            "name": "recipients",
            "type": "string",
            "label": "E-mail recipients",
            "description": "Comma-separated addresses, used when the channel is e-mail.",
            "default": "sales@acme.example.com",
            "max_length": 2000,
        },
        {
            "name": "min_deal_value",
            "type": "number",
            "label": "Minimum deal value",
            "description": "Leads below this value are not announced.",
            "default": 1000.0,
            "min": 0,
            "max": 10000000,
        },
        {
            "name": "batch_minutes",
            "type": "integer",
            "label": "Batch window (minutes)",
            "description": "Group notifications over this many minutes (0: send at once).",
            "default": 5,
            "min": 0,
            "max": 1440,
        },
        {
            "name": "quiet_hours",
            "type": "boolean",
            "label": "Respect quiet hours",
            "description": "Hold notifications outside the tenant's business hours.",
            "default": True,
        },
        {
            "name": "stage_labels",
            "type": "json",
            "label": "Stage labels",
            "description": "Custom names for pipeline stages, keyed by stage id.",
            "default": {"new": "New", "qualified": "Qualified", "won": "Closed won"},
        },
    ],
    "requires_api": ">=1.0,<2",
    "requires_python": ">=3.10",
    "dependencies": [
        "httpx>=0.27,<1",
        "jinja2>=3.1",
        "tenacity>=8.2",
        'backports.zoneinfo>=0.2; python_version < "3.9"',
    ],
    "requires_plugins": {"crm-core": ">=1.4,<2", "tenant-calendar": "*"},
    "hooks": ["lead_created", "lead_stage_changed", "settings_changed"],
    "isolation": "process",
    "changelog": "Adds Microsoft Teams as a channel; batches notifications.",
    "icon": "assets/icon.png",
    "x-acme": {
        "category": "notifications",
        "tags": ["slack", "email", "teams", "leads"],
        "marketplace": {"listed": True, "price_tier": "free", "min_plan": "starter"},
    },
}

TEXT: Final = json.dumps(MANIFEST, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    # Fail early, in every process, if the manifest no longer validates: the
    # SDK side would otherwise time the raising of an error.
    Manifest.from_json(TEXT)
    compare(
        "manifest_load",
        sdk=Contender(
            "Manifest.from_json",
            "parse, validate and build the typed manifest",
            lambda: Manifest.from_json(TEXT),
        ),
        baseline=Contender("json.loads", "parse the JSON only", lambda: json.loads(TEXT)),
    )


if __name__ == "__main__":
    main()
