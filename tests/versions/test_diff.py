"""What a new version asks for, and the diff an admin reads before approving it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given

from services_ai_plugins import Manifest
from services_ai_plugins._permissions import Permission, PermissionCatalogue, Risk
from services_ai_plugins._versions import (
    FileEntry,
    FileListing,
    VersionDiff,
    VersionSide,
    asks_for_nothing_new,
    diff_versions,
)
from services_ai_plugins_testing import strategies as sais

BASE: dict[str, Any] = {
    "id": "demo",
    "name": "Demo",
    "version": "1.0.0",
    "permissions": ["read_leads"],
    "optional_permissions": ["send_email"],
    "hooks": ["lead_created"],
    "requires_api": ">=1.0",
    "requires_python": ">=3.10",
    "dependencies": ["requests>=2,<3"],
    "requires_plugins": {"crm-sync": ">=1"},
    "isolation": "process",
    "settings": [{"name": "limit", "type": "integer", "default": 10, "max": 100}],
}


def manifest(**changes: Any) -> Manifest:
    document = {**BASE, **changes}
    return Manifest.from_dict({k: v for k, v in document.items() if v is not None})


def side(m: Manifest, code_hash: str = "a" * 64, files: Any = None) -> VersionSide:
    return VersionSide(version=str(m.version), manifest=m, code_hash=code_hash, files=files)


# -- asks_for_nothing_new ------------------------------------------------------------------------


def test_an_update_that_changes_only_code_settings_and_changelog_asks_for_nothing_new() -> None:
    new = manifest(
        version="1.1.0",
        changelog="Faster.",
        description="Other words.",
        settings=[{"name": "limit", "type": "number", "default": 5}],
    )
    assert asks_for_nothing_new(manifest(), new) == []


def test_dropping_permissions_and_hooks_asks_for_nothing_new() -> None:
    new = manifest(version="1.1", permissions=[], optional_permissions=[], hooks=[])
    assert asks_for_nothing_new(manifest(), new) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"permissions": ["read_leads", "write_leads"]}, "asks for the permission 'write_leads'"),
        (
            {"permissions": ["read_leads", "send_email"], "optional_permissions": []},
            "asks for the permission 'send_email', which was optional",
        ),
        (
            {"optional_permissions": ["send_email", "send_sms"]},
            "asks for the optional permission 'send_sms'",
        ),
        ({"hooks": ["lead_created", "booking_created"]}, "implements the hook 'booking_created'"),
        ({"hooks": None}, "no longer lists its hooks"),
        ({"requires_api": ">=2.0"}, "changes requires_api from >=1.0 to >=2.0"),
        ({"requires_api": None}, "drops the requirement requires_api >=1.0"),
        ({"requires_python": ">=3.11"}, "changes requires_python from >=3.10 to >=3.11"),
        ({"dependencies": ["requests>=2,<4"]}, "changes dependencies.requests"),
        ({"dependencies": ["requests>=2,<3", "httpx"]}, "adds the requirement dependencies.httpx"),
        ({"dependencies": []}, "drops the requirement dependencies.requests"),
        ({"requires_plugins": {"crm-sync": ">=2"}}, "changes requires_plugins.crm-sync"),
        (
            {"requires_plugins": {"crm-sync": ">=1", "mailer": ""}},
            "adds the requirement requires_plugins.mailer (any version)",
        ),
        ({"isolation": "inprocess"}, "changes isolation from process to inprocess"),
        ({"isolation": None}, "changes isolation from process to unset"),
    ],
)
def test_what_counts_as_asking_for_something_new(changes: dict[str, Any], expected: str) -> None:
    reasons = asks_for_nothing_new(manifest(), manifest(version="2.0", **changes))
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(expected), reasons


def test_hooks_listed_for_the_first_time_are_new() -> None:
    old = manifest(hooks=None)
    reasons = asks_for_nothing_new(old, manifest(hooks=["lead_created"]))
    assert reasons == ["lists its hooks for the first time: 'lead_created'"]
    assert asks_for_nothing_new(old, manifest(hooks=[])) == []
    assert asks_for_nothing_new(old, manifest(hooks=None)) == []


def test_requirements_equal_as_packaging_reads_them_are_unchanged() -> None:
    new = manifest(
        requires_api=" >=1.0",
        dependencies=["Requests<3,>=2"],
        requires_plugins={"crm-sync": ">=1"},
    )
    assert asks_for_nothing_new(manifest(), new) == []


def test_every_reason_is_listed() -> None:
    new = manifest(permissions=["read_leads", "write_leads"], hooks=None, isolation="inprocess")
    assert len(asks_for_nothing_new(manifest(), new)) == 3


# -- diff_versions -------------------------------------------------------------------------------


def full_diff() -> VersionDiff:
    old = manifest(
        settings=[
            {"name": "limit", "type": "integer", "default": 10, "max": 100},
            {"name": "gone", "type": "boolean"},
            {"name": "token", "type": "string"},
        ]
    )
    new = manifest(
        version="1.1.0",
        permissions=["read_leads", "write_leads", "read_tickets"],
        optional_permissions=[],
        hooks=["booking_created"],
        requires_api=">=1.1",
        dependencies=["requests>=2,<3", "httpx>=0.27"],
        settings=[
            {"name": "limit", "type": "number", "default": 10, "max": 200, "required": True},
            {"name": "token", "type": "secret"},
            {"name": "mode", "type": "choice", "choices": ["a", "b"], "default": "a"},
        ],
        changelog="Books too.\nSee the docs.",
    )
    old_files = {"main.py": FileEntry(100, "1" * 64), "old.py": FileEntry(7, "2" * 64)}
    new_files = {"main.py": FileEntry(130, "3" * 64), "new.py": FileEntry(1, "4" * 64)}
    return diff_versions(
        side(old, "a" * 64, old_files), side(new, "b" * 64, new_files), PermissionCatalogue()
    )


def test_the_diff_lists_every_kind_of_change() -> None:
    diff = full_diff()
    data = diff.to_dict()
    assert data["from"] == {"version": "1.0.0", "code_hash": "a" * 64}
    assert data["to"] == {"version": "1.1.0", "code_hash": "b" * 64}
    assert data["permissions"] == {
        "added": [
            {
                "name": "write_leads",
                "optional": False,
                "description": "Change the tenant's leads.",
                "risk": "high",
            },
            {"name": "read_tickets", "optional": False, "description": None, "risk": None},
        ],
        "removed": [],
    }
    assert [p["name"] for p in data["optional_permissions"]["removed"]] == ["send_email"]
    assert data["optional_permissions"]["removed"][0]["risk"] == "high"
    assert data["hooks"] == {
        "added": ["booking_created"],
        "removed": ["lead_created"],
        "listed": {"from": True, "to": True},
    }
    settings = data["settings"]
    assert [s["name"] for s in settings["added"]] == ["mode"]
    assert settings["added"][0]["choices"] == ["a", "b"]
    assert settings["removed"] == ["gone"]
    assert settings["changed"] == [
        {
            "name": "limit",
            "changes": {
                "type": {"before": "integer", "after": "number"},
                "required": {"before": False, "after": True},
                "max": {"before": 100, "after": 200},
            },
        },
        {
            "name": "token",
            "changes": {
                "type": {"before": "string", "after": "secret"},
                "secret": {"before": False, "after": True},
            },
        },
    ]
    assert data["requirements"] == [
        {"name": "requires_api", "before": ">=1.0", "after": ">=1.1"},
        {"name": "dependencies.httpx", "before": None, "after": "httpx>=0.27"},
    ]
    assert data["files"] == {
        "added": [{"path": "new.py", "before": None, "after": {"size": 1, "sha256": "4" * 64}}],
        "removed": [{"path": "old.py", "before": {"size": 7, "sha256": "2" * 64}, "after": None}],
        "changed": [
            {
                "path": "main.py",
                "before": {"size": 100, "sha256": "1" * 64},
                "after": {"size": 130, "sha256": "3" * 64},
            }
        ],
        "notes": [],
    }
    assert data["changelog"] == "Books too.\nSee the docs."
    assert data["asks_for_nothing_new"] is False
    assert data["reasons"] == diff.asks_for_nothing_new
    assert len(diff.asks_for_nothing_new) == 5  # 2 permissions, 1 hook, requires_api, httpx
    assert json.loads(json.dumps(data, sort_keys=True)) == data


def test_the_printed_diff_has_one_change_a_line_under_headings() -> None:
    text = "\n".join(full_diff().lines())
    assert text == "\n".join(
        [
            "Version 1.0.0 -> 1.1.0",
            f"Code hash: {'a' * 64} -> {'b' * 64}",
            "Asks for something new:",
            "  ! asks for the permission 'write_leads'",
            "  ! asks for the permission 'read_tickets'",
            "  ! implements the hook 'booking_created'",
            "  ! changes requires_api from >=1.0 to >=1.1",
            "  ! adds the requirement dependencies.httpx httpx>=0.27",
            "Permissions:",
            "  + write_leads (risk high): Change the tenant's leads.",
            "  + read_tickets (unknown to this host)",
            "Optional permissions:",
            "  - send_email (risk high): Send e-mail on the tenant's behalf.",
            "Hooks:",
            "  + booking_created",
            "  - lead_created",
            "Settings:",
            '  + mode (choice, default "a", one of "a", "b")',
            "  - gone",
            '  ~ limit: type "integer" -> "number"; required false -> true; max 100 -> 200',
            '  ~ token: type "string" -> "secret"; secret false -> true',
            "Requirements:",
            "  ~ requires_api: >=1.0 -> >=1.1",
            "  ~ dependencies.httpx: (absent) -> httpx>=0.27",
            "Files (1 added, 1 removed, 1 changed):",
            "  + new.py (1 byte)",
            "  - old.py (7 bytes)",
            "  ~ main.py (100 -> 130 bytes)",
            "Changelog:",
            "  Books too.",
            "  See the docs.",
        ]
    )


def test_the_catalogue_given_describes_the_hosts_own_permissions() -> None:
    catalogue = PermissionCatalogue()
    catalogue.add(Permission("read_tickets", "Read support tickets.", Risk.MEDIUM))
    new = manifest(permissions=["read_leads", "read_tickets"])
    diff = diff_versions(side(manifest()), side(new), catalogue)
    assert diff.permissions_added[0].description == "Read support tickets."
    assert diff.permissions_added[0].risk == "medium"


def test_the_summary_is_what_an_approval_records() -> None:
    assert full_diff().summary() == {
        "from": "1.0.0",
        "to": "1.1.0",
        "code_hash": {"from": "a" * 64, "to": "b" * 64},
        "permissions": {"added": ["write_leads", "read_tickets"], "removed": []},
        "optional_permissions": {"added": [], "removed": ["send_email"]},
        "hooks": {"added": ["booking_created"], "removed": ["lead_created"]},
        "settings": {"added": ["mode"], "removed": ["gone"], "changed": ["limit", "token"]},
        "requirements": ["requires_api", "dependencies.httpx"],
        "files": {"added": 1, "removed": 1, "changed": 1},
        "network": {"added": [], "removed": []},
        "asks_for_nothing_new": False,
    }


def test_sections_without_changes_are_left_out() -> None:
    new = manifest(version="1.0.1")
    files = {"main.py": FileEntry(3, "1" * 64)}
    lines = diff_versions(
        side(manifest(), files=files), side(new, files=files), PermissionCatalogue()
    ).lines()
    assert lines == [
        "Version 1.0.0 -> 1.0.1",
        f"Code hash: {'a' * 64} (unchanged)",
        "Asks for nothing new.",
    ]


def test_unknown_files_are_said_to_be_not_compared() -> None:
    diff = diff_versions(
        side(manifest()), side(manifest(version="1.1"), "c" * 64), PermissionCatalogue()
    )
    assert diff.to_dict()["files"] is None
    assert diff.summary()["files"] is None
    assert "Files: not compared (the files of a version are not known)" in diff.lines()


def test_what_a_listing_left_out_is_shown() -> None:
    listing = FileListing(
        [("main.py", FileEntry(3, "1" * 64))], ["'evil' is a symbolic link: not followed"]
    )
    diff = diff_versions(
        side(manifest(), files={"main.py": FileEntry(3, "1" * 64)}),
        side(manifest(version="1.1"), "c" * 64, listing),
        PermissionCatalogue(),
    )
    assert diff.to_dict()["files"]["notes"] == ["to: 'evil' is a symbolic link: not followed"]
    assert "  (not compared: to: 'evil' is a symbolic link: not followed)" in diff.lines()


def test_a_hostile_changelog_and_file_names_cannot_rewrite_the_terminal() -> None:
    """A plugin's text reaches the admin's terminal: control characters come escaped."""
    sneaky = "Fixes.\x1b[2J\x1b[1;1HApproved by security\rOK\u202etxt.exe"
    new = manifest(version="1.1", changelog=sneaky)
    files = {"ok\x1b[31m.py": FileEntry(1, "1" * 64)}
    diff = diff_versions(
        side(manifest(), files={}), side(new, "c" * 64, files), PermissionCatalogue()
    )
    for line in diff.lines():
        assert line.isprintable(), repr(line)
    text = "\n".join(diff.lines())
    assert "\\x1b[2J" in text
    assert "\\u202e" in text
    assert diff.to_dict()["changelog"] == sneaky  # JSON carries it as it is, escaped by JSON


def test_the_diff_of_a_version_with_itself_shows_no_change() -> None:
    files = {"main.py": FileEntry(3, "1" * 64)}
    diff = diff_versions(
        side(manifest(), files=files), side(manifest(), files=files), PermissionCatalogue()
    )
    assert diff.summary()["permissions"] == {"added": [], "removed": []}
    assert diff.lines() == [
        "Version 1.0.0 -> 1.0.0",
        f"Code hash: {'a' * 64} (unchanged)",
        "Asks for nothing new.",
    ]


# -- properties ----------------------------------------------------------------------------------


@given(sais.manifests(), sais.manifests())
def test_a_diff_and_its_reverse_mirror_each_other(a: Manifest, b: Manifest) -> None:
    catalogue = PermissionCatalogue()
    forward = diff_versions(side(a), side(b, "b" * 64), catalogue).to_dict()
    backward = diff_versions(side(b, "b" * 64), side(a), catalogue).to_dict()
    for key in ("permissions", "optional_permissions", "hooks"):
        assert forward[key]["added"] == backward[key]["removed"]
        assert forward[key]["removed"] == backward[key]["added"]
    assert sorted(forward["settings"]["removed"]) == sorted(
        s["name"] for s in backward["settings"]["added"]
    )
    assert {r["name"] for r in forward["requirements"]} == {
        r["name"] for r in backward["requirements"]
    }
    json.dumps(forward)  # JSON-ready


@given(sais.manifests())
def test_a_manifest_against_itself_asks_for_nothing_and_changes_nothing(m: Manifest) -> None:
    diff = diff_versions(side(m), side(m), PermissionCatalogue())
    assert diff.asks_for_nothing_new == []
    assert diff.summary()["settings"] == {"added": [], "removed": [], "changed": []}
    assert diff.requirements == ()
    lines = diff.lines()
    assert lines[2] == "Asks for nothing new."
    assert lines[3:] == ([] if not m.changelog else ["Changelog:", *lines[4:]])


@given(sais.manifests(), sais.manifests())
def test_the_reasons_name_every_permission_and_requirement_added(a: Manifest, b: Manifest) -> None:
    reasons = " ".join(asks_for_nothing_new(a, b))
    for name in set(b.permissions) - set(a.permissions):
        assert repr(name) in reasons
    for name in set(b.optional_permissions) - set(a.permissions) - set(a.optional_permissions):
        assert repr(name) in reasons
    if a.requires_api != b.requires_api:
        assert "requires_api" in reasons
    if a.isolation != b.isolation:
        assert "isolation" in reasons
    assert (reasons == "") == (
        diff_versions(side(a), side(b), PermissionCatalogue()).to_dict()["asks_for_nothing_new"]
    )
