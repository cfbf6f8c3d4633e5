"""HostConfig: the host's and the command line's defaults are absolute, from one rule.

``$SERVICES_AI_PLUGINS_DB`` / ``$SERVICES_AI_PLUGINS_DIR`` (relative values made
absolute once, when read), else the per-user data folder; never the working
folder of whoever imported the package.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import Installer, plugin_folder
from services_ai_plugins import HostConfig, PluginHost, SandboxPolicy, SQLiteStorage
from services_ai_plugins._cli._main import EXIT_OK, main
from services_ai_plugins._config import DB_ENV, DIR_ENV, data_home
from services_ai_plugins.storage import SourceKind
from services_ai_plugins.types import Isolation
from services_ai_plugins_testing.fakes import FakeHostServices

IN_PROCESS = SandboxPolicy(isolation=dict.fromkeys(SourceKind, Isolation.INPROCESS), timeout=30.0)

QUIET = "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n    pass\n"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No registry variables; the data folder under ``tmp_path/data``; returns that folder."""
    monkeypatch.delenv(DB_ENV, raising=False)
    monkeypatch.delenv(DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data" / "services-ai-plugins"


def test_without_variables_the_defaults_are_in_the_data_folder(clean_env: Path) -> None:
    config = HostConfig.from_env()
    assert config.db == str(clean_env / "services-ai-plugins.db")
    assert config.plugins_dir == clean_env / "plugins"


def test_the_data_folder_rule() -> None:
    """An absolute XDG_DATA_HOME; a relative one is ignored (the XDG rule): HOME's
    .local/share; no home at all is refused, saying which variables to set."""
    assert data_home({"XDG_DATA_HOME": "/x"}) == Path("/x/services-ai-plugins")
    assert data_home({"XDG_DATA_HOME": "rel", "HOME": "/home/ada"}) == Path(
        "/home/ada/.local/share/services-ai-plugins"
    )
    assert data_home({"HOME": "/home/ada"}) == Path("/home/ada/.local/share/services-ai-plugins")


def test_no_home_is_refused_naming_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", no_home)
    with pytest.raises(ValueError, match=r"SERVICES_AI_PLUGINS_DB and \$SERVICES_AI_PLUGINS_DIR"):
        HostConfig.from_env({})
    # Both named: no home needed.
    config = HostConfig.from_env({DB_ENV: "/srv/r.db", DIR_ENV: "/srv/plugins"})
    assert (config.db, config.plugins_dir) == ("/srv/r.db", Path("/srv/plugins"))


def test_relative_variables_are_made_absolute_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    config = HostConfig.from_env({DB_ENV: "reg.db", DIR_ENV: "code"})
    monkeypatch.chdir(tmp_path / "b")
    assert config.db == str(tmp_path / "a" / "reg.db")
    assert config.plugins_dir == tmp_path / "a" / "code"
    home = HostConfig.from_env({DB_ENV: "~/reg.db", DIR_ENV: "~/code"})
    assert Path(home.db).is_absolute()
    assert not home.db.startswith("~")


def test_a_database_url_is_kept_and_its_password_never_shown() -> None:
    url = "postgresql://ops:s3cr3t@db.internal/registry"
    config = HostConfig.from_env({DB_ENV: url, DIR_ENV: "/srv/plugins"})
    assert config.db == url
    assert config.is_database_url
    assert "s3cr3t" not in repr(config)
    assert "ops:***@db.internal" in repr(config)


def test_relative_paths_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"HostConfig\.db must be an absolute"):
        HostConfig(db="reg.db", plugins_dir="/srv/plugins")
    with pytest.raises(ValueError, match=r"HostConfig\.plugins_dir must be an absolute"):
        HostConfig(db="/srv/reg.db", plugins_dir="plugins")
    config = HostConfig.at("relative/folder")
    assert Path(config.db).is_absolute()
    assert config.plugins_dir.is_absolute()


def test_a_host_keeps_the_places_it_was_created_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative variables are resolved when the host is created: a later chdir (a worker
    process, a test runner) moves nothing."""
    (tmp_path / "app").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    monkeypatch.setenv(DB_ENV, "registry.db")
    monkeypatch.setenv(DIR_ENV, "plugins")
    with PluginHost(FakeHostServices(), entry_points=False, sandbox=IN_PROCESS) as host:
        monkeypatch.chdir(tmp_path / "elsewhere")
        install = Installer(
            tmp_path / "sources", "from services_ai_plugins import hookimpl\n\n\nclass Plugin:\n"
        )
        install(host, "alpha", "pass\n")
        assert host.plugins_dir == tmp_path / "app" / "plugins"
        assert host.is_active("alpha", "acme")
    assert (tmp_path / "app" / "registry.db").is_file()
    assert (tmp_path / "app" / "plugins" / "alpha").is_dir()
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_config_chooses_a_folder(tmp_path: Path) -> None:
    config = HostConfig.at(tmp_path / "var")
    with PluginHost(FakeHostServices(), entry_points=False, config=config) as host:
        assert host.plugins_dir == tmp_path / "var" / "plugins"
    assert (tmp_path / "var" / "services-ai-plugins.db").is_file()


def test_what_the_command_line_installs_a_default_host_sees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    """The command line and the host agree on the defaults, each from its own folder."""
    folder = plugin_folder(tmp_path, "shared", QUIET)
    (tmp_path / "ops").mkdir()
    (tmp_path / "app").mkdir()
    monkeypatch.chdir(tmp_path / "ops")
    for argv in (
        ["install", str(folder)],
        ["approve", "shared"],
        ["enable", "shared", "--tenant", "acme"],
    ):
        err = io.StringIO()
        assert main([*argv, "--actor", "ops"], stdout=io.StringIO(), stderr=err) == EXIT_OK, (
            err.getvalue()
        )
    assert list((tmp_path / "ops").iterdir()) == []
    assert (clean_env / "services-ai-plugins.db").is_file()
    monkeypatch.chdir(tmp_path / "app")
    with PluginHost(FakeHostServices(), entry_points=False, sandbox=IN_PROCESS) as host:
        assert host.is_active("shared", "acme")
    storage = SQLiteStorage(clean_env / "services-ai-plugins.db")
    try:
        assert [p.id for p in storage.list_plugins()] == ["shared"]
    finally:
        storage.close()
