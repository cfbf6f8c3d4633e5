"""What a plugin needs before it can run: the host API, Python, distributions, other plugins.

Two kinds of check, both reporting every problem at once, each located by the
manifest field it comes from (:class:`~services_ai_plugins.Problem`):

* :func:`check_environment` checks one manifest against the running host:
  ``requires_api``, ``requires_python`` and the PEP 508 ``dependencies``.
  :func:`require_environment` runs that check and refuses the plugin when it
  fails: it is the one check every install path runs (the command line,
  :meth:`PluginHost.install`, :meth:`PluginHost.install_object`, discovery),
  and the host runs it again before loading a plugin.
* :func:`check_plugins` checks the ``requires_plugins`` of a set of manifests
  against each other: missing, unapproved and wrong-version plugins, and cycles,
  naming the chain of plugins that leads to each problem.

:func:`load_order`, :func:`enable_order` and :func:`dependants` walk the same
plugin graph for the registry.
"""

from __future__ import annotations

import enum
import graphlib
import heapq
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, TypeAlias

import attrs
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ._manifest import Manifest
from ._storage._protocol import PluginStatus
from ._version import HOST_API_VERSION
from .errors import PluginNotFound, Problem, RequirementsError

__all__ = [
    "RequirementsError",
    "check_environment",
    "check_plugins",
    "dependants",
    "enable_order",
    "load_order",
    "require_environment",
]

#: Finds the installed version of a distribution by its normalised name (None: not installed).
_Lookup: TypeAlias = Callable[[str], str | None]

#: Plugin ids that may follow a ``.`` in a problem path; others are quoted.
_DOTTED_KEY: Final = re.compile(r"^[A-Za-z0-9_-]+$")


# -- the environment ----------------------------------------------------------------------------


