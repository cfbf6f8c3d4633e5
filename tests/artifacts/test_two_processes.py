"""The issue's demonstration: two hosts in two processes, each with its own empty plugins
folder, on one registry (PostgreSQL, or one SQLite file). A ZIP installed and approved
through the first is served by the second at its next call, from the archive kept in the
registry: no folder is shared (the first's is out of the second's reach once installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from artifact_kit import HEADER, widget

from conftest import plugin_folder
from services_ai_plugins import pack_plugin
from services_ai_plugins.storage import SQLiteStorage, Storage
from services_ai_plugins.tooling import code_hash

HOST = Path(__file__).with_name("_host_process.py")
SRC = Path(__file__).resolve().parents[2] / "src"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

#: Where the processes' registry is: the database argument and the schema ("-" for SQLite).
Target = tuple[str, str]


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        yield str(tmp_path / "registry.db"), "-"
        return
    psycopg = pytest.importorskip("psycopg")
    url: str = request.getfixturevalue("postgres_url")
    schema = f"artifacts_{uuid.uuid4().hex[:16]}"
    yield url, schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(schema)
            )
        )


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HOST.parent.parent)])}


def open_storage(target: Target) -> Storage:
    database, schema = target
    if schema == "-":
        return SQLiteStorage(database)
    from services_ai_plugins.storage import PostgresStorage

    return PostgresStorage(database, schema=schema, max_size=1)


def test_a_zip_installed_through_one_process_is_served_by_another(
    target: Target, tmp_path: Path
) -> None:
    """The second host, running before the install, serves the plugin at its next call, and its
    own plugins folder then holds the code, verified against the hash recorded at install."""
    database, schema = target
    second_dir = tmp_path / "second-plugins"
    folder = plugin_folder(
        tmp_path,
        "shared",
        HEADER + textwrap.indent(widget("shared"), "    "),
        permissions=("dashboard_widgets",),
    )
    archive = pack_plugin(folder, tmp_path / "shared.zip").path
    log = tmp_path / "second.log"
    with (
        log.open("w") as errors,
        subprocess.Popen(
            [sys.executable, str(HOST), database, schema, str(second_dir), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=environment(),
        ) as second,
    ):
        try:
            served(second, log, archive, folder, target)
        finally:
            if second.stdin is not None and not second.stdin.closed:
                second.stdin.write("quit\n")
                second.stdin.close()
            try:
                second.wait(timeout=60)
            finally:
                if second.poll() is None:
                    second.kill()
                    second.wait(timeout=30)


def served(
    second: subprocess.Popen[str], log: Path, archive: Path, folder: Path, target: Target
) -> None:
    database, schema = target
    tmp_path = log.parent
    first_dir, second_dir = tmp_path / "first-plugins", tmp_path / "second-plugins"

    def call() -> list[list[str]]:
        assert second.stdin is not None
        assert second.stdout is not None
        second.stdin.write("call\n")
        second.stdin.flush()
        line = second.stdout.readline()
        assert line, log.read_text()
        return json.loads(line)  # type: ignore[no-any-return]

    assert call() == []  # running, nothing installed yet
    first = subprocess.run(
        [sys.executable, str(HOST), database, schema, str(first_dir), "install", str(archive)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=300,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    [[title, first_pid]] = json.loads(first.stdout.splitlines()[-1])
    assert title == "shared"
    # The first machine's folder is out of the second's reach: only the archive is shared.
    first_dir.rename(tmp_path / "unreachable")
    [[title, second_pid]] = call()
    assert title == "shared"
    assert second_pid != first_pid
    materialised = second_dir / "shared" / "1.0.0"
    assert code_hash(materialised) == code_hash(folder)
    storage = open_storage(target)
    try:
        record = storage.get_plugin("shared")
        assert record is not None
        assert record.code_hash == code_hash(folder)
        assert storage.get_artifact(str(record.artifact)) == archive.read_bytes()
        assert [f for f in storage.failures("shared") if f.hook == "load"] == []
    finally:
        storage.close()
