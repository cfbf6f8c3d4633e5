"""Code served to every machine: a host materialises an uploaded plugin from its kept archive.

Two hosts share one registry (memory storage here, one process; see
test_two_processes.py for two processes on SQLite and PostgreSQL), each with
its own plugins folder: the first installs an uploaded ZIP, the second has
never seen the files and must find the code in the artifact store. Every
plugin runs sandboxed, in real confined workers; every archive is a real ZIP.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from artifact_kit import (
    HEADER,
    files_under,
    hostile_zip,
    point_at,
    recorded_artifact,
    sha256,
    widget,
)

from conftest import Hosts, Installer
from services_ai_plugins import (
    MemoryStorage,
    PluginHost,
    PluginStatus,
    SandboxPolicy,
    SQLiteStorage,
)
from services_ai_plugins.errors import (
    ArchiveError,
    IntegrityError,
    PackageError,
    TransitionError,
)
from services_ai_plugins.events import Context
from services_ai_plugins.tooling import ArchiveLimits, code_hash, install_archive

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

ACME = Context(tenant="acme")

#: The plugins folder of the machine that installed the plugins (not this one).
OTHER_MACHINE = "/nonexistent/machine-a/plugins"

#: Changes a file of the plugin it is stored in: "original" becomes "tampered".
MARKED = """
@hookimpl
def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title="original", html=str(os.getpid()))
"""


class Pair:
    """Two hosts on one memory registry, each with its own plugins folder (``b`` starts empty)."""

    def __init__(self, hosts: Hosts, root: Path) -> None:
        self.storage = MemoryStorage()
        self.root = root
        self.a_dir = root / "a-plugins"
        self.b_dir = root / "b-plugins"
        sandbox = SandboxPolicy(timeout=10.0)
        self.a = cast(
            "PluginHost", hosts(storage=self.storage, plugins_dir=self.a_dir, sandbox=sandbox)
        )
        self.b = cast(
            "PluginHost",
            hosts(
                storage=self.storage,
                plugins_dir=self.b_dir,
                sandbox=sandbox,
                refresh_interval=0,
            ),
        )
        self.install = Installer(root, HEADER)

    def upload(self, plugin_id: str, body: str | None = None) -> bytes:
        """Install, approve and enable (for acme) through host a; the uploaded bytes.

        Both hosts run on this machine, so host b could read a's folder: the record is
        made to name it as seen from another machine (a folder that does not exist here).
        Host a then finds its code in its own plugins folder, host b in the archive.
        """
        if body is None:
            body = widget(plugin_id)
        self.install(self.a, plugin_id, body, permissions=("dashboard_widgets",))
        data = (self.root / f"{plugin_id}.zip").read_bytes()
        key = recorded_artifact(self.a.registry, plugin_id, data)
        elsewhere = f"{OTHER_MACHINE}/{plugin_id}/1.0.0"
        point_at(self.storage, plugin_id, key, package_path=elsewhere)
        return data


@pytest.fixture
def pair(hosts: Hosts, tmp_path: Path) -> Pair:
    return Pair(hosts, tmp_path)


def titles(host: PluginHost) -> list[str]:
    return [widget.title for widget in host.hook.dashboard_widget(context=ACME)]


def load_failures(host: PluginHost, plugin_id: str) -> list[Any]:
    return [f for f in host.failures(plugin_id) if f.hook == "load"]


# -- the archive is kept at install ----------------------------------------------------------


def test_install_keeps_the_uploaded_bytes_under_their_sha256(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is told the archive's key, and the store holds exactly the uploaded bytes."""
    told: list[str | None] = []
    install = pair.a.registry.install

    def spy(*args: Any, **kwargs: Any) -> Any:
        told.append(kwargs.get("artifact"))
        assert pair.a.registry.artifacts.get(kwargs["artifact"]) is not None  # kept before
        return install(*args, **kwargs)

    monkeypatch.setattr(pair.a.registry, "install", spy)
    pair.install(pair.a, "kept", widget("kept"), permissions=("dashboard_widgets",), approve=False)
    data = (pair.root / "kept.zip").read_bytes()
    assert told == [hashlib.sha256(data).hexdigest()]
    assert pair.a.registry.artifacts.get(hashlib.sha256(data).hexdigest()) == data
    assert [info.sha256 for info in pair.a.registry.artifacts.list()] == told