def check_environment(
    manifest: Manifest,
    *,
    host_api: str | Version = HOST_API_VERSION,
    python_version: str | None = None,
    distributions: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Check a manifest's ``requires_api``, ``requires_python`` and ``dependencies``.

    Returns every problem found (an empty list when all is met):

    * ``requires_api`` is matched against ``host_api``, ``requires_python``
      against ``python_version`` (default: the running interpreter). A
      pre-release version found satisfies a specifier it falls in.
    * Each of ``dependencies`` (PEP 508) whose environment marker holds is
      looked up among the installed distributions (or in ``distributions``, a
      mapping of distribution name to version, when given), names compared
      after PEP 503 normalisation. A requirement whose marker is false is
      skipped. Markers see the running interpreter, except that
      ``python_version`` and ``python_full_version`` follow ``python_version``
      when it is given.
    * For a requirement with extras (``pkg[fast]>=2``) only the base
      distribution's presence and version are checked, not the extras'
      own requirements.

    A missing distribution and one of the wrong version give different
    messages; paths are ``requires_api``, ``requires_python`` and
    ``dependencies[i]`` (the index in the manifest).

    :raises packaging.version.InvalidVersion: when ``host_api`` or
        ``python_version`` is not a PEP 440 version.

    Example::

        >>> m = Manifest.from_dict(
        ...     {"name": "Lead Scorer", "version": "1.0", "requires_api": ">=2"}
        ... )
        >>> [str(p) for p in check_environment(m, host_api="1.4", distributions={})]
        ['requires_api: requires host API >=2, but the host offers API 1.4']
    """
    problems: list[Problem] = []
    api = host_api if isinstance(host_api, Version) else Version(host_api)
    if manifest.requires_api is not None and not _satisfies(manifest.requires_api, api):
        problems.append(
            Problem(
                "requires_api",
                f"requires host API {manifest.requires_api}, but the host offers API {api}",
            )
        )
    python = Version(python_version if python_version is not None else _running_python())
    if manifest.requires_python is not None and not _satisfies(manifest.requires_python, python):
        problems.append(
            Problem(
                "requires_python",
                f"requires Python {manifest.requires_python}, but Python {python} is running",
            )
        )
    environment = (
        None
        if python_version is None
        else {
            "python_version": f"{python.major}.{python.minor}",
            "python_full_version": str(python),
        }
    )
    installed = _installed_version if distributions is None else _lookup(distributions)
    for index, requirement in enumerate(manifest.dependencies):
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        message = _check_distribution(requirement.name, requirement.specifier, installed)
        if message is not None:
            problems.append(Problem(f"dependencies[{index}]", f"requires {requirement}: {message}"))
    return problems


def require_environment(manifest: Manifest) -> None:
    """Refuse a plugin whose host API, Python or distribution requirements are not met here.

    The check of every install path and of every load, against the running
    host: :func:`check_environment` with its defaults.

    :raises RequirementsError: naming the plugin and every unmet requirement.
    """
    problems = check_environment(manifest)
    if problems:
        raise RequirementsError(manifest.id, problems)


def _satisfies(specifier: SpecifierSet, version: Version) -> bool:
    # The version is the one found, not one to choose: a pre-release in range is fine.
    return specifier.contains(version, prereleases=True)


def _running_python() -> str:
    major, minor, micro, level, serial = sys.version_info
    tag = {"alpha": "a", "beta": "b", "candidate": "rc"}.get(level)
    return f"{major}.{minor}.{micro}" + (f"{tag}{serial}" if tag else "")


def _installed_version(name: str) -> str | None:
    # Imported on first use: reading distribution metadata is costly, and most
    # callers of this module (the registry) never need it.
    import importlib_metadata  # noqa: PLC0415

    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def _lookup(distributions: Mapping[str, str]) -> _Lookup:
    normalised = {canonicalize_name(name): version for name, version in distributions.items()}

    def lookup(name: str) -> str | None:
        return normalised.get(canonicalize_name(name))

    return lookup


def _check_distribution(name: str, specifier: SpecifierSet, installed: _Lookup) -> str | None:
    found = installed(canonicalize_name(name))
    if found is None:
        return f"distribution {name!r} is not installed"
    try:
        version = Version(found)
    except InvalidVersion:
        return f"the installed {name!r} has version {found!r}, which is not a PEP 440 version"
    if not _satisfies(specifier, version):
        return f"version {version} of {name!r} is installed"
    return None


# -- the plugin graph ---------------------------------------------------------------------------


class _Kind(enum.Enum):
    MISSING = "missing"
    UNAPPROVED = "unapproved"
    VERSION = "version"
    CYCLE = "cycle"


@attrs.frozen
class _Finding:
    kind: _Kind
    #: The plugins from the one checked to the one at fault (for a cycle, back round to it).
    chain: tuple[str, ...]
    message: str

    def problem(self) -> Problem:
        # The path is the field of the checked plugin through which the problem arises.
        return Problem(_requirement_path(self.chain[1]), self.message)


def _requirement_path(plugin_id: str) -> str:
    if _DOTTED_KEY.match(plugin_id):
        return f"requires_plugins.{plugin_id}"
    return f"requires_plugins[{plugin_id!r}]"


def _arrow(chain: Iterable[str]) -> str:
    return " -> ".join(chain)


def _edge_finding(
    chain: tuple[str, ...],
    specifier: SpecifierSet,
    manifests: Mapping[str, Manifest],
    statuses: Mapping[str, PluginStatus] | None,
) -> _Finding | None:
    requirer, required = chain[-2], chain[-1]
    wanted = f"{required} {specifier}" if str(specifier) else f"{required} (any version)"
    if required not in manifests:
        return _Finding(
            _Kind.MISSING,
            chain,
            f"{_arrow(chain)}: {requirer} requires plugin {wanted}, which is not installed",
        )
    if statuses is not None:
        status = statuses.get(required)
        if status is not PluginStatus.APPROVED:
            found = "has no status" if status is None else f"is {status.value}, not approved"
            return _Finding(
                _Kind.UNAPPROVED,
                chain,
                f"{_arrow(chain)}: {requirer} requires plugin {wanted}, which {found}",
            )
    version = manifests[required].version
    if not _satisfies(specifier, version):
        return _Finding(
            _Kind.VERSION,
            chain,
            f"{_arrow(chain)}: {requirer} requires plugin {wanted}, "
            f"but {required} is version {version}",
        )
    return None


def _walk(
    root: str,
    manifests: Mapping[str, Manifest],
    statuses: Mapping[str, PluginStatus] | None = None,
) -> tuple[list[_Finding], set[str]]:
    """Depth-first through ``root``'s requirements: every finding, and the plugins reached.

    Each plugin is expanded once, so each problem is reported once, with the
    first chain (in id order) that reaches it. A requirement back onto the
    current chain closes a cycle; one through ``root`` is always found, since
    everything reachable is explored while ``root`` is on the chain.
    """
    findings: list[_Finding] = []
    chain = [root]
    on_chain = {root}
    reached = {root}
    pending = [_requirements(manifests[root])]
    while pending:
        step = next(pending[-1], None)
        if step is None:
            pending.pop()
            on_chain.discard(chain.pop())
            continue
        required, specifier = step
        path = (*chain, required)
        finding = _edge_finding(path, specifier, manifests, statuses)
        if finding is not None:
            findings.append(finding)
        if required in on_chain:
            findings.append(_Finding(_Kind.CYCLE, path, f"circular requirement: {_arrow(path)}"))
        elif required in manifests and required not in reached:
            reached.add(required)
            chain.append(required)
            on_chain.add(required)
            pending.append(_requirements(manifests[required]))
    return findings, reached


def _requirements(manifest: Manifest) -> Iterator[tuple[str, SpecifierSet]]:
    return iter(sorted(manifest.requires_plugins.items(), key=lambda item: item[0]))


def check_plugins(
    manifests: Mapping[str, Manifest],
    statuses: Mapping[str, PluginStatus] | None = None,
) -> dict[str, list[Problem]]:
    """Check every plugin's ``requires_plugins`` against the others, transitively.

    ``manifests`` maps plugin id to manifest. For each plugin, every plugin it
    requires, directly or through others, must be in ``manifests``, be
    approved (when ``statuses`` is given; a plugin without a status is not
    approved), and have a version its requirer's specifier accepts
    (pre-releases included). Cycles are reported for each member with the
    whole cycle from it (``b -> c -> a -> b``), and for each plugin that
    reaches one.

    Returns the plugins with problems (in id order), each with its problems.
    A problem's path is the plugin's own requirement through which it arises
    (``requires_plugins.crm-sync``), and its message starts with the chain
    (``lead-scorer -> crm-sync -> mailer: crm-sync requires plugin mailer >=2,
    but mailer is version 1.0``).

    Example::

        >>> scorer = Manifest.from_dict(
        ...     {"name": "Lead Scorer", "version": "1.0", "requires_plugins": {"crm-sync": ">=2"}}
        ... )
        >>> check_plugins({"lead-scorer": scorer})
        {'lead-scorer': [Problem(path='requires_plugins.crm-sync', message='lead-scorer -> crm-sync: lead-scorer requires plugin crm-sync >=2, which is not installed')]}
    """  # noqa: E501 - a doctest's output is one line
    report: dict[str, list[Problem]] = {}
    for plugin_id in sorted(manifests):
        findings, _ = _walk(plugin_id, manifests, statuses)
        if findings:
            report[plugin_id] = [finding.problem() for finding in findings]
    return report


def _graph(manifests: Mapping[str, Manifest], ids: Iterable[str]) -> dict[str, set[str]]:
    # Requirements that are not in ``manifests`` are left out: check_plugins reports them.
    return {
        plugin_id: {r for r in manifests[plugin_id].requires_plugins if r in manifests}
        for plugin_id in ids
    }


def _cycle_error(manifests: Mapping[str, Manifest], ids: Iterable[str]) -> RequirementsError:
    members: dict[str, Problem] = {}
    for plugin_id in sorted(ids):
        findings, _ = _walk(plugin_id, manifests)
        for finding in findings:
            if finding.kind is _Kind.CYCLE and finding.chain[-1] == plugin_id:
                members[plugin_id] = finding.problem()
                break
    first = next(iter(members))
    return RequirementsError(first, members.values())


def _ordered(graph: Mapping[str, set[str]], manifests: Mapping[str, Manifest]) -> list[str]:
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise _cycle_error(manifests, graph) from exc
    # Of the plugins whose requirements are all placed, always take the smallest id next.
    ready = list(sorter.get_ready())
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        plugin_id = heapq.heappop(ready)
        order.append(plugin_id)
        sorter.done(plugin_id)
        for unblocked in sorter.get_ready():
            heapq.heappush(ready, unblocked)
    return order


def load_order(manifests: Mapping[str, Manifest]) -> list[str]:
    """Every plugin of ``manifests``, each after the plugins it requires.

    The order is deterministic: whenever several plugins could come next, the
    smallest id does. Requirements that are not in ``manifests`` are ignored
    here (their plugin is still ordered); :func:`check_plugins` reports them.
    Versions and statuses are not looked at either.

    :raises RequirementsError: when requirements form a cycle. Its
        ``plugin_id`` is the first plugin (by id) on a cycle, and its
        ``problems`` have one entry per plugin on any cycle, each with the
        cycle from that plugin (``a -> b -> c -> a``).

    Example::

        >>> def plugin(*requires: str) -> Manifest:
        ...     needs = dict.fromkeys(requires, "")
        ...     data = {"name": "P", "version": "1", "requires_plugins": needs}
        ...     return Manifest.from_dict(data)
        >>> load_order({"web": plugin("sql"), "sql": plugin(), "cron": plugin()})
        ['cron', 'sql', 'web']
    """
    return _ordered(_graph(manifests, manifests), manifests)


def dependants(plugin_id: str, manifests: Mapping[str, Manifest]) -> set[str]:
    """The plugins of ``manifests`` that require ``plugin_id``, directly or through others.

    ``plugin_id`` itself is not included, even when it is on a cycle, and need
    not be in ``manifests``. Versions are not looked at.

    Example::

        >>> def plugin(*requires: str) -> Manifest:
        ...     needs = dict.fromkeys(requires, "")
        ...     data = {"name": "P", "version": "1", "requires_plugins": needs}
        ...     return Manifest.from_dict(data)
        >>> sorted(dependants("sql", {"web": plugin("api"), "api": plugin("sql"), "sql": plugin()}))
        ['api', 'web']
    """
    required_by: dict[str, set[str]] = {}
    for requirer, manifest in manifests.items():
        for required in manifest.requires_plugins:
            required_by.setdefault(required, set()).add(requirer)
    found: set[str] = set()
    todo = [plugin_id]
    while todo:
        for requirer in required_by.get(todo.pop(), ()):
            if requirer not in found:
                found.add(requirer)
                todo.append(requirer)
    found.discard(plugin_id)
    return found


def enable_order(plugin_id: str, manifests: Mapping[str, Manifest]) -> list[str]:
    """``plugin_id`` and every plugin it requires, directly or not, requirements first.

    The list ends with ``plugin_id`` and is ordered as :func:`load_order`
    would. Versions and statuses are not checked here: see
    :func:`check_plugins`.

    :raises PluginNotFound: when ``plugin_id`` is not in ``manifests``.
    :raises RequirementsError: for ``plugin_id`` when a plugin it needs is not
        in ``manifests`` or the requirements form a cycle (every such problem).

    Example::

        >>> def plugin(*requires: str) -> Manifest:
        ...     needs = dict.fromkeys(requires, "")
        ...     data = {"name": "P", "version": "1", "requires_plugins": needs}
        ...     return Manifest.from_dict(data)
        >>> enable_order("web", {"web": plugin("api"), "api": plugin("sql"), "sql": plugin()})
        ['sql', 'api', 'web']
    """
    if plugin_id not in manifests:
        raise PluginNotFound(plugin_id)
    findings, reached = _walk(plugin_id, manifests)
    blocking = [f.problem() for f in findings if f.kind in (_Kind.MISSING, _Kind.CYCLE)]
    if blocking:
        raise RequirementsError(plugin_id, blocking)
    return _ordered(_graph(manifests, reached), manifests)
