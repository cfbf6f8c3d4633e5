#!/usr/bin/env bash
# Run the services-ai-plugins demo on a fresh machine: a virtualenv in .venv,
# the SDK installed from this checkout, then `services-ai-plugins demo`, which
# works in a temporary folder (pass --keep DIR to keep it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/services-ai-plugins demo "$@"