def test_an_install_the_registry_refuses_leaves_no_folder(pair: Pair) -> None:
    """Extracted (into another folder), kept, then refused by the registry: the folder is
    rolled back; the kept archive may stay (content-addressed, harmless)."""
    data = pair.upload("twice")
    elsewhere = pair.root / "c-plugins"
    elsewhere.mkdir()
    with pytest.raises(TransitionError, match="already installed"):
        install_archive(data, elsewhere, pair.a.registry, actor="ops")  # no reinstall=True
    assert files_under(elsewhere) == set()
    assert list(elsewhere.iterdir()) == [elsewhere / ".staging"]
    assert pair.a.registry.artifacts.get(sha256(data)) == data
    assert pair.a.registry.plugin("twice").package_path == f"{OTHER_MACHINE}/twice/1.0.0"


# -- another host materialises it ------------------------------------------------------------


def test_a_host_that_never_saw_the_files_serves_the_plugin_at_its_next_call(pair: Pair) -> None:
    """Host b (empty plugins folder) materialises the archive and runs it; a keeps its own."""
    assert titles(pair.b) == []
    data = pair.upload("where")
    a_folder = pair.a_dir / "where" / "1.0.0"
    assert titles(pair.b) == ["where"]  # its next call: no restart, no shared folder
    b_folder = pair.b_dir / "where" / "1.0.0"
    assert code_hash(b_folder) == code_hash(a_folder) == pair.b.registry.plugin("where").code_hash
    assert files_under(b_folder) == files_under(a_folder) == {"main.py", "manifest.json"}
    assert load_failures(pair.b, "where") == []
    assert titles(pair.a) == ["where"]
    assert sha256(data) == pair.b.registry.plugin("where").artifact


def test_an_artifact_missing_from_the_store_is_a_recorded_load_failure(pair: Pair) -> None:
    """Host b cannot load it: the admin sees why; the plugin stays approved; a still serves."""
    data = pair.upload("lost")
    assert pair.a.registry.artifacts.delete(sha256(data))
    assert titles(pair.b) == []
    [failure] = load_failures(pair.b, "lost")
    assert f"its archive {sha256(data)} is missing from the artifact store" in failure.message
    record = pair.b.registry.plugin("lost")
    assert record.status is PluginStatus.APPROVED
    shown = pair.b.registry.load_failure(record)
    assert shown is not None
    assert shown.message == failure.message
    assert pair.b.suspensions("lost") == []
    assert files_under(pair.b_dir / "lost") == set()
    assert titles(pair.a) == ["lost"]


def test_a_corrupt_artifact_is_refused_and_nothing_extracted_stays(pair: Pair) -> None:
    """Bytes changed in the store under the same key: refused (IntegrityError naming it)."""
    data = pair.upload("rotten")
    key = sha256(data)
    # The store's own table, written behind its back: same key, other bytes (a valid ZIP even).
    forged = hostile_zip("rotten", {"extra.py": "print('not reviewed')\n"})
    table = pair.storage._artifacts
    table[key] = (forged, table[key][1])
    assert titles(pair.b) == []
    [failure] = load_failures(pair.b, "rotten")
    assert failure.exc_type == "IntegrityError"
    assert f"artifact {key}" in failure.message
    assert pair.b.registry.plugin("rotten").status is PluginStatus.APPROVED
    assert files_under(pair.b_dir / "rotten") == set()
    assert files_under(pair.b_dir / ".staging") == set()
    assert titles(pair.a) == ["rotten"]


