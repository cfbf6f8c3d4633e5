"""A throwaway PostgreSQL cluster on 127.0.0.1, for the PostgreSQL tests (standard library only).

Used by ``.ci/run`` (``python3 tests/pg_cluster.py check`` says whether the
server programs are installed, ``start DIR`` prints the URL of a new cluster,
``stop DIR`` stops and removes it) and by the ``postgres_url``
fixture of tests/conftest.py when ``SERVICES_AI_PLUGINS_PG_URL`` is not set.
The server binaries are looked up on ``PATH`` and under
``/usr/lib/postgresql/<version>/bin``; PostgreSQL refuses to run as root, so a
root process runs them as the ``postgres`` user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["ClusterError", "find_binaries", "start", "stop"]

#: The environment variable naming a server to use instead of a throwaway cluster.
URL_ENV = "SERVICES_AI_PLUGINS_PG_URL"


class ClusterError(RuntimeError):
    """No cluster could be started here (no binaries, no user to run them as, ...)."""


def find_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``.

    :raises ClusterError: when PostgreSQL's server programs are not installed.
    """
    found = shutil.which("pg_ctl")
    if found is not None and shutil.which("initdb") is not None:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
    )
    for folder in reversed(versions):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise ClusterError("PostgreSQL's server programs (initdb, pg_ctl) are not installed")


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterError("running as root, and there is no runuser to run PostgreSQL as")
    return [runuser, "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(folder: str | os.PathLike[str]) -> str:
    """Create and start a cluster in ``folder`` (created if needed); return its URL.

    :raises ClusterError: when it cannot be started (the message says why).
    """
    binaries = find_binaries()
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        try:
            shutil.chown(root, user="postgres")
        except (LookupError, OSError) as error:
            raise ClusterError(f"cannot hand {root} to the postgres user: {error}") from error
    data = root / "data"
    port = _free_port()
    steps = [
        [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
        [
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200",
            "-l",
            str(root / "server.log"),
            "-w",
            "start",
        ],
    ]
    for step in steps:
        done = subprocess.run(_as_owner(step), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ClusterError(f"{Path(step[0]).name} failed: {done.stderr.strip()}\n{tail}")
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def stop(folder: str | os.PathLike[str]) -> None:
    """Stop the cluster in ``folder`` (if it runs) and remove the folder."""
    root = Path(folder)
    data = root / "data"
    if (data / "postmaster.pid").exists():
        pg_ctl = str(find_binaries() / "pg_ctl")
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            check=False,
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["check"]:  # are the server programs installed?
        try:
            find_binaries()
        except ClusterError as error:
            sys.exit(f"pg_cluster: {error}")
        sys.exit(0)
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: pg_cluster.py check | start FOLDER | stop FOLDER")
    try:
        if sys.argv[1] == "start":
            print(start(sys.argv[2]))  # noqa: T201 - the URL is this command's output
        else:
            stop(sys.argv[2])
    except ClusterError as error:
        sys.exit(f"pg_cluster: {error}")
