#!/usr/bin/env bash
# Installs everything (apt and pip) and runs the whole test suite: lint, then pytest
# (unit, property, fuzz-harness, real-client and network-namespace tests). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -ra "$@"
