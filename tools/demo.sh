#!/usr/bin/env bash
# The README's first command: install everything, then replay the bundled street footage
# through the daemon with simulated hardware and print where the report went.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/vehicle-agent simulate --report "${1:-simulate-report}" --speed max