@pytest.mark.parametrize(
    ("member", "rule"),
    [
        ("../../escaped.py", "path-traversal"),
        ("/tmp/escaped-absolute.py", "absolute-path"),  # noqa: S108 - a name inside a ZIP
        ("__pycache__/main.cpython-312.pyc", "bytecode"),
    ],
)
def test_a_hostile_archive_smuggled_into_the_store_is_refused_by_the_upload_rules(
    pair: Pair, member: str, rule: str
) -> None:
    """Under its correct hash, with the record pointing at it: the extraction rules still apply."""
    pair.upload("smuggled")
    hostile = hostile_zip("smuggled", {member: "print('escaped')\n"})
    key = sha256(hostile)
    pair.a.registry.artifacts.put(key, hostile)
    point_at(pair.storage, "smuggled", key)
    before = {p for p in files_under(pair.root) if not p.startswith("b-plugins/")}
    assert titles(pair.b) == []
    [failure] = load_failures(pair.b, "smuggled")
    assert failure.exc_type == "ArchiveError"
    assert f"[{rule}]" in failure.message
    after = {p for p in files_under(pair.root) if not p.startswith("b-plugins/")}
    assert after == before  # nothing written outside b's plugins folder
    assert not Path("/tmp/escaped-absolute.py").exists()  # noqa: S108 - checked, never written
    assert files_under(pair.b_dir / "smuggled") == set()
    assert files_under(pair.b_dir / ".staging") == set()
    assert pair.b.registry.plugin("smuggled").status is PluginStatus.APPROVED


def test_an_archive_of_another_plugin_under_a_correct_hash_is_refused(pair: Pair) -> None:
    """A record pointed at another plugin's real archive: refused before anything is moved."""
    pair.upload("victim")
    other = pair.upload("other")
    point_at(pair.storage, "victim", sha256(other))
    assert titles(pair.b) == ["other"]
    [failure] = load_failures(pair.b, "victim")
    assert "holds other 1.0.0, not victim 1.0.0" in failure.message
    assert files_under(pair.b_dir / "victim") == set()
    assert files_under(pair.b_dir / "other" / "1.0.0") == {"main.py", "manifest.json"}


def test_an_archive_whose_code_is_not_the_recorded_code_is_refused(pair: Pair) -> None:
    """Same id and version, other code (the record's hash is the reviewed code's): refused."""
    pair.upload("swapped")
    forged = hostile_zip("swapped", {})
    key = sha256(forged)
    pair.a.registry.artifacts.put(key, forged)
    point_at(pair.storage, "swapped", key)
    assert titles(pair.b) == []
    [failure] = load_failures(pair.b, "swapped")
    assert failure.exc_type == "IntegrityError"
    assert files_under(pair.b_dir / "swapped") == set()
    assert files_under(pair.b_dir / ".staging") == set()


def test_a_stale_local_copy_is_replaced_from_the_archive(pair: Pair) -> None:
    """A folder of this version left from another install (other code) is not run: replaced."""
    data = pair.upload("stale")
    stale = pair.b_dir / "stale" / "1.0.0"
    stale.mkdir(parents=True)
    (stale / "main.py").write_text(HEADER + "    pass\n")
    (stale / "manifest.json").write_text("{}")
    assert titles(pair.b) == ["stale"]
    assert code_hash(stale) == pair.b.registry.plugin("stale").code_hash
    assert sha256(data) == pair.b.registry.plugin("stale").artifact


def test_a_materialised_folder_changed_under_a_running_host_is_tampering(pair: Pair) -> None:
    """As on the installing host: the restarted worker's check refuses it, and suspends it."""
    pair.upload("victim", MARKED)
    [widget] = pair.b.hook.dashboard_widget(context=ACME)
    assert widget.title == "original"
    main = pair.b_dir / "victim" / "1.0.0" / "main.py"
    main.write_text(main.read_text().replace('"original"', '"tampered"'))
    kill(int(widget.html))
    for _ in range(3):  # the crash is seen, then a new worker checks the code before its import
        assert "tampered" not in titles(pair.b)
    loads = load_failures(pair.b, "victim")
    assert [f.exc_type for f in loads] == ["IntegrityError"]
    assert "changed since it was installed" in loads[0].message
    assert pair.b.registry.plugin("victim").status is PluginStatus.SUSPENDED


