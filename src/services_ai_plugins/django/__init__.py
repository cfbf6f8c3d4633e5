"""services-ai-plugins for Django: the registry in the project's database, plugin routes,
the request context, template tags, ORM host services, admin pages and ``manage.py plugins``.

Add ``"services_ai_plugins.django"`` to ``INSTALLED_APPS`` (and its middleware and URLs; see
``docs/django.md``). Everything here needs Django (the ``django`` extra); this package's
own import stays free of Django models, so a settings file may name it before apps load.
"""

from __future__ import annotations
