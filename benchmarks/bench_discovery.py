"""Question "discovery": finding and loading entry-point plugins in a fresh process.

200 installed distributions, 20 of which publish a plugin in the
``services_ai.plugins`` group (built once in the temporary folder). SDK: a new
interpreter imports pluggy and ``discover_entry_points()``, then registers every
plugin found with a pluggy manager. Baseline: a new interpreter runs pluggy's
own ``PluginManager.load_setuptools_entrypoints`` on the same distributions.
Each side is a whole process, start-up and imports included: what a web worker
pays when it boots. Target: at most 1.0x.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Final

from _harness import Contender, compare

DISTRIBUTIONS: Final = 200
PLUGINS_EVERY: Final = 10  # one distribution in ten publishes a plugin

SDK = """
import sys; sys.path.insert(0, {site!r})
import pluggy
from services_ai_plugins._sources._discovery import discover_entry_points
manager = pluggy.PluginManager("services_ai")
for plugin in discover_entry_points().found:
    manager.register(plugin.plugin, name=plugin.plugin_id)
assert len(manager.get_plugins()) == {plugins}
"""

BASELINE = """
import sys; sys.path.insert(0, {site!r})
import pluggy
manager = pluggy.PluginManager("services_ai")
manager.load_setuptools_entrypoints("services_ai.plugins")
assert len(manager.get_plugins()) == {plugins}
"""


def site() -> Path:
    """The shared folder of installed distributions, built on first use."""
    root = Path(tempfile.gettempdir()) / "services-ai-plugins-bench-discovery-v1"
    if root.exists():
        return root
    building = root.with_name(f"{root.name}.building")
    building.mkdir(parents=True, exist_ok=True)
    for number in range(DISTRIBUTIONS):
        name = f"benchdist{number:03d}"
        info = building / f"{name}-1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        if number % PLUGINS_EVERY == 0:
            (info / "entry_points.txt").write_text(
                f"[services_ai.plugins]\nplugin-{number:03d} = {name}:Plugin\n"
            )
            (building / f"{name}.py").write_text(
                "from services_ai_plugins import hookimpl\n\n\n"
                "class Plugin:\n"
                f"    manifest = {{'name': 'Plugin {number}'}}\n\n"
                "    @hookimpl\n"
                "    def lead_created(self, lead, context, api):\n"
                "        return None\n"
            )
        else:
            (info / "entry_points.txt").write_text(f"[console_scripts]\n{name} = {name}:main\n")
    building.rename(root)
    return root


def script(name: str, template: str) -> str:
    """Write one side's program next to the distributions and return its path."""
    folder = site()
    path = folder.with_name(f"{folder.name}-{name}.py")
    path.write_text(template.format(site=str(folder), plugins=DISTRIBUTIONS // PLUGINS_EVERY))
    return str(path)


def compile_sources() -> None:
    """Compile both sides' modules, as ``pip install`` does, so neither compiles while timed.

    (With PYTHONDONTWRITEBYTECODE set, an editable checkout would otherwise be
    compiled from source in every run, while pluggy's installed files are not.)
    """
    import compileall  # noqa: PLC0415

    import services_ai_plugins  # noqa: PLC0415

    for folder in (Path(services_ai_plugins.__file__).parent, site()):
        compileall.compile_dir(folder, quiet=1)


def main() -> None:
    compile_sources()
    compare(
        "discovery",
        sdk=Contender(
            "discover_entry_points + register",
            "fresh process: imports, discovery, manifests, pluggy registration",
            command=[sys.executable, script("sdk", SDK)],
        ),
        baseline=Contender(
            "pluggy load_setuptools_entrypoints",
            "fresh process: pluggy's own entry-point loading",
            command=[sys.executable, script("baseline", BASELINE)],
        ),
    )


if __name__ == "__main__":
    main()