def kill(pid: int) -> None:
    """Kill a worker and wait until it is dead (a zombie until the zygote reaps it, or gone)."""
    os.kill(pid, signal.SIGKILL)
    for _ in range(1000):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)


# -- local_code itself: concurrency and refusals ---------------------------------------------


class DictArtifacts:
    """The smallest ArtifactStore: a dict (copied into each forked process)."""

    def __init__(self, items: dict[str, bytes]) -> None:
        self.items = items

    def put(self, sha256: str, data: bytes) -> None:
        self.items.setdefault(sha256, data)

    def get(self, sha256: str) -> bytes | None:
        return self.items.get(sha256)

    def delete(self, sha256: str) -> bool:
        return self.items.pop(sha256, None) is not None

    def list(self) -> list[Any]:
        return []


def _materialise_in_child(
    args: tuple[Path, dict[str, bytes], str, str, Any, Any],
) -> None:
    from services_ai_plugins._sources._materialise import local_code

    plugins, items, key, expected, barrier, results = args
    barrier.wait(timeout=60)
    try:
        folder = local_code(
            "racer",
            "1.0.0",
            expected,
            None,
            key,
            plugins_dir=plugins,
            artifacts=DictArtifacts(items),
        )
        results.put(("ok", str(folder), code_hash(folder)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}", ""))


def test_processes_materialising_at_once_all_end_with_the_good_folder(
    tmp_path: Path, write_plugin: Callable[..., Path]
) -> None:
    """Four processes, one empty plugins folder, released together: each gets a verified folder."""
    from services_ai_plugins import pack_plugin

    folder = write_plugin(
        {
            "id": "racer",
            "name": "Racer",
            "version": "1.0.0",
            "entry_point": "main.py",
            "plugin_class": "Plugin",
        },
        {
            "main.py": HEADER + "    pass\n",
            **{f"data/{i}.txt": hashlib.sha256(bytes([i])).hexdigest() * 64 for i in range(40)},
        },
    )
    data = pack_plugin(folder, tmp_path / "racer.zip").path.read_bytes()
    expected = code_hash(folder)
    plugins = tmp_path / "plugins"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    results = context.Queue()
    items = {sha256(data): data}
    children = [
        context.Process(
            target=_materialise_in_child,
            args=((plugins, items, sha256(data), expected, barrier, results),),
        )
        for _ in range(4)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert outcomes == [("ok", str(plugins / "racer" / "1.0.0"), expected)] * 4
    assert code_hash(plugins / "racer" / "1.0.0") == expected
    assert files_under(plugins / ".staging") == set()


def test_no_archive_and_no_folder_here_is_refused_by_name(tmp_path: Path) -> None:
    from services_ai_plugins._sources._materialise import local_code

    with pytest.raises(PackageError, match="its folder is missing here and it has no archive"):
        local_code(
            "gone",
            "1.0.0",
            "0" * 64,
            str(tmp_path / "elsewhere"),
            None,
            plugins_dir=tmp_path / "plugins",
            artifacts=DictArtifacts({}),
        )


def test_the_installing_hosts_folder_is_used_and_checked_by_the_caller(tmp_path: Path) -> None:
    """package_path that exists here is returned as is: its hash is the caller's check
    (a changed folder there is tampering, never quietly replaced)."""
    from services_ai_plugins._sources._materialise import local_code

    given = tmp_path / "installed"
    given.mkdir()
    (given / "main.py").write_text("changed\n")
    found = local_code(
        "mine",
        "1.0.0",
        "0" * 64,
        str(given),
        "f" * 64,
        plugins_dir=tmp_path / "plugins",
        artifacts=DictArtifacts({}),
    )
    assert found == given
    assert not (tmp_path / "plugins").exists()


@pytest.mark.parametrize(
    ("plugin_id", "version"), [("..", "1.0.0"), ("x", "../../y"), ("a/b", "1")]
)
def test_a_forged_id_or_version_never_names_a_folder_outside(
    tmp_path: Path, plugin_id: str, version: str
) -> None:
    from services_ai_plugins._sources._materialise import local_code

    with pytest.raises(PackageError, match="is not a plugin id and version"):
        local_code(
            plugin_id,
            version,
            "0" * 64,
            None,
            "f" * 64,
            plugins_dir=tmp_path / "plugins",
            artifacts=DictArtifacts({}),
        )


def test_a_corrupt_archive_raises_integrity_error_naming_it(tmp_path: Path) -> None:
    from services_ai_plugins._sources._materialise import local_code

    key = "a" * 64
    with pytest.raises(IntegrityError) as caught:
        local_code(
            "x",
            "1.0.0",
            "0" * 64,
            None,
            key,
            plugins_dir=tmp_path / "plugins",
            artifacts=DictArtifacts({key: b"not those bytes"}),
        )
    assert f"artifact {key}" in str(caught.value)


def test_an_archive_changed_in_the_sqlite_table_is_refused(hosts: Hosts, tmp_path: Path) -> None:
    """The same, with the bytes rewritten in SQLite's own table (another host on the same file)."""
    database = tmp_path / "registry.db"
    sandbox = SandboxPolicy(timeout=10.0)
    first = cast(
        "PluginHost",
        hosts(storage=SQLiteStorage(database), plugins_dir=tmp_path / "a", sandbox=sandbox),
    )
    Installer(tmp_path, HEADER)(
        first, "rotten", widget("rotten"), permissions=("dashboard_widgets",)
    )
    key = recorded_artifact(first.registry, "rotten", (tmp_path / "rotten.zip").read_bytes())
    point_at(first.registry.storage, "rotten", key, package_path=f"{OTHER_MACHINE}/rotten/1.0.0")
    with sqlite3.connect(database) as connection:
        forged = hostile_zip("rotten", {})
        connection.execute(
            "UPDATE plugin_artifacts SET data = ?, size = ? WHERE sha256 = ?",
            (forged, len(forged), key),
        )
    connection.close()
    second = cast(
        "PluginHost",
        hosts(storage=SQLiteStorage(database), plugins_dir=tmp_path / "b", sandbox=sandbox),
    )
    assert titles(second) == []
    [failure] = load_failures(second, "rotten")
    assert failure.exc_type == "IntegrityError"
    assert f"artifact {key}" in failure.message
    assert second.registry.plugin("rotten").status is PluginStatus.APPROVED
    assert files_under(tmp_path / "b" / "rotten") == set()
    assert titles(first) == ["rotten"]


def test_an_archive_larger_than_its_limits_allow_is_refused_before_anything_is_kept(
    pair: Pair,
) -> None:
    """Padding a small archive (junk before it, which ZIP readers skip) is not kept in storage."""
    pair.install(pair.a, "padded", widget("padded"), approve=False)
    pair.a.registry.uninstall("padded", actor="ops")
    data = (pair.root / "padded.zip").read_bytes()
    limits = ArchiveLimits(max_total_bytes=10_000, max_members=4)
    elsewhere = pair.root / "c-plugins"
    elsewhere.mkdir()
    kept = {info.sha256 for info in pair.a.registry.artifacts.list()}
    with pytest.raises(ArchiveError, match=r"the archive is over \d+ bytes.*\[too-large\]"):
        install_archive(
            b"\0" * 1_000_000 + data, elsewhere, pair.a.registry, actor="ops", limits=limits
        )
    assert {info.sha256 for info in pair.a.registry.artifacts.list()} == kept
    assert files_under(elsewhere) == set()
    install_archive(data, elsewhere, pair.a.registry, actor="ops", limits=limits)
