"""Requirements: host API, Python, distributions, and the graph of plugins requiring plugins."""

from __future__ import annotations

import random
import sys
from typing import Any

import importlib_metadata
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services_ai_plugins import Manifest, PluginError, PluginNotFound
from services_ai_plugins._dependencies import (
    RequirementsError,
    check_environment,
    check_plugins,
    dependants,
    enable_order,
    load_order,
)
from services_ai_plugins._storage._protocol import PluginStatus
from services_ai_plugins.errors import Problem


def plugin(plugin_id: str, version: str = "1.0", **fields: Any) -> Manifest:
    """A manifest with ``plugin_id``, ``version`` and any other fields given."""
    return Manifest.from_dict(
        {"id": plugin_id, "name": plugin_id.title(), "version": version, **fields}
    )


def graph(
    edges: dict[str, dict[str, str]], versions: dict[str, str] | None = None
) -> dict[str, Manifest]:
    """Manifests by id: ``edges`` maps each plugin to its ``requires_plugins``."""
    versions = versions or {}
    return {
        pid: plugin(pid, versions.get(pid, "1.0"), requires_plugins=needs)
        for pid, needs in edges.items()
    }


def environment(*, distributions: dict[str, str] | None = None, **fields: Any) -> list[Problem]:
    """check_environment for a manifest with ``fields``, against ``distributions`` (none)."""
    return check_environment(plugin("my-plugin", **fields), distributions=distributions or {})


DIAMOND = {
    "plug-a": {"plug-b": "", "plug-c": ""},
    "plug-b": {"plug-d": ""},
    "plug-c": {"plug-d": ">=1"},
    "plug-d": {},
}
CYCLE = {"plug-a": {"plug-b": ""}, "plug-b": {"plug-c": ""}, "plug-c": {"plug-a": ""}}


# -- the plugin graph ---------------------------------------------------------------------------


def test_diamond_orders_requirements_first() -> None:
    """A diamond loads d, then b and c, then a; d's dependants are a, b and c."""
    manifests = graph(DIAMOND)
    assert load_order(manifests) == ["plug-d", "plug-b", "plug-c", "plug-a"]
    assert dependants("plug-d", manifests) == {"plug-a", "plug-b", "plug-c"}
    assert dependants("plug-b", manifests) == {"plug-a"}
    assert dependants("plug-a", manifests) == set()
    assert enable_order("plug-a", manifests) == ["plug-d", "plug-b", "plug-c", "plug-a"]
    assert enable_order("plug-b", manifests) == ["plug-d", "plug-b"]
    assert check_plugins(manifests) == {}


def test_cycle_is_reported_for_every_member_with_the_whole_cycle() -> None:
    """In a -> b -> c -> a each member gets the cycle, starting from itself."""
    report = check_plugins(graph(CYCLE))
    assert report == {
        "plug-a": [
            Problem(
                "requires_plugins.plug-b",
                "circular requirement: plug-a -> plug-b -> plug-c -> plug-a",
            )
        ],
        "plug-b": [
            Problem(
                "requires_plugins.plug-c",
                "circular requirement: plug-b -> plug-c -> plug-a -> plug-b",
            )
        ],
        "plug-c": [
            Problem(
                "requires_plugins.plug-a",
                "circular requirement: plug-c -> plug-a -> plug-b -> plug-c",
            )
        ],
    }


def test_load_order_refuses_a_cycle_naming_every_member() -> None:
    """load_order raises RequirementsError for the first member, listing all three."""
    manifests = graph({**CYCLE, "plug-x": {}, "plug-y": {"plug-a": ""}})
    with pytest.raises(RequirementsError) as caught:
        load_order(manifests)
    error = caught.value
    assert isinstance(error, PluginError)
    assert error.plugin_id == "plug-a"
    assert [p.message.removeprefix("circular requirement: ") for p in error.problems] == [
        "plug-a -> plug-b -> plug-c -> plug-a",
        "plug-b -> plug-c -> plug-a -> plug-b",
        "plug-c -> plug-a -> plug-b -> plug-c",
    ]
    assert "3 problems" in str(error)
    assert "plug-a -> plug-b -> plug-c -> plug-a" in str(error)


def test_plugin_reaching_a_cycle_is_reported_with_its_chain() -> None:
    """A plugin requiring a cycle member is told the way into the cycle."""
    report = check_plugins(graph({**CYCLE, "plug-y": {"plug-a": ""}}))
    assert report["plug-y"] == [
        Problem(
            "requires_plugins.plug-a",
            "circular requirement: plug-y -> plug-a -> plug-b -> plug-c -> plug-a",
        )
    ]
    with pytest.raises(RequirementsError) as caught:
        enable_order("plug-y", graph({**CYCLE, "plug-y": {"plug-a": ""}}))
    assert caught.value.plugin_id == "plug-y"


