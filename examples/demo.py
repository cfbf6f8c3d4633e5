"""The services-ai-plugins demo, which is now the ``services-ai-plugins demo`` command.

This script stays so that ``python examples/demo.py`` (and ``nox -s demo``) still
runs it; ``bash scripts/demo.sh`` does the same in a fresh virtualenv. Options
are passed on (``--keep DIR``).
"""

from __future__ import annotations

import sys

from services_ai_plugins._cli._main import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
