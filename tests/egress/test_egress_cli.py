"""The issue's showcase: a sandboxed plugin calls an allowed local server, end to end,
through ``python -m services_ai_plugins call`` (the private-address rule relaxed by its
environment variable, the one explicit switch the command line has)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from egress_server import serve

from conftest import CliRunner, plugin_folder
from services_ai_plugins import pack_plugin
from services_ai_plugins._egress import ALLOW_PRIVATE_ENV

SOURCE = """\
from services_ai_plugins import hookimpl
from services_ai_plugins.errors import EgressRefused


class Plugin:
    @hookimpl
    def lead_created(self, lead, api):
        reply = api.http_request("POST", "BASE/ok", json={"lead": lead.name})
        try:
            api.http_request("GET", "http://evil.example.org/")
        except EgressRefused as refused:
            elsewhere = refused.reason
        return {"status": reply.status, "answer": reply.json(), "elsewhere": elsewhere}
"""

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _call(cli: CliRunner, *, relaxed: bool) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop(ALLOW_PRIVATE_ENV, None)
    if relaxed:
        env[ALLOW_PRIVATE_ENV] = "1"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "services_ai_plugins", "call", "lead_created"),
            *("--db", str(cli.db), "--plugins-dir", str(cli.plugins), "--tenant", "acme"),
            *("--sample", "--json"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=cli.root,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in run.stderr, run.stderr
    document: dict[str, object] = json.loads(run.stdout)
    return document


def test_a_sandboxed_plugin_calls_an_allowed_local_server_through_the_cli(tmp_path: Path) -> None:
    cli = CliRunner(tmp_path)
    with serve() as (port, seen):
        base = f"http://127.0.0.1:{port}"
        folder = plugin_folder(
            tmp_path,
            "caller",
            SOURCE.replace("BASE", base),
            permissions=("read_leads", "http_requests"),
        )
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["network"] = [base]
        (folder / "manifest.json").write_text(json.dumps(manifest))
        archive = pack_plugin(folder, tmp_path / "caller.zip").path  # uploaded: sandboxed
        for step in (("install", archive), ("approve", "caller"), ("enable", "caller")):
            extra = ("--tenant", "acme") if step[0] == "enable" else ()
            code, _, err = cli(*step, *extra)
            assert code == 0, err
        document = _call(cli, relaxed=True)
        (outcome,) = document["outcomes"]  # type: ignore[misc]
        assert outcome["ok"], outcome
        assert outcome["result"] == {
            "status": 200,
            "answer": {
                "hello": "plugin",
                "host": f"127.0.0.1:{port}",
                "got": '{"lead": "Hank Scorpio"}',
            },
            "elsewhere": "host",
        }
        assert [entry[:2] for entry in seen] == [("POST", "/ok")]
        # Without the switch the same call is refused: 127.0.0.1 is not a public address.
        refused = _call(cli, relaxed=False)
        (outcome,) = refused["outcomes"]  # type: ignore[misc]
        assert not outcome["ok"]
        assert outcome["failure"]["exc_type"] == "EgressRefused"
        assert "non-public address 127.0.0.1" in outcome["failure"]["message"]
        # Raised in the worker (the plugin runs sandboxed), from the host's refusal.
        assert "_sandbox/_worker.py" in outcome["failure"]["traceback"]
        assert len(seen) == 1
