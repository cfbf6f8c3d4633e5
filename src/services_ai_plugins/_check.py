"""The core's one door to the check engine, which lives in the test kit.

The check engine (:mod:`services_ai_plugins_testing.check`) needs the test
kit's dependencies (hypothesis: the SDK's ``testing`` extra), so the core
never imports it when it is imported itself. :func:`check_plugin` (a name at
the top of the SDK) and the ``check`` command import it through
:func:`check_engine` when a check runs; without the extra, that raises
:class:`~services_ai_plugins.errors.ExtraNotInstalled` naming what to install.
``CheckProblem``, ``CheckReport`` and ``HookSummary`` are read from the engine on first use.

This is the only module of the core that imports the test kit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from .errors import ExtraNotInstalled

if TYPE_CHECKING:
    from services_ai_plugins_testing.check import CheckProblem, CheckReport, HookSummary

    from ._json import JSONValue

__all__ = [
    "DEFAULT_EXAMPLES",
    "DEFAULT_SLOW_MS",
    "DEFAULT_TENANT",
    "CheckProblem",
    "CheckReport",
    "HookSummary",
    "check_engine",
    "check_plugin",
]

#: The tenant a check enables the plugin for, unless told otherwise.
DEFAULT_TENANT: Final = "check"
#: A call slower than this many milliseconds is reported as slow.
DEFAULT_SLOW_MS: Final = 100.0
#: How many generated argument sets each hook gets, besides the documented example.
DEFAULT_EXAMPLES: Final = 10

#: The modules of the ``testing`` extra that the engine imports.
_EXTRA_MODULES: Final = frozenset({"hypothesis"})


def check_engine() -> ModuleType:
    """The check engine's module, imported on first use.

    :raises ExtraNotInstalled: when a package of the ``testing`` extra that the
        engine needs (hypothesis) is not installed.
    """
    try:
        # The core's one edge into its test kit, made only here and only when a check runs.
        from services_ai_plugins_testing import check  # noqa: PLC0415
    except ImportError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in _EXTRA_MODULES:
            raise  # not a missing extra: a bug, shown as it is
        raise ExtraNotInstalled(feature="check", extra="testing", module=missing) from error
    return check


def check_plugin(
    path: str | os.PathLike[str],
    *,
    tenant: str = DEFAULT_TENANT,
    slow_ms: float = DEFAULT_SLOW_MS,
    examples: int = DEFAULT_EXAMPLES,
    settings: Mapping[str, JSONValue] | None = None,
) -> CheckReport:
    """Validate a plugin folder or ZIP, run every hook it implements, and report its problems.

    The check itself is :func:`services_ai_plugins_testing.check.check_plugin`
    (see there for its steps and what it reports); it needs the SDK's
    ``testing`` extra: ``pip install 'services-ai-plugins[testing]'``.

    :raises ExtraNotInstalled: without the ``testing`` extra (hypothesis).
    :raises ValueError: for an empty ``tenant``, a negative ``slow_ms`` or ``examples``.
    :raises SettingsError: when ``settings`` do not fit the plugin's settings schema.

    Example::

        report = check_plugin("plugins/welcome-mailer", tenant="acme")
        report.ok  # False
        [str(p) for p in report.errors]
        # ["error: permission-denied: lead_created: called send_email() without the
        #   'send_email' permission: declare it in the manifest's permissions (in 11 of 11 calls)"]
    """
    report: CheckReport = check_engine().check_plugin(
        path, tenant=tenant, slow_ms=slow_ms, examples=examples, settings=settings
    )
    return report


def __getattr__(name: str) -> Any:
    if name in ("CheckProblem", "CheckReport", "HookSummary"):
        return getattr(check_engine(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
