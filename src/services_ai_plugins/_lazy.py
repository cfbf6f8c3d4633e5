"""Names a public face imports on first use: its module ``__getattr__`` and ``__dir__``.

Each face (the package itself, ``storage``, ``sandbox``, ``tooling``, ``types``)
keeps a table of where each of its names lives and hands it here, so importing a
face stays cheap and the lookup is written once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    module_name: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the face ``module_name``.

    ``table`` maps each name to the module it is imported from, relative to the
    package (``"._registry"``). A name is imported once, then kept on the face.
    """

    def __getattr__(name: str) -> Any:
        where = table.get(name)
        if where is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where, "services_ai_plugins"), name)
        setattr(sys.modules[module_name], name, value)
        return value

    def __dir__() -> list[str]:
        face = sys.modules[module_name]
        return sorted({*vars(face), *getattr(face, "__all__", ())})

    return __getattr__, __dir__
