"""Question "pack": what does reproducible, validated packing cost over a plain ZIP?

SDK: ``pack_plugin(folder, out)`` -- validate the folder (manifest, entry
module compiled with ``ast``), walk it, write a reproducible archive (sorted
entries, fixed timestamps, normalised modes, deflate level 9) to a temporary
file, rename it into place and hash it. Baseline: the same files written with
``zipfile.ZipFile(out, "w", ZIP_DEFLATED)`` and ``zf.write(path, arcname)`` in
sorted order -- what a hand-rolled packer does.

The plugin folder (a manifest, ``main.py`` and 30 modules of about 4 KiB) is
generated from fixed text in a temporary folder of each process: pyperf's
workers each build their own identical copy, so they never share or race.

Run: ``python benchmarks/bench_pack.py --fast`` (see benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Final

from _harness import Contender, compare
from services_ai_plugins import pack_plugin

MODULES: Final = 30
FUNCTIONS_PER_MODULE: Final = 10
PACKAGE: Final = "order_sync"

MANIFEST: Final[dict[str, object]] = {
    "id": "order-sync",
    "name": "Order Sync",
    "version": "1.4.0",
    "description": "Keeps orders in step between the shop and the accounting system.",
    "author": "Acme Integrations",
    "license": "MIT",
    "entry_point": "main.py",
    "plugin_class": "OrderSync",
    "permissions": ["orders.read", "orders.write", "invoices.write", "http:outbound"],
    "settings": [
        {"name": "api_key", "type": "secret", "required": True},
        {"name": "interval_minutes", "type": "integer", "default": 15, "min": 1, "max": 1440},
        {"name": "mode", "type": "choice", "choices": ["push", "pull", "both"], "default": "both"},
    ],
    "dependencies": ["httpx>=0.27,<1"],
    "requires_api": ">=1.0,<2",
    "x-acme": {"category": "accounting"},
}

MAIN: Final = f'''"""Order Sync: the plugin class registered by the host."""

from __future__ import annotations

from {PACKAGE} import module_00


class OrderSync:
    """Reacts to order events and mirrors them in the accounting system."""

    def order_created(self, order: dict[str, object]) -> str:
        return module_00.handle_00(order)
'''


def module_source(index: int) -> str:
    """The text of module ``index``: plausible Python, varied enough to compress realistically."""
    parts = [
        f'"""Synchronisation step {index:02d} of the order pipeline."""\n\n'
        "from __future__ import annotations\n\n"
        "import logging\n\n"
        "log = logging.getLogger(__name__)\n"
    ]
    for number in range(FUNCTIONS_PER_MODULE):
        token = hashlib.sha256(f"{index}:{number}".encode()).hexdigest()
        parts.append(
            f"\n\ndef handle_{number:02d}(order: dict[str, object]) -> str:\n"
            f'    """Map field group {number} of an order onto ledger {token[:8]}."""\n'
            f'    reference = str(order.get("reference", "{token[8:20]}"))\n'
            f'    amount = float(order.get("amount_{number}", 0)) * {1 + number / 7:.6f}\n'
            f"    if amount > {number * 97 + index}:\n"
            f'        log.info("order %s above threshold on step {index}", reference)\n'
            f'    return f"{{reference}}-{token[20:32]}-{{amount:.2f}}"\n'
        )
    return "".join(parts)


def build_plugin(root: Path) -> list[tuple[Path, str]]:
    """Write the plugin folder under ``root``; return its files as (path, arcname), sorted."""
    package = root / PACKAGE
    package.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(MANIFEST, indent=2) + "\n", encoding="utf-8")
    (root / "main.py").write_text(MAIN, encoding="utf-8")
    (package / "__init__.py").write_text('"""Order Sync internals."""\n', encoding="utf-8")
    for index in range(MODULES):
        (package / f"module_{index:02d}.py").write_text(module_source(index), encoding="utf-8")
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return [(path, path.relative_to(root).as_posix()) for path in files]


def plain_zip(files: list[tuple[Path, str]], out: Path) -> None:
    """The baseline: a plain deflated ZIP of the same files, in the same order."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, arcname in files:
            archive.write(path, arcname)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as temporary:
        work = Path(temporary)
        folder = work / "order-sync"
        files = build_plugin(folder)
        sdk_out = work / "sdk.zip"
        baseline_out = work / "baseline.zip"
        # Fail early, in every process, if the folder no longer packs.
        packed = pack_plugin(folder, sdk_out)
        assert list(packed.files) == [arcname for _, arcname in files], packed.files
        compare(
            "pack",
            sdk=Contender(
                "pack_plugin",
                "validate, reproducible ZIP at deflate 9, atomic rename, SHA-256",
                lambda: pack_plugin(folder, sdk_out),
            ),
            baseline=Contender(
                "zipfile.ZipFile.write",
                "plain ZIP_DEFLATED at the default level, same files and order",
                lambda: plain_zip(files, baseline_out),
            ),
        )


if __name__ == "__main__":
    main()