def test_self_requirement_is_a_cycle() -> None:
    """A plugin requiring itself is a cycle of one."""
    manifests = graph({"plug-a": {"plug-a": ""}})
    assert check_plugins(manifests) == {
        "plug-a": [Problem("requires_plugins.plug-a", "circular requirement: plug-a -> plug-a")]
    }
    with pytest.raises(RequirementsError):
        load_order(manifests)
    assert dependants("plug-a", manifests) == set()


def test_missing_plugin_is_reported_but_still_ordered() -> None:
    """A requirement on an absent plugin is a problem; load_order still places the plugin."""
    manifests = graph({"lead-scorer": {"crm-sync": ">=2"}, "mailer": {}})
    assert check_plugins(manifests) == {
        "lead-scorer": [
            Problem(
                "requires_plugins.crm-sync",
                "lead-scorer -> crm-sync: lead-scorer requires plugin crm-sync >=2, "
                "which is not installed",
            )
        ]
    }
    assert load_order(manifests) == ["lead-scorer", "mailer"]
    with pytest.raises(RequirementsError) as caught:
        enable_order("lead-scorer", manifests)
    assert caught.value.plugin_id == "lead-scorer"
    assert caught.value.problems == tuple(check_plugins(manifests)["lead-scorer"])


def test_transitive_missing_plugin_names_the_chain() -> None:
    """lead-scorer -> crm-sync -> mailer: both plugins above mailer hear of it."""
    manifests = graph({"lead-scorer": {"crm-sync": ""}, "crm-sync": {"mailer": ""}})
    report = check_plugins(manifests)
    assert report["lead-scorer"] == [
        Problem(
            "requires_plugins.crm-sync",
            "lead-scorer -> crm-sync -> mailer: crm-sync requires plugin mailer (any version), "
            "which is not installed",
        )
    ]
    assert report["crm-sync"][0].path == "requires_plugins.mailer"
    assert report["crm-sync"][0].message.startswith("crm-sync -> mailer: ")


def test_version_conflict_names_requirer_required_specifier_and_version() -> None:
    """b requires d>=2 but d is 1.0: the message says all four, for b and for a above it."""
    manifests = graph(
        {"plug-a": {"plug-b": ""}, "plug-b": {"plug-d": ">=2"}, "plug-d": {}},
        versions={"plug-d": "1.0"},
    )
    report = check_plugins(manifests)
    assert report == {
        "plug-a": [
            Problem(
                "requires_plugins.plug-b",
                "plug-a -> plug-b -> plug-d: plug-b requires plugin plug-d >=2, "
                "but plug-d is version 1.0",
            )
        ],
        "plug-b": [
            Problem(
                "requires_plugins.plug-d",
                "plug-b -> plug-d: plug-b requires plugin plug-d >=2, but plug-d is version 1.0",
            )
        ],
    }
    # Ordering does not look at versions.
    assert enable_order("plug-a", manifests) == ["plug-d", "plug-b", "plug-a"]


def test_conflicting_requirements_on_one_plugin() -> None:
    """Two plugins wanting incompatible versions of d: the one d does not satisfy is told."""
    manifests = graph(
        {
            "plug-a": {"plug-b": "", "plug-c": ""},
            "plug-b": {"plug-d": "<2"},
            "plug-c": {"plug-d": ">=2"},
            "plug-d": {},
        },
        versions={"plug-d": "2.1"},
    )
    report = check_plugins(manifests)
    assert set(report) == {"plug-a", "plug-b"}
    assert report["plug-a"][0].message.startswith("plug-a -> plug-b -> plug-d: ")
    assert (
        "plug-b requires plugin plug-d <2, but plug-d is version 2.1" in report["plug-b"][0].message
    )


def test_prerelease_plugin_version_satisfies_a_range_it_is_in() -> None:
    """A required plugin at 2.0rc1 satisfies >=1 (pre-releases allowed) but not >=2."""
    ok = graph({"plug-a": {"plug-d": ">=1"}, "plug-d": {}}, versions={"plug-d": "2.0rc1"})
    assert check_plugins(ok) == {}
    too_old = graph({"plug-a": {"plug-d": ">=2"}, "plug-d": {}}, versions={"plug-d": "2.0rc1"})
    assert "plug-d is version 2.0rc1" in check_plugins(too_old)["plug-a"][0].message


