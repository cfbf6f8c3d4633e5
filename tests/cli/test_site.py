"""The command line run at a ``Site`` (what ``manage.py plugins`` does): the same commands on
the site's registry, plugins folder and host, without any framework."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import plugin_folder
from services_ai_plugins import PluginHost
from services_ai_plugins._cli._common import Site, current_site
from services_ai_plugins._cli._main import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main
from services_ai_plugins._storage._sqlite import SQLiteStorage
from services_ai_plugins_testing.fakes import FakeHostServices

READER = """\
from services_ai_plugins import hookimpl


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        found = api.get_lead(lead.id)
        return None if found is None else found.name
"""


class Here:
    """A site over a SQLite registry and a plugins folder in tmp_path, with a host of its own."""

    def __init__(self, root: Path) -> None:
        self.db = root / "site.db"
        self.plugins = root / "site-plugins"
        self.services = FakeHostServices()
        self.hosts: list[PluginHost] = []
        self.site = Site(
            prog="site plugins",
            open_storage=lambda: SQLiteStorage(self.db),
            plugins_dir=lambda: self.plugins,
            host=self.host,
            actor="site:ops",
            decided_by="the site's settings name them",
        )

    def host(self) -> PluginHost:
        if not self.hosts:
            self.hosts.append(
                PluginHost(self.services, storage=SQLiteStorage(self.db), plugins_dir=self.plugins)
            )
        return self.hosts[0]

    def __call__(self, *argv: str | Path) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main([*map(str, argv)], stdout=out, stderr=err, site=self.site)
        return code, out.getvalue(), err.getvalue()

    def json(self, *argv: str | Path) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == EXIT_OK, (out, err)
        return json.loads(out)


@pytest.fixture
def here(tmp_path: Path) -> Iterator[Here]:
    site = Here(tmp_path)
    yield site
    for host in site.hosts:
        host.close()


def test_commands_run_on_the_sites_registry_folder_host_and_actor(
    here: Here, tmp_path: Path
) -> None:
    folder = plugin_folder(tmp_path, "reader", READER)
    installed = here.json("install", folder)
    assert installed["installed_by"] == "site:ops"
    assert Path(installed["package_path"]).is_relative_to(here.plugins)
    here.json("approve", "reader")
    here.json("enable", "reader", "--tenant", "acme", "--actor", "someone")

    lead = here.services.make_lead("acme", name="Ada")
    data = json.dumps({"lead": {"id": lead.id, "tenant": "acme", "name": "given"}})
    called = here.json("call", "lead_created", "--tenant", "acme", "--data", data)
    # The site's host (its services hold the lead), not the command line's own.
    assert [o["result"] for o in called["outcomes"]] == ["Ada"]
    assert here.hosts[0].plugins().keys() == {"reader"}  # still open: the site's to close

    events = here.json("audit")["events"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("enable", "someone"),
        ("approve", "site:ops"),
        ("install", "site:ops"),
    ]


@pytest.mark.parametrize("option", ["--db", "--plugins-dir"])
def test_db_and_plugins_dir_are_usage_errors_at_a_site(
    here: Here, tmp_path: Path, option: str
) -> None:
    code, out, err = here("list", option, tmp_path / "elsewhere")
    assert code == EXIT_USAGE
    assert out == ""
    assert f"argument {option}: is not taken by site plugins: the site's settings name them" in err
    assert err.startswith("usage: site plugins list")
    code, out, _ = here("list", "--help")
    assert code == EXIT_OK
    assert option not in out


def test_the_site_ends_with_the_call(here: Here, tmp_path: Path) -> None:
    """After main(site=...) returns, the command line works on its own registry again."""
    code, _, err = here("approve", "nope")
    assert (code, err) == (EXIT_REFUSED, "error: no plugin 'nope' is installed\n")
    assert current_site() is None
    out = io.StringIO()
    db = tmp_path / "own.db"
    assert main(["list", "--db", str(db), "--json"], stdout=out) == EXIT_OK
    assert json.loads(out.getvalue()) == {"ok": True, "plugins": []}
