"""A process of its own that commits changes through DjangoStorage, racing another one.

Started by ``test_django_storage.py`` (``multiprocessing``, spawn): it configures Django
with the test database it is given, then, round after round, waits at a barrier shared
with the other racer and commits its change for that round. Holds no tests.
"""

from __future__ import annotations

from typing import Any


def race(
    *,
    databases: dict[str, dict[str, Any]],
    alias: str,
    changes: list[Any],
    barrier: Any,
    results: Any,
    name: str,
) -> None:
    """Commit ``changes`` one a round, each right after the barrier; put what happened on
    ``results``: ``(name, round, "won", generation)`` or ``(name, round, "conflict",
    (expected, actual))``, or ``(name, round, "error", text)``."""
    import django
    from django.conf import settings

    settings.configure(
        DATABASES=databases,
        INSTALLED_APPS=["services_ai_plugins.django"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()

    from services_ai_plugins.django.storage import DjangoStorage
    from services_ai_plugins.errors import ConflictError

    storage = DjangoStorage(alias)
    for number, change in enumerate(changes):
        try:
            barrier.wait(120)
            results.put((name, number, "won", storage.commit(change)))
        except ConflictError as exc:
            results.put((name, number, "conflict", (exc.expected, exc.actual)))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            results.put((name, number, "error", f"{type(exc).__name__}: {exc}"))
    storage.close()