def test_statuses_require_approved_plugins() -> None:
    """With statuses, a required plugin that is pending, suspended or unknown is a problem."""
    manifests = graph(
        {
            "plug-a": {"plug-b": "", "plug-c": "", "plug-d": ""},
            "plug-b": {},
            "plug-c": {},
            "plug-d": {},
        }
    )
    statuses = {
        "plug-a": PluginStatus.APPROVED,
        "plug-b": PluginStatus.APPROVED,
        "plug-c": PluginStatus.PENDING,
    }
    messages = [p.message for p in check_plugins(manifests, statuses)["plug-a"]]
    assert messages == [
        "plug-a -> plug-c: plug-a requires plugin plug-c (any version), "
        "which is pending, not approved",
        "plug-a -> plug-d: plug-a requires plugin plug-d (any version), which has no status",
    ]
    assert check_plugins(manifests) == {}


def test_all_problems_are_reported_at_once() -> None:
    """Missing, conflicting and circular requirements of one plugin all appear together."""
    manifests = graph(
        {
            "plug-a": {"plug-b": "", "plug-d": ">=3", "plug-z": ""},
            "plug-b": {"plug-a": ""},
            "plug-d": {},
        }
    )
    paths = [p.path for p in check_plugins(manifests)["plug-a"]]
    assert paths == [
        "requires_plugins.plug-b",
        "requires_plugins.plug-d",
        "requires_plugins.plug-z",
    ]


def test_load_order_is_deterministic() -> None:
    """Ties go to the smallest id, whatever order the manifests come in."""
    edges = {
        "zeta": {},
        "alpha": {"zeta": ""},
        "mid": {},
        "beta": {},
        "omega": {"beta": "", "mid": ""},
    }
    expected = ["beta", "mid", "omega", "zeta", "alpha"]
    manifests = graph(edges)
    items = list(manifests.items())
    for seed in range(5):
        random.Random(seed).shuffle(items)
        assert load_order(dict(items)) == expected
    assert load_order({}) == []


def test_enable_order_of_an_unknown_plugin() -> None:
    """enable_order of an id not in the manifests raises PluginNotFound."""
    with pytest.raises(PluginNotFound):
        enable_order("plug-q", graph(DIAMOND))
    assert dependants("plug-q", graph({"plug-a": {"plug-q": ""}})) == {"plug-a"}


@st.composite
def dags(draw: st.DrawFn) -> dict[str, dict[str, str]]:
    """Random acyclic requirement graphs of up to 12 plugins, ids shuffled."""
    size = draw(st.integers(min_value=0, max_value=12))
    ids = draw(st.permutations([f"plug-{n:02d}" for n in range(size)]))
    edges: dict[str, dict[str, str]] = {}
    for index, plugin_id in enumerate(ids):
        # Only plugins earlier in the (shuffled) list may be required: no cycles.
        needs = draw(st.sets(st.sampled_from(ids[:index]))) if index else set()
        edges[plugin_id] = dict.fromkeys(sorted(needs), "")
    return edges


@given(dags())
def test_load_order_puts_requirements_first(edges: dict[str, dict[str, str]]) -> None:
    """For any DAG, load_order lists every plugin once, each after all it requires."""
    manifests = graph(edges)
    order = load_order(manifests)
    assert sorted(order) == sorted(edges)
    position = {plugin_id: index for index, plugin_id in enumerate(order)}
    for plugin_id, needs in edges.items():
        for required in needs:
            assert position[required] < position[plugin_id]
        closure = enable_order(plugin_id, manifests)
        assert closure[-1] == plugin_id
        assert [p for p in order if p in closure] == closure
        for other in dependants(plugin_id, manifests):
            assert plugin_id in enable_order(other, manifests)
    assert check_plugins(manifests) == {}


# -- the environment ----------------------------------------------------------------------------


def test_requires_api() -> None:
    """requires_api is matched against the host API version given (or the real one)."""
    assert environment(requires_api=">=1.0,<2") == []
    manifest = plugin("my-plugin", requires_api=">=2")
    assert check_environment(manifest, host_api="1.4", distributions={}) == [
        Problem("requires_api", "requires host API >=2, but the host offers API 1.4")
    ]
    assert check_environment(manifest, host_api="2.1", distributions={}) == []
    # A pre-release host inside the range is accepted.
    assert check_environment(manifest, host_api="2.1rc1", distributions={}) == []


def test_requires_python() -> None:
    """requires_python is matched against the running Python, or the version given."""
    assert environment(requires_python=">=3.10") == []
    [problem] = environment(requires_python="<3")
    running = ".".join(map(str, sys.version_info[:3]))
    assert problem.path == "requires_python"
    assert problem.message.startswith(f"requires Python <3, but Python {running}")
    manifest = plugin("my-plugin", requires_python=">=3.12")
    assert check_environment(manifest, python_version="3.12.1", distributions={}) == []
    assert check_environment(manifest, python_version="3.11.9", distributions={}) == [
        Problem("requires_python", "requires Python >=3.12, but Python 3.11.9 is running")
    ]
    assert check_environment(manifest, python_version="3.13.0b2", distributions={}) == []


