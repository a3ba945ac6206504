#!/usr/bin/env bash
# The README's second command and CI's (.ci/run): install everything, then format check,
# lint, type check, generated-docs check and the full test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The train extra too: the training tools are tested (torch==2.13.0, the CPU build).
VEHICLE_AGENT_EXTRAS=dev,train bash tools/setup.sh
set -x
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m tools.gen_docs --check
.venv/bin/python -m tools.check_unit
.venv/bin/python -m pytest "$@"
