"""Question "install_archive": what does a safe, checked extraction cost over ``extractall``?

SDK: ``extract_plugin(archive, plugins_dir)`` -- check the central directory
(names, member kinds, flags, declared sizes and ratios), stream every member
into a staging folder with bounded reads, CRC and code hash computed while
writing, parse the manifest, compile the entry module, and rename the folder
into ``<plugins_dir>/<id>/<version>/``. The registry write is not timed.
Baseline: ``zipfile.ZipFile(archive).extractall(dest)`` of the same archive.

The plugin (``manifest.json``, ``main.py`` and 499 modules of 1-4 KiB) is
generated from fixed text and packed once with ``pack_plugin`` in a temporary
folder of each process. Each call extracts into a new folder and removes it
again inside the timed function, on both sides, so the cost is symmetric and
pyperf's many loops never fill the disk.

Run: ``python benchmarks/bench_install.py --fast`` (see benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Final

from _harness import Contender, compare
from services_ai_plugins import pack_plugin
from services_ai_plugins._sources._archive import code_hash, extract_plugin

MODULES: Final = 499
PACKAGE: Final = "lead_router"

MANIFEST: Final[dict[str, object]] = {
    "id": "lead-router",
    "name": "Lead Router",
    "version": "2.3.1",
    "description": "Routes incoming leads to the right sales team.",
    "entry_point": "main.py",
    "plugin_class": "LeadRouter",
    "permissions": ["read_leads", "send_notifications"],
}

MAIN: Final = f'''"""Lead Router: the plugin class registered by the host."""

from {PACKAGE} import module_000


class LeadRouter:
    """Sends each new lead to a team."""

    def lead_created(self, lead: dict[str, object]) -> str:
        return module_000.route_0(lead)
'''


def module_source(index: int) -> str:
    """Module ``index``: plausible Python of 1 to 4 KiB, varied so it compresses realistically."""
    functions = 3 + index % 10
    parts = [f'"""Routing rules, part {index:03d}."""\n\nfrom __future__ import annotations\n']
    for number in range(functions):
        token = hashlib.sha256(f"{index}:{number}".encode()).hexdigest()
        parts.append(
            f"\n\ndef route_{number}(lead: dict[str, object]) -> str:\n"
            f'    """Match rule {number} against team {token[:8]}."""\n'
            f'    region = str(lead.get("region", "{token[8:16]}"))\n'
            f'    score = float(lead.get("score_{number}", 0)) * {1 + number / 9:.5f}\n'
            f"    if score > {number * 31 + index}:\n"
            f'        return f"{{region}}-{token[16:28]}"\n'
            f'    return "{token[28:40]}"\n'
        )
    return "".join(parts)


def build_plugin(root: Path) -> None:
    """Write the plugin folder under ``root``."""
    package = root / PACKAGE
    package.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(MANIFEST, indent=2) + "\n", encoding="utf-8")
    (root / "main.py").write_text(MAIN, encoding="utf-8")
    for index in range(MODULES):
        (package / f"module_{index:03d}.py").write_text(module_source(index), encoding="utf-8")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-install-") as temporary:
        work = Path(temporary)
        folder = work / "lead-router"
        build_plugin(folder)
        archive = pack_plugin(folder, work / "lead-router.zip").path
        sdk_root = work / "sdk"
        baseline_root = work / "baseline"
        sdk_root.mkdir()
        baseline_root.mkdir()

        def sdk() -> None:
            plugins = sdk_root / uuid.uuid4().hex
            plugins.mkdir()
            extract_plugin(archive, plugins)
            shutil.rmtree(plugins)

        def baseline() -> None:
            dest = baseline_root / uuid.uuid4().hex
            dest.mkdir()
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(dest)
            shutil.rmtree(dest)

        # Fail early, in every process, if the archive no longer installs faithfully.
        check = work / "check"
        check.mkdir()
        extracted = extract_plugin(archive, check)
        assert extracted.code_hash == code_hash(folder), extracted
        assert len(list(extracted.path.rglob("*.py"))) == MODULES + 1
        compare(
            "install_archive",
            sdk=Contender(
                "extract_plugin",
                "central-directory checks, bounded streaming, CRC + code hash, atomic rename",
                sdk,
            ),
            baseline=Contender(
                "zipfile.ZipFile.extractall",
                "plain extraction of the same archive into a new folder",
                baseline,
            ),
        )


if __name__ == "__main__":
    main()