def test_distributions_present_missing_and_wrong_version() -> None:
    """A missing distribution and a wrong version give different messages, by index."""
    problems = environment(
        dependencies=["present>=1", "absent", "old>=2,<3"],
        distributions={"present": "1.5", "old": "1.9"},
    )
    assert problems == [
        Problem("dependencies[1]", "requires absent: distribution 'absent' is not installed"),
        Problem("dependencies[2]", "requires old<3,>=2: version 1.9 of 'old' is installed"),
    ]


def test_marker_excluded_requirements_are_skipped() -> None:
    """Requirements whose marker is false are not checked; true markers are."""
    deps = [
        'somepkg>=1; python_version < "3"',
        'somepkg; sys_platform == "nonexistent"',
        'otherpkg; python_version >= "3"',
    ]
    problems = environment(dependencies=deps)
    assert [p.path for p in problems] == ["dependencies[2]"]
    # Markers follow the python_version given.
    manifest = plugin("my-plugin", dependencies=['legacy; python_version < "3.11"'])
    assert check_environment(manifest, python_version="3.12.0", distributions={}) == []
    [problem] = check_environment(manifest, python_version="3.10.4", distributions={})
    assert problem.path == "dependencies[0]"


def test_name_normalisation() -> None:
    """Distribution names match after PEP 503 normalisation, both ways."""
    assert (
        environment(
            dependencies=["Typing_Extensions>=4"], distributions={"typing-extensions": "4.12.2"}
        )
        == []
    )
    assert (
        environment(
            dependencies=["typing-extensions>=4"], distributions={"Typing.Extensions": "4.12.2"}
        )
        == []
    )
    installed = check_environment(
        plugin("my-plugin", dependencies=["Typing_Extensions>=4", "ATTRS"])
    )
    assert installed == []


def test_real_installed_distributions() -> None:
    """Without a mapping, distributions are looked up with importlib_metadata."""
    version = importlib_metadata.version("attrs")
    manifest = plugin(
        "my-plugin",
        dependencies=[f"attrs=={version}", f"attrs>{version}", "surely-not-installed-zz9"],
    )
    assert check_environment(manifest) == [
        Problem(
            "dependencies[1]",
            f"requires attrs>{version}: version {version} of 'attrs' is installed",
        ),
        Problem(
            "dependencies[2]",
            "requires surely-not-installed-zz9: "
            "distribution 'surely-not-installed-zz9' is not installed",
        ),
    ]


def test_prerelease_distributions() -> None:
    """An installed pre-release satisfies a range it is in, not one it is below."""
    assert environment(dependencies=["pkg>=1"], distributions={"pkg": "2.0b1"}) == []
    [problem] = environment(dependencies=["pkg>=2.0"], distributions={"pkg": "2.0b1"})
    assert problem.message == "requires pkg>=2.0: version 2.0b1 of 'pkg' is installed"
    assert environment(dependencies=["pkg>=2.0b1"], distributions={"pkg": "2.0rc1"}) == []


def test_extras_check_only_the_base_distribution() -> None:
    """pkg[fast]>=2 checks pkg's presence and version, not what the extra pulls in."""
    assert environment(dependencies=["pkg[fast]>=2"], distributions={"pkg": "2.1"}) == []
    [problem] = environment(dependencies=["pkg[fast]>=2"], distributions={"pkg": "1.0"})
    assert problem == Problem(
        "dependencies[0]", "requires pkg[fast]>=2: version 1.0 of 'pkg' is installed"
    )


def test_invalid_installed_version() -> None:
    """An installed version that is not PEP 440 is reported, not raised."""
    [problem] = environment(dependencies=["pkg"], distributions={"pkg": "not a version"})
    assert "not a PEP 440 version" in problem.message


def test_everything_is_reported_at_once() -> None:
    """API, Python and distribution problems come together, in field order."""
    manifest = plugin(
        "my-plugin",
        requires_api=">=9",
        requires_python="<3",
        dependencies=["absent", "pkg>=2"],
    )
    problems = check_environment(manifest, distributions={"pkg": "1"})
    assert [p.path for p in problems] == [
        "requires_api",
        "requires_python",
        "dependencies[0]",
        "dependencies[1]",
    ]
    error = RequirementsError("my-plugin", problems)
    assert error.problems == tuple(problems)
    assert str(error).startswith("requirements of plugin 'my-plugin' are not met (4 problems):")
    assert str(RequirementsError("my-plugin", problems[:1])) == (
        "requirements of plugin 'my-plugin' are not met: "
        "requires_api: requires host API >=9, but the host offers API 1.0"
    )
