"""The pluggy markers that tie plugins to services-ai-plugins hooks."""

from __future__ import annotations

from typing import Final

import pluggy

__all__ = ["PROJECT_NAME", "hookimpl"]

#: The pluggy project name shared by hook specifications and implementations.
PROJECT_NAME: Final = "services_ai"

#: Marks a plugin method (or module function) as a hook implementation.
#:
#: Use it bare or with pluggy's options (``tryfirst``, ``trylast``, ``wrapper``,
#: ``optionalhook``, ``specname``)::
#:
#:     class LeadNotifier:
#:         @hookimpl
#:         def lead_created(self, lead, context, api): ...
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)
