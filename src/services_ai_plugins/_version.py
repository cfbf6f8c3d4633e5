"""Version numbers of the SDK and of the host API it offers to plugins."""

from __future__ import annotations

from typing import Final

#: The version of the ``services-ai-plugins`` distribution.
__version__ = "0.1.0"

#: The version of the host API that plugins are written against.  A plugin's
#: ``requires_api`` specifier is matched against it.  It moves independently of
#: the SDK version: a release that adds hooks or API methods bumps the minor
#: number, one that removes or changes them bumps the major number.
HOST_API_VERSION: Final = "1.0"
