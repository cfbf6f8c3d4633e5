"""Question "materialise": what does a host that did not install a plugin pay for its code?

SDK: ``local_code(...)`` on a host with an empty plugins folder, for a plugin whose
archive is kept in the registry's storage (``StorageArtifacts`` over ``SQLiteStorage``):
read the archive from the database, check its SHA-256, extract it under every upload rule
(central-directory checks, bounded streaming, CRC and code hash while writing, the
manifest's id and version checked against the record's), compare the code hash with the
recorded one, and rename the folder into place. Baseline: read the same archive from a
file and ``zipfile.ZipFile(...).extractall(dest)``, which is what copying code to another
machine by hand takes (without any check).

The plugin is ``bench_install``'s (``manifest.json``, ``main.py`` and 499 modules of
1-4 KiB), packed once in a temporary folder of each process. Each call materialises into a
new folder and removes it again inside the timed function, on both sides.

Run: ``python benchmarks/bench_materialise.py --fast`` (see benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path

from _harness import Contender, compare
from bench_install import MANIFEST, build_plugin
from services_ai_plugins import SQLiteStorage, pack_plugin
from services_ai_plugins._sources._archive import code_hash
from services_ai_plugins._sources._materialise import local_code
from services_ai_plugins.storage import StorageArtifacts


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-materialise-") as temporary:
        work = Path(temporary)
        folder = work / "lead-router"
        build_plugin(folder)
        archive = pack_plugin(folder, work / "lead-router.zip").path
        data = archive.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        expected = code_hash(folder)
        storage = SQLiteStorage(work / "registry.db")
        artifacts = StorageArtifacts(storage)
        artifacts.put(sha256, data)
        sdk_root = work / "sdk"
        baseline_root = work / "baseline"
        sdk_root.mkdir()
        baseline_root.mkdir()

        def materialise() -> Path:
            plugins = sdk_root / uuid.uuid4().hex
            plugins.mkdir()
            return local_code(
                str(MANIFEST["id"]),
                str(MANIFEST["version"]),
                expected,
                None,
                sha256,
                plugins_dir=plugins,
                artifacts=artifacts,
            )

        def sdk() -> None:
            shutil.rmtree(materialise().parent.parent)

        def baseline() -> None:
            dest = baseline_root / uuid.uuid4().hex
            dest.mkdir()
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(dest)
            shutil.rmtree(dest)

        # Fail early, in every process, if materialising no longer gives the code installed.
        placed = materialise()
        assert code_hash(placed) == expected, placed
        assert len(list(placed.rglob("*.py"))) == len(list(folder.rglob("*.py")))
        shutil.rmtree(placed.parent.parent)
        try:
            compare(
                "materialise",
                sdk=Contender(
                    "local_code from StorageArtifacts(SQLiteStorage)",
                    "archive read from the database, SHA-256, checked extraction, code hash",
                    sdk,
                ),
                baseline=Contender(
                    "zipfile.ZipFile.extractall",
                    "plain extraction of the same archive from a file into a new folder",
                    baseline,
                ),
            )
        finally:
            storage.close()


if __name__ == "__main__":
    main()
