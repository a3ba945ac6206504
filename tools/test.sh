#!/usr/bin/env bash
# The README's second command and CI's (.ci/run): install everything, then format check,
# lint, Python 3.10 compatibility, type check, import rules, generated-docs check and the full
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The train extra too: the training tools are tested (torch==2.13.0, the CPU build).
VEHICLE_AGENT_EXTRAS=dev,fleet,train bash tools/setup.sh
set -x
.venv/bin/ruff format --check .
.venv/bin/ruff check .
# The vehicle runs Python 3.10 (JetPack 6.2) to 3.12 (JetPack 7.2): nothing newer than 3.10 in
# the packages (shims in vehicle_agent/compat.py, firmware_bridge/compat.py; docs/service.md).
.venv/bin/vermin --no-tips --violations -t=3.10- --eval-annotations vehicle_agent firmware_bridge
.venv/bin/mypy
# Who may import whom ([tool.importlinter] in pyproject.toml; docs/ARCHITECTURE.md).
.venv/bin/lint-imports
.venv/bin/python -m tools.gen_docs --check
.venv/bin/python -m tools.check_unit
.venv/bin/python -m pytest "$@"
