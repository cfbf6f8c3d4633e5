"""``services-ai-plugins check``: the command line of the test kit's check engine.

Its options and output live here; the check itself is
:mod:`services_ai_plugins_testing.check`, imported only when the command runs
(through :func:`services_ai_plugins._check.check_engine`), so the command line
starts without the test kit and its dependencies, and says which extra to
install when they are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._check import DEFAULT_EXAMPLES, DEFAULT_SLOW_MS, DEFAULT_TENANT, check_engine
from .._logs import plugin_output, sdk_log_handler
from ._common import duration

if TYPE_CHECKING:
    from .._check import CheckReport

__all__ = ["add_check_command"]


def _tenant_option(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds >= 0 (got {text!r})")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (got {text!r})")
    return value


def add_check_command(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``check`` to the CLI's sub-command parser."""
    check = commands.add_parser(
        "check",
        parents=[common],
        help="run a plugin's hooks in a throwaway host and report its problems",
        description=(
            "Validate a plugin folder or ZIP, install it into a throwaway plugin host, call "
            "every hook it implements with example (and generated) payloads, and report "
            "crashes, missing or unused permissions, hooks it can never receive and slow hooks."
        ),
        epilog="exit codes: 0 no errors (warnings allowed), 1 errors found or the plugin "
        "cannot be checked, 2 usage error",
    )
    check.add_argument("path", help="a plugin folder or .zip")
    check.add_argument(
        "--tenant",
        type=_tenant_option,
        default=DEFAULT_TENANT,
        help=f"the tenant to enable it for and call its hooks for (default {DEFAULT_TENANT})",
    )
    check.add_argument(
        "--slow-ms",
        type=_milliseconds,
        default=DEFAULT_SLOW_MS,
        metavar="N",
        help=f"report calls slower than N milliseconds (default {DEFAULT_SLOW_MS:g})",
    )
    check.add_argument(
        "--examples",
        type=_count,
        default=DEFAULT_EXAMPLES,
        metavar="N",
        help="generated argument sets per hook, besides the documented example, when "
        f"hypothesis is installed (default {DEFAULT_EXAMPLES}; 0: the example only)",
    )
    check.set_defaults(handler=_command)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep the SDK's log records (the plugin's failures, again) off the command's output.

    The report already holds them; without a handler Python would print them
    with tracebacks on standard error.
    """
    with sdk_log_handler(logging.NullHandler()), plugin_output(sys.stderr):
        yield


def _command(args: argparse.Namespace) -> tuple[dict[str, Any], list[str], int]:
    # A plugin's print() must not spoil the command's output (or its JSON).
    with _quiet_logs(), contextlib.redirect_stdout(sys.stderr):
        # The engine is the test kit's: imported only now, and without the testing extra
        # this raises ExtraNotInstalled, a refusal that names the extra (exit 1).
        report: CheckReport = check_engine().check_plugin(
            args.path, tenant=args.tenant, slow_ms=args.slow_ms, examples=args.examples
        )
    return report.to_dict(), _report_lines(report), 0 if report.ok else 1


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _report_lines(report: CheckReport) -> list[str]:
    """For people: a line per problem, the notes, then what ran and the verdict."""
    lines = [
        f"{p.severity:<7}  {p.kind:<17}  "
        + (f"{p.hook}: " if p.hook else f"{p.path}: " if p.path else "")
        + p.message
        for p in report.problems
    ]
    lines += [f"note: {note}" for note in report.notes]
    name = f"{report.plugin_id} {report.version}" if report.plugin_id else report.source
    if not report.loaded:
        lines.append(f"checked {name}: its hooks did not run (see above)")
    else:
        calls = sum(h.calls for h in report.hooks)
        how = (
            f"the documented example and up to {report.generated} generated argument sets each"
            if report.generated
            else "the documented examples"
        )
        lines.append(
            f"checked {name} for tenant {report.tenant}: {_plural(len(report.hooks), 'hook')}, "
            f"{_plural(calls, 'call')} ({how})"
        )
        width = max((len(h.hook) for h in report.hooks), default=0)
        for hook in report.hooks:
            never = "" if hook.receivable else "  (never called: see above)"
            lines.append(
                f"  {hook.hook:<{width}}  {_plural(hook.calls, 'call'):>9}  "
                f"{hook.failed:>4} failed  max {duration(hook.max_duration):>9}{never}"
            )
    verdict = "ok" if report.ok else "failed"
    errors, warnings = len(report.errors), len(report.warnings)
    lines.append(f"{verdict}: {_plural(errors, 'error')}, {_plural(warnings, 'warning')}")
    return lines
