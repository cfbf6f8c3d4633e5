"""Shared helper of the benchmarks: time an SDK call against a baseline with pyperf.

Each benchmark script answers one question ("what does X cost over plain Y?")
by timing both callables with one :class:`pyperf.Runner` in the same run, then
reporting the ratio ``sdk / baseline``. A ratio survives noisy 2-core machines
far better than an absolute time, which is why the project never asserts on
timings in tests.

pyperf re-executes the calling script in worker processes (``--worker``); the
workers time one benchmark each and send the values back through a pipe. Only
the main process prints the summary and records it in ``results.json``.

The results file is ``benchmarks/results.json`` unless the ``--results`` option
or the ``SERVICES_AI_PLUGINS_BENCH_RESULTS`` environment variable names another.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import pyperf  # type: ignore[import-untyped]  # pyperf ships neither type hints nor stubs

import services_ai_plugins
from services_ai_plugins import PluginHost, pack_plugin
from services_ai_plugins_testing.fakes import FakeHostServices

__all__ = ["RESULTS_ENV", "Contender", "Outcome", "QuietServices", "compare", "install_plugin"]

#: The environment variable that overrides where results are recorded.
RESULTS_ENV: Final = "SERVICES_AI_PLUGINS_BENCH_RESULTS"
_DEFAULT_RESULTS: Final = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Contender:
    """One side of a comparison: a callable taking no arguments, and what it is."""

    #: A short name, recorded in ``results.json`` (such as ``"json.loads"``).
    name: str
    #: What the call does, in a few words, for the printed summary.
    description: str
    #: The call to time; its result is ignored.
    func: Callable[[], object] | None = None
    #: Or a whole command to time, each run in a fresh process.
    command: Sequence[str] | None = None


@dataclass(frozen=True)
class Timing:
    """The mean and standard deviation of one contender, in seconds."""

    name: str
    mean_s: float
    stdev_s: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "mean_s": self.mean_s, "stdev_s": self.stdev_s}


@dataclass(frozen=True)
class Outcome:
    """What :func:`compare` measured, in the main process."""

    question: str
    sdk: Timing
    baseline: Timing
    #: ``sdk.mean_s / baseline.mean_s``: how many times slower (>1) the SDK call is.
    ratio: float
    #: Where the record was written.
    results: Path


def compare(question: str, sdk: Contender, baseline: Contender) -> Outcome | None:
    """Time ``sdk`` and ``baseline`` in one pyperf run and record the ratio.

    Call it once per script, at the end of the ``__main__`` block: pyperf
    allows one runner per process and parses the command line (``--fast``,
    ``--quiet``, ``--results FILE``, ...) itself.

    :returns: the outcome in the main process; None in pyperf's worker
        processes, and when pyperf measured nothing (``--compare-to``).
    """
    runner = pyperf.Runner()
    runner.argparser.add_argument(
        "--results",
        metavar="FILE",
        default=None,
        help=f"merge the outcome into this JSON file (default: ${RESULTS_ENV}, "
        f"else {_DEFAULT_RESULTS})",
    )
    sdk_bench = _bench(runner, f"{question}: sdk {sdk.name}", sdk)
    baseline_bench = _bench(runner, f"{question}: baseline {baseline.name}", baseline)
    args = runner.parse_args()
    # In a worker, bench_func returns the one benchmark that worker ran (and
    # None for the others): nothing there is a complete comparison.
    if args.worker or sdk_bench is None or baseline_bench is None:
        return None
    sdk_timing = _timing(sdk.name, sdk_bench)
    baseline_timing = _timing(baseline.name, baseline_bench)
    ratio = sdk_timing.mean_s / baseline_timing.mean_s
    results = _results_path(args.results)
    _record(
        results,
        question,
        {
            "sdk": sdk_timing.to_json(),
            "baseline": baseline_timing.to_json(),
            "ratio": ratio,
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "sdk_version": services_ai_plugins.__version__,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    outcome = Outcome(question, sdk_timing, baseline_timing, ratio, results)
    _report(outcome, sdk, baseline, sdk_bench)
    return outcome


def _bench(runner: Any, label: str, contender: Contender) -> Any:
    if contender.command is not None:
        return runner.bench_command(label, list(contender.command))
    if contender.func is None:
        raise ValueError(f"{contender.name}: give a func or a command")
    return runner.bench_func(label, contender.func)


def _timing(name: str, bench: Any) -> Timing:
    # --debug-single-value leaves one value, whose deviation is undefined: call it 0.
    stdev = float(bench.stdev()) if bench.get_nvalue() > 1 else 0.0
    return Timing(name, float(bench.mean()), stdev)


def _results_path(option: str | None) -> Path:
    if option:
        return Path(option)
    from_env = os.environ.get(RESULTS_ENV)
    return Path(from_env) if from_env else _DEFAULT_RESULTS


def _report(outcome: Outcome, sdk: Contender, baseline: Contender, bench: Any) -> None:
    def show(timing: Timing) -> str:
        return f"{bench.format_value(timing.mean_s)} +- {bench.format_value(timing.stdev_s)}"

    print()
    print(f"[{outcome.question}]")
    print(f"  sdk       {sdk.name}: {show(outcome.sdk)}  ({sdk.description})")
    print(f"  baseline  {baseline.name}: {show(outcome.baseline)}  ({baseline.description})")
    print(f"  ratio sdk/baseline = {outcome.ratio:.2f}x  -> recorded in {outcome.results}")


def _record(path: Path, question: str, record: dict[str, Any]) -> None:
    """Merge ``record`` under ``question`` into the JSON file, atomically.

    The other questions' entries are kept. A file that is not a JSON object is
    refused rather than overwritten, so that no earlier figures are lost.
    """
    document: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"cannot read the results file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SystemExit(f"the results file {path} does not hold a JSON object")
        document = loaded
    document[question] = record
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class QuietServices(FakeHostServices):
    """The testing package's fake host services without their call log, which would grow with
    every timed call."""

    def _record(self, method: str, tenant: str, *args: Any) -> None:
        return None


def install_plugin(
    host: PluginHost,
    root: Path,
    plugin_id: str,
    code: str,
    *,
    permissions: Sequence[str] = ("read_leads",),
    tenants: Sequence[str] = ("acme",),
) -> None:
    """Write a plugin folder (``code`` as its ``main.py``, class ``Plugin``) under ``root/src``,
    pack it, install it into ``host``, approve it and enable it for ``tenants``."""
    folder = root / "src" / plugin_id
    folder.mkdir(parents=True)
    manifest = {
        "id": plugin_id,
        "name": plugin_id,
        "version": "1.0.0",
        "entry_point": "main.py",
        "plugin_class": "Plugin",
        "permissions": list(permissions),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(code)
    host.install(pack_plugin(folder, root / f"{plugin_id}.zip").path, actor="bench")
    host.registry.approve(plugin_id, actor="bench")
    for tenant in tenants:
        host.registry.enable(plugin_id, tenant, actor="bench")
